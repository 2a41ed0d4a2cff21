"""Cost of ``i2x faithfulness`` (prototype deletion against random deletion) on a finished run.

    .venv/bin/python benchmarks/bench_faithfulness.py runs/demo                  # default settings
    .venv/bin/python benchmarks/bench_faithfulness.py runs/demo --fill mean --random-draws 5
    .venv/bin/python benchmarks/bench_faithfulness.py runs/demo --threads 1      # on a busy machine

Prints the seconds of each phase (load = run directory + model, masks = deletion and random cell
masks, fill = imputation / blur / mean fill, forward = the model's forward passes, statistics)
and the total, as :func:`i2x.nn.faithfulness.faithfulness` measures them, plus the wall time of
the call. The JSON goes to a temporary file (``--out`` to keep it): the run directory is not
written. Target: <= 60 s on the 2-core development CPU for runs/demo with the default settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from i2x.config import FaithfulnessConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    d = FaithfulnessConfig()
    p.add_argument("--fill", default=d.fill, choices=("noisy-linear", "mean", "blur"))
    p.add_argument("--random-draws", type=int, default=d.random_draws)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads [torch's default]")
    p.add_argument("--out", default=None, help="keep the JSON here [a temporary file]")
    a = p.parse_args()
    import torch

    from i2x.nn.faithfulness import faithfulness

    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp) / "faithfulness.json"
        t0 = time.perf_counter()
        res = faithfulness(
            a.run_dir,
            fill=a.fill,
            random_draws=a.random_draws,
            batch_size=a.batch_size,
            device=a.device,
            out=out,
            progress=False,
        )
        wall = time.perf_counter() - t0
    s = res["summary"]
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"run {a.run_dir}: {res['n_images']} images, {s['deletions']} deletions x (1 + {a.random_draws} draws) = "
        f"{s['deletions'] * (1 + a.random_draws)} perturbed forward passes; fill {a.fill}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| phase | seconds |\n|---|---|")
    for phase, sec in res["timings"].items():
        print(f"| {phase} | {sec:.2f} |")
    print(f"| wall (call) | {wall:.2f} |")
    fwd = s["deletions"] * (1 + a.random_draws) + res["n_images"]
    print(f"forward: {fwd / max(res['timings']['forward'], 1e-9):.0f} images/s")


if __name__ == "__main__":
    main()
