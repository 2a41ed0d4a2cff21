"""Paired comparisons across saved `i2x finetune` runs of one model (docs/log/RESULTS-2026-12.md, first section).

Seeds reproduce across invocations, so arms of different runs can be paired by seed. Run after

    i2x finetune runs/demo --repeats 10
    i2x finetune runs/demo --seed 10 --repeats 30 --schedules full+full,curated+full \
        --controls random-pair,other-prototype --out runs/demo/finetune-confirm
    i2x finetune runs/demo --prototype 23 --seed 10 --repeats 30 --schedules curated+full \
        --controls random-matched --out runs/demo/finetune-p23-matched

    .venv/bin/python benchmarks/finetune_pooled.py [RUN_DIR]
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import stats

from i2x.analysis.finetune import FinetuneResult


def ab(arm: dict) -> dict:
    """seed -> a↔b errors of one arm."""
    return {r["seed"]: r["ab"] for r in arm["repeats"]}


def paired(x: dict, y: dict, what: str) -> None:
    s = sorted(set(x) & set(y))
    d = np.array([x[k] - y[k] for k in s])
    sign = stats.binomtest(int((d < 0).sum()), int((d != 0).sum())).pvalue
    print(
        f"{what} ({len(s)} seeds): {d.mean():+.2f} ± {d.std(ddof=1):.2f}, fewer / more / tied "
        f"{(d < 0).sum()} / {(d > 0).sum()} / {(d == 0).sum()}, sign p = {sign:.2g}, "
        f"t p = {stats.ttest_1samp(d, 0).pvalue:.2g}"
    )


def main() -> None:
    run = sys.argv[1] if len(sys.argv) > 1 else "runs/demo"
    a, b = FinetuneResult.load(f"{run}/finetune"), FinetuneResult.load(f"{run}/finetune-confirm")
    p23 = FinetuneResult.load(f"{run}/finetune-p23-matched")

    def ctl(r, name):
        return ab(r.controls[name]["schedules"]["curated+full"])

    cf = {**ab(a.schedules["curated+full"]), **ab(b.schedules["curated+full"])}
    ff = {**ab(a.schedules["full+full"]), **ab(b.schedules["full+full"])}
    paired(cf, ff, "pooled: curated→full − full→full")
    paired(cf, {**ctl(a, "random-pair"), **ctl(b, "random-pair")}, "pooled: I2X − random-pair")
    paired(cf, {**ctl(a, "other-prototype"), **ctl(b, "other-prototype")}, "pooled: I2X − other-prototype")
    ff_b = ab(b.schedules["full+full"])
    paired(ctl(p23, "random-matched"), ff_b, "random samples in P-23's class mix, then full − full→full")
    paired(ab(p23.schedules["curated+full"]), ff_b, "P-23's samples, then full − full→full")


if __name__ == "__main__":
    main()
