"""Trust metrics of a finished run (issue 11): how selective and how calibrated its explanation is.

    python benchmarks/trust_metrics.py runs/demo

Prints, for the run's own settings: the class pairs (of all C(C,2)) with a non-empty reliable
list and with a non-empty uncertain list; for each reported (confused) pair, the containment of
its top uncertain prototype in the samples of the pair; the prototypes shared by every class
(and how many of them are background); and the share of the total class-confidence change
that the explained steps cover.
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np

from i2x.analysis.explain import pair_explanation
from i2x.rundir import Run


def metrics(run_dir: str) -> dict:
    r = Run(run_dir)
    ex, lab = r.explanations(), r.explain_set()["labels"]
    ia, dyn = r.arrays("intensity"), r.dynamics()
    contain = ia["contain"].astype(bool)
    present = [c for c in range(len(r.classes)) if (lab == c).any()]
    pairs = list(itertools.combinations(present, 2))
    rel = unc = 0
    for a, b in pairs:
        pe = r.pair_explanation(a, b) if hasattr(r, "pair_explanation") else _before(r, dyn, contain, lab, a, b)
        rel += bool(pe["reliable"])
        unc += bool(pe["uncertain"])
    top = []
    for p in ex["pairs"]:
        if p["uncertain"]:
            k, m = p["uncertain"][0]["prototype"], np.isin(lab, (p["a"], p["b"]))
            top.append({"pair": p["names"], "prototype": k, "contain_in_pair": round(float(contain[m, k].mean()), 3)})
    frac = np.stack([contain[lab == c].mean(0) for c in present])  # (C, K)
    everywhere = [int(k) for k in np.flatnonzero((frac >= 1.0 - 1e-12).all(0))]
    bg = set(ex.get("background", []))
    cd = np.nan_to_num(np.abs(dyn.class_delta))
    covered = float(cd[~dyn.flagged].sum() / cd.sum()) if cd.sum() else 1.0
    return {
        "pairs": len(pairs),
        "pairs_with_reliable": rel,
        "pairs_with_uncertain": unc,
        "top_uncertain_containment": top,
        "shared_by_every_class": everywhere,
        "of_which_background": sorted(bg & set(everywhere)),
        "prototypes_per_sample": float(contain.sum(1).mean()),
        "coverage_of_class_confidence_change": round(covered, 4),
    }


def _before(r, dyn, contain, lab, a, b):  # i2x before issue 11 had no Run.pair_explanation
    return pair_explanation(dyn.W, contain, lab, a, b, r.config.explain)


if __name__ == "__main__":
    print(json.dumps(metrics(sys.argv[1]), indent=2))
