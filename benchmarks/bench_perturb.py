"""The cost of ``i2x finetune --intervention perturb``'s perturbation (issue 27): imputing the curated samples'
prototype cells against one fine-tuning epoch on E, on a finished run, side by side (median of ``--repeats``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_perturb.py runs/demo --pair 4 9 --prototype 5

Target: the perturbation <= 10 % of one epoch, for every fill.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import i2x
from i2x.analysis.finetune import perturb_cells
from i2x.config import FILLS
from i2x.nn.finetune import _train_schedule, perturbed_images
from i2x.nn.models import load_model


def _median_seconds(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--pair", nargs=2, required=True)
    ap.add_argument("--prototype", type=int, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    run = i2x.Run(a.run)
    ia, es = run.arrays("intensity"), run.explain_set()
    ca, cb = (run.class_index(c, "pair") for c in a.pair)
    rows, cells = perturb_cells(run.prototypes().assignments, ia["contain"], es["labels"], ca, cb, a.prototype)
    x_e, y_e = torch.from_numpy(es["images"]), torch.from_numpy(es["labels"])
    model = load_model(run.path)
    full = np.arange(len(y_e))
    bs = run.config.batch_size
    epoch = _median_seconds(
        lambda: _train_schedule(model, "full", 0, {"full": (x_e, full)}, y_e, 1e-4, bs, "cpu"), a.repeats
    )
    print(
        f"E = {len(y_e)} images {tuple(x_e.shape[1:])}, batch {bs}; perturbed {len(rows)} samples, {cells.sum()} cells"
    )
    print(f"one fine-tuning epoch on E: {epoch:.3f} s (median of {a.repeats})")
    for fill in FILLS:
        t = _median_seconds(lambda f=fill: perturbed_images(x_e, rows, cells, f, 0), a.repeats)
        print(f"perturbation ({fill}): {t:.4f} s = {100 * t / epoch:.1f} % of an epoch (target <= 10 %)")


if __name__ == "__main__":
    main()
