"""Recording overhead: training with vs without the recorder, at the paper's ratio.

Paper setting (spec stage 1): explanation set E = 10 % of the training set, a checkpoint every
40 iterations of batch 128 (plus iteration 0 and the final model). The overhead of recording
is compared with its floor: checkpoints x |E| x (time of one saliency pass per image), the
saliency time being measured on its own on E right after.

    .venv/bin/python benchmarks/bench_record.py                 # smallcnn, 5,120 images, 2 epochs
    .venv/bin/python benchmarks/bench_record.py --quick         # 1,280 images, 1 epoch (smoke run)
    .venv/bin/python benchmarks/bench_record.py --model resnet50 --n 2560 --epochs 1

Data: random 28x28x1 images with random labels (timing does not depend on the content, and
nothing is downloaded). Runs with and without the recorder alternate ``--repeats`` times on
the same seed; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from i2x.config import RunConfig
from i2x.nn.models import build_model
from i2x.nn.record import Recorder
from i2x.nn.saliency import saliency_and_confidence
from i2x.nn.train import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smallcnn", choices=["smallcnn", "resnet50"])
    ap.add_argument("--n", type=int, default=5120, help="training set size")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--every", type=int, default=40, help="iterations between checkpoints")
    ap.add_argument("--fraction", type=float, default=0.10, help="|E| / training set")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.epochs, a.repeats = 1280, 1, 1
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; command: {' '.join(sys.argv)}", flush=True)

    g = torch.Generator().manual_seed(0)
    images = torch.randn(a.n, 1, 28, 28, generator=g)  # (N, 1, 28, 28)
    labels = torch.randint(0, 10, (a.n,), generator=g)  # (N,)
    e_idx = np.sort(np.random.default_rng(42).choice(a.n, int(round(a.fraction * a.n)), replace=False))
    cfg = RunConfig(epochs=a.epochs, batch_size=a.batch, augment=False, seed=0)

    def run(record: bool) -> tuple[float, int]:
        torch.manual_seed(0)
        model = build_model(a.model)
        rec = Recorder(images[e_idx], labels[e_idx].numpy(), every=a.every, batch_size=a.batch) if record else None
        t0 = time.perf_counter()
        train(model, images, labels, cfg, recorder=rec, progress=False)
        return time.perf_counter() - t0, (len(rec.memory) if rec else 0)

    # warm-up (allocator, oneDNN primitives): a few untimed iterations of both kinds
    warm = RunConfig(epochs=1, batch_size=a.batch, augment=False, seed=0)
    train(
        build_model(a.model),
        images[: 2 * a.batch],
        labels[: 2 * a.batch],
        warm,
        recorder=Recorder(images[: a.batch], labels[: a.batch].numpy(), every=1, batch_size=a.batch),
        progress=False,
    )

    plain, recorded, ckpts = [], [], 0
    for r in range(a.repeats):
        for record in (False, True) if r % 2 == 0 else (True, False):  # alternate the order
            s, c = run(record)
            (recorded if record else plain).append(s)
            ckpts = max(ckpts, c)
            print(f"repeat {r + 1}: {'with' if record else 'without'} recording {s:.1f} s", flush=True)

    # floor: one saliency + confidence pass over E, per checkpoint (same model shape, eval mode)
    torch.manual_seed(0)
    model = build_model(a.model)
    x, y = images[e_idx], labels[e_idx].numpy()
    saliency_and_confidence(model, x[: a.batch], y[: a.batch], None, "gradcam", a.batch, None)  # warm-up
    per_pass = []
    for _ in range(max(3, a.repeats)):
        t0 = time.perf_counter()
        saliency_and_confidence(model, x, y, None, "gradcam", a.batch, None)
        per_pass.append(time.perf_counter() - t0)
    floor = ckpts * statistics.median(per_pass)
    t_plain, t_rec = statistics.median(plain), statistics.median(recorded)
    overhead = t_rec - t_plain
    iters = a.epochs * -(-a.n // a.batch)
    print()
    print(
        f"{a.model}: {a.n} training images, {a.epochs} epochs = {iters} iterations of batch {a.batch}; "
        f"|E| = {len(e_idx)}; {ckpts} checkpoints (every {a.every} + 0 + final)"
    )
    print(
        "| training without recording | with recording | overhead | floor: checkpoints x |E| x saliency "
        "| overhead / floor |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {t_plain:.1f} s | {t_rec:.1f} s | {overhead:.1f} s ({100 * overhead / t_plain:.1f} %) | "
        f"{ckpts} x {len(e_idx)} x {1e3 * statistics.median(per_pass) / len(e_idx):.2f} ms = {floor:.1f} s | "
        f"{overhead / floor:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
