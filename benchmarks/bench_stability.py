"""The stability stage's cost on a finished run (issue 24): seconds per half-subsample with one worker
and with ``--jobs`` workers, on the run's own records; the two give identical frequencies (checked).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stability.py runs/demo --halves 12 --jobs 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import i2x
from i2x.analysis.stability import selection_frequencies
from i2x.rundir import _dynamics_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--halves", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    run = i2x.Run(a.run)
    c, ia = run.config, run.arrays("intensity")
    conf, labels = run.records()["confidences"], run.explain_set()["labels"]
    res = {}
    for jobs in (None, a.jobs):
        t0 = time.perf_counter()
        res[jobs] = selection_frequencies(
            conf, ia["intensity"], ia["contain"], labels, len(run.classes), _dynamics_settings(c), c.explain,
            present=ia.get("present"), resamples=a.halves, seed=c.seed, background=ia.get("background"), n_jobs=jobs,
        )  # fmt: skip
        print(f"workers {jobs or 1}: {(time.perf_counter() - t0) / a.halves:.2f} s per half ({a.halves} halves)")
    print("identical frequencies:", all(np.array_equal(res[None][k], res[a.jobs][k]) for k in res[None]))


if __name__ == "__main__":
    main()
