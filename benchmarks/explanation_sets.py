"""Agreement of several explanation sets of one trained model (issue 24, docs/log/RESULTS-2026-12.md): runs of the
same seed and settings that differ in ``--explain-seed`` only (identical weights, PCA and centroids);
each run's prototypes are numbered as the first run's by their centroids, then the listed items over
all pairs (uncertain / reliable roles) and all classes (shared / specialized) are counted: pairwise
Jaccard (what ``i2x compare`` prints for two), the items every run lists, and how many runs list each;
``--thresholds``: the pair roles' pairwise Jaccard again at other stability thresholds (no cap on the
number listed per pair), from the same selection frequencies. ``reported_pairs``: issue 24's must-show —
over the first run's three most confused test pairs (one model: the same pairs in every run), the roles
each run lists there, their pairwise Jaccard beside 200 random matchings of the prototypes, and each
pair's top item (its first uncertain prototype, else its first reliable one) in every run, and beside it
the top item if each list were ordered by selection frequency first (a rule measured, not used).
``replication_by_frequency``: of the roles one run finds significant, binned by their selection frequency
there, the share another run selects at its threshold (is the frequency a forecast of replication?).

    .venv/bin/python benchmarks/explanation_sets.py RUN_A RUN_B RUN_C --thresholds 0 0.5 0.6 0.7 0.8 0.9
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import numpy as np

import i2x
from i2x.analysis.compare import role_agreement
from i2x.compare_runs import listed_class_items, listed_roles, same_prototypes


def pairwise(sets: list[set], k: int, draws: int = 200) -> tuple[dict, dict]:
    """Each pair of runs' Jaccard index and its random-matching baseline (the mean over ``draws`` random
    one-to-one matchings of the prototypes): :func:`i2x.analysis.compare.role_agreement`, what ``i2x
    compare`` prints, on items already in the first run's numbers. Jaccard is None when neither lists anything."""
    ident = {i: i for i in range(k)}
    jac, rnd = {}, {}
    for i, j in itertools.combinations(range(len(sets)), 2):
        ag = role_agreement(sets[i], sets[j], ident, k, draws=draws)
        jac[f"{i}-{j}"] = ag["jaccard"]
        rnd[f"{i}-{j}"] = None if ag["random_matching"] is None else ag["random_matching"]["mean"]
    return jac, rnd


def renumbered(items: set[tuple], to_first) -> set[tuple]:
    """The items with their prototype (the last field) in the first run's numbers."""
    return {(*x[:-1], int(to_first[x[-1]])) for x in items}


def top_item(pe: dict, by_frequency: bool = False) -> tuple | None:
    """A pair explanation's first item: its top uncertain prototype, else its top reliable one.
    ``by_frequency``: the alternative rule measured beside it (each list ordered by selection frequency
    first, the run's p-value order kept among equal frequencies; ``pe`` then needs ``top`` lifted)."""
    for kind in ("uncertain", "reliable"):
        rows = sorted(pe[kind], key=lambda x: -x["frequency"]) if by_frequency else pe[kind]
        if rows:
            x = rows[0]
            return (kind if kind == "uncertain" else f"reliable->{x['favours']}", x["prototype"])
    return None


def replication_by_frequency(runs: list, to_first: list, edges=(0, 0.3, 0.6, 0.8, 0.95)) -> list[dict]:
    """Does an item's selection frequency in one set predict that another set lists it? Every role any
    set finds significant on its whole E (threshold 0, no cap), binned by its frequency there; per bin,
    over every ordered pair of sets, the share that the other set selects at its own threshold (no cap on
    the number per pair: on CIFAR-10 a pair has ~30 significant roles, and ``top`` 5 would decide instead)."""
    lifted = [replace(r.config.explain, stability_threshold=0, top=10**6) for r in runs]
    uncapped = [replace(r.config.explain, top=10**6) for r in runs]
    freq = []
    for r, m, cfg in zip(runs, to_first, lifted, strict=True):
        st = r.arrays("stability")["roles"]
        freq.append({(a, b, role, int(m[k])): float(st[a, b, k, 0 if role == "uncertain" else 1])
                     for a, b, role, k in listed_roles(r, cfg)})  # fmt: skip
    listed = [renumbered(listed_roles(r, cfg), m) for r, m, cfg in zip(runs, to_first, uncapped, strict=True)]
    out = []
    for lo, hi in zip(edges, (*edges[1:], 1.01), strict=True):
        hits = [x in listed[j] for i, j in itertools.permutations(range(len(runs)), 2)
                for x, f in freq[i].items() if lo <= f < hi]  # fmt: skip
        out.append({"frequency": [lo, min(hi, 1.0)], "items": len(hits),
                    "listed_by_another": None if not hits else round(float(np.mean(hits)), 4)})  # fmt: skip
    return out


def reported(runs: list, to_first: list) -> dict:
    """Issue 24's must-show over the first run's reported pairs (see the module's text)."""
    pairs = [(min(p["a"], p["b"]), max(p["a"], p["b"])) for p in runs[0].explanations()["pairs"]]
    sets = [
        {x for x in renumbered(listed_roles(r), m) if (x[0], x[1]) in pairs}
        for r, m in zip(runs, to_first, strict=True)
    ]
    tops, by_freq = {}, {}
    for a, b in pairs:
        for out, got in (
            (tops, [top_item(r.pair_explanation(a, b)) for r in runs]),
            (by_freq, [top_item(r.pair_explanation(a, b, replace(r.config.explain, top=10**6)), True) for r in runs]),
        ):
            out[f"{a}-{b}"] = [None if g is None else [g[0], int(m[g[1]])] for g, m in zip(got, to_first, strict=True)]
    jac, rnd = pairwise(sets, runs[0].prototypes().k)
    per_pair = {f"{a}-{b}": [sum(1 for x in s if x[:2] == (a, b)) for s in sets] for a, b in pairs}
    return {"pairs": [list(p) for p in pairs], "listed": [len(s) for s in sets], "listed_per_pair": per_pair,
            "pairwise_jaccard": jac, "random_matching_mean": rnd, "top_item": tops,
            "top_item_if_ordered_by_frequency": by_freq}  # fmt: skip


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
        jac, rnd = pairwise(sets, runs[0].prototypes().k)
        out[what] = {
            "listed": [len(s) for s in sets],
            "pairwise_jaccard": jac,
            "random_matching_mean": rnd,
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
            "pairwise_jaccard": list(pairwise(sets, runs[0].prototypes().k, draws=0)[0].values()),
            "in_every_run": len(set.intersection(*sets)),
            "union": len(set.union(*sets)),
        }
    if curve:
        out["pair_roles_by_threshold"] = curve
    out["reported_pairs"] = reported(runs, to_first)
    out["replication_by_frequency"] = replication_by_frequency(runs, to_first)
    print(json.dumps({"runs": [str(r.path) for r in runs], **out}, indent=1))


if __name__ == "__main__":
    main()
