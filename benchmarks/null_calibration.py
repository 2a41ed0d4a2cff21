"""Calibration of the explanation's significance on null data (issue 11).

    .venv/bin/python benchmarks/null_calibration.py            # 60 null runs, 199 permutations per step

Null runs come from ``tests/helpers.py``'s ``planted`` generator with the signal off: per step,
three clear clusters of confidence changes, and intensity changes independent of them. Prints
the share of per-step permutation p-values below 0.01 / 0.05 / 0.1 / 0.5 (uniform = the same
numbers) and the share of (pair, prototype) combinations listed as uncertain or reliable (the
target: at most 5 %), with how many runs list any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import pairs_listed, planted  # noqa: E402

from i2x.analysis.dynamics import dynamics  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--permutations", type=int, default=199)
    a = p.parse_args()
    ps, counts = [], []
    for s in range(a.runs):
        conf, inten, labels = planted(500 + s, signal=False)
        d = dynamics(conf, inten, labels, min_cluster_size=10, permutations=a.permutations, seed=s)
        ps.append(d.p_pair[:, :, 0, 1].ravel())
        counts.append(pairs_listed(d, labels, 6))
    ps, c = np.concatenate(ps), np.array(counts)
    print(f"{a.runs} null runs, {a.permutations} permutations per step, default RunConfig settings")
    print(
        "per-step p below 0.01 / 0.05 / 0.1 / 0.5: "
        + " / ".join(f"{(ps < t).mean():.3f}" for t in (0.01, 0.05, 0.1, 0.5))
    )
    print(
        f"(pair, prototype) combinations listed: {c.sum() / (18 * len(c)):.3f} (target <= 0.05); "
        f"runs listing any: {(c > 0).mean():.2f}"
    )


if __name__ == "__main__":
    main()
