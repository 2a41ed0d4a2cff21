"""Agreement of several explanation sets of one trained model (issue 24, docs/RESULTS.md): runs of the
same seed and settings that differ in ``--explain-seed`` only (identical weights, PCA and centroids);
each run's prototypes are numbered as the first run's by their centroids, then the listed items over
all pairs (uncertain / reliable roles) and all classes (shared / specialized) are counted: pairwise
Jaccard (what ``i2x compare`` prints for two), the items every run lists, and how many runs list each;
``--thresholds``: the pair roles' pairwise Jaccard again at other stability thresholds (no cap on the
number listed per pair), from the same selection frequencies.

    .venv/bin/python benchmarks/explanation_sets.py RUN_A RUN_B RUN_C --thresholds 0 0.5 0.6 0.7 0.8 0.9
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import numpy as np

import i2x
from i2x.compare_runs import listed_class_items, listed_roles, same_prototypes


def jaccard(a: set, b: set) -> float | None:
    """|a & b| / |a | b|; None when neither lists anything (agreement is undefined, not 0)."""
    return round(len(a & b) / len(a | b), 3) if a | b else None


def renumbered(items: set[tuple], to_first) -> set[tuple]:
    """The items with their prototype (the last field) in the first run's numbers."""
    return {(*x[:-1], int(to_first[x[-1]])) for x in items}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories: explanation sets of one trained model")
    ap.add_argument("--thresholds", type=float, nargs="*", default=[], help="stability thresholds for the curve")
    args = ap.parse_args()
    runs = [i2x.Run(r) for r in args.runs]
    to_first = []
    for r in runs:
        a_to_r = same_prototypes(runs[0], r)
        if a_to_r is None:
            raise SystemExit(f"{r.path}: not the same prototypes as {runs[0].path} (another model or prototype fit)")
        to_first.append(np.argsort(a_to_r))  # run r's number -> the first run's (the inverse of the matching)
    out = {}
    for what, lister in (("pair_roles", listed_roles), ("class_lists", listed_class_items)):
        sets = [renumbered(lister(r), m) for r, m in zip(runs, to_first, strict=True)]
        union, every = set.union(*sets), set.intersection(*sets)
        by_count = {k: sum(1 for x in union if sum(x in s for s in sets) == k) for k in range(1, len(sets) + 1)}
        pairwise = {f"{i}-{j}": jaccard(sets[i], sets[j]) for i, j in itertools.combinations(range(len(sets)), 2)}
        out[what] = {
            "listed": [len(s) for s in sets],
            "pairwise_jaccard": pairwise,
            "in_every_run": len(every),
            "union": len(union),
            "runs_listing_an_item": by_count,
        }
    curve = {}
    for t in args.thresholds:
        sets = [renumbered(listed_roles(r, replace(r.config.explain, stability_threshold=t, top=10**6)), m)
                for r, m in zip(runs, to_first, strict=True)]  # fmt: skip
        curve[str(t)] = {
            "listed": [len(s) for s in sets],
            "pairwise_jaccard": [jaccard(sets[i], sets[j]) for i, j in itertools.combinations(range(len(sets)), 2)],
            "in_every_run": len(set.intersection(*sets)),
            "union": len(set.union(*sets)),
        }
    if curve:
        out["pair_roles_by_threshold"] = curve
    print(json.dumps({"runs": [str(r.path) for r in runs], **out}, indent=1))


if __name__ == "__main__":
    main()
