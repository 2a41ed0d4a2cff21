"""Recording time per checkpoint under torchrun: 1 process vs N, each recording its shard of E.

Every rank records its contiguous slice of the explanation set with ``i2x.Recorder`` (GradCAM
+ confidences, the ``record`` stage's work at one checkpoint); the time of a checkpoint is the
slowest rank's (a barrier closes it). Random weights and random 28x28x1 inputs; nothing is
downloaded. The script starts torchrun itself for each process count and prints a table:

    .venv/bin/python benchmarks/bench_record_ddp.py                       # ResNet-50, E = 512, 1 vs 2
    .venv/bin/python benchmarks/bench_record_ddp.py --model smallcnn --n 4096 --procs 1 2

The threads are split so that every configuration uses the same cores (``--threads`` in all):
1 process gets all of them, 2 processes half each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def worker(a) -> None:
    import numpy as np
    import torch
    import torch.distributed as tdist

    from i2x.nn.distributed import setup
    from i2x.nn.models import build_model
    from i2x.nn.record import Recorder

    world = setup(torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(a.model, in_channels=1, num_classes=10)
    x = torch.randn(a.n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = np.arange(a.n) % 10
    rows = world.shard(a.n)
    with tempfile.TemporaryDirectory() as d:
        rec = Recorder(x[rows], y[rows], 1, d, None, batch_size=a.batch, sample_index=rows, shard=world.rank)
        rec.record(model, 0)  # warm-up
        times = []
        for it in range(1, a.repeats + 1):
            world.barrier()
            t = time.perf_counter()
            rec.record(model, it)
            world.barrier()
            times.append(time.perf_counter() - t)
    if world.main:
        print(json.dumps({"procs": world.size, "median_s": float(np.median(times)), "times": times}))
    if world.size > 1:
        tdist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--n", type=int, default=512, help="explanation-set size")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads shared by all processes")
    if "I2X_BENCH" in os.environ:  # a torchrun worker
        return worker(argparse.Namespace(**json.loads(os.environ["I2X_BENCH"])))
    a = ap.parse_args()
    print(
        f"{a.model}, E = {a.n} images 28x28x1, record batch {a.batch}, {a.threads} threads in all, "
        f"{a.repeats} checkpoints (median)"
    )
    print("| processes | s per checkpoint | images/s | speed-up |\n|---|---|---|---|")
    base = None
    for p in a.procs:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, a.threads // p))}
        # the worker's settings travel in the environment: torchrun's own parser would take --n for its options
        env["I2X_BENCH"] = json.dumps({"model": a.model, "n": a.n, "batch": a.batch, "repeats": a.repeats})
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={p}", __file__]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        r = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
        base = base or r["median_s"]
        print(f"| {p} | {r['median_s']:.2f} | {a.n / r['median_s']:.0f} | {base / r['median_s']:.2f}x |")


if __name__ == "__main__":
    main()
