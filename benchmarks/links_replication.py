"""Does the pair-role test list the same items on another sample of images? Disjoint explanation sets of
one model, drawn from one large run (same weights, prototypes and records): for each size E, ``--splits``
times two disjoint class-stratified sets of E images; on each the samples test of the pair roles
(:func:`i2x.analysis.links.run_links`, the run's rules and bootstrap); then the Jaccard index of their
listed items — the top ``top`` per pair in the run's order (the lower end of the effect's interval), each
(pair, role, prototype) with the favoured class for a reliable one, and the same without the role — over
all pairs and over the run's reported pairs (the three most confused test pairs),
beside random matching of the prototypes (:func:`i2x.analysis.compare.role_agreement`, what ``i2x compare``
prints), whether the reported pairs' top items agree, and the seconds per test.

    .venv/bin/python benchmarks/links_replication.py RUN --sizes 250 500 1000 2500 --splits 3
    .venv/bin/python benchmarks/links_replication.py RUN --sizes 2500 --min-effects 0 0.05 0.1 0.15 0.2
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace

import numpy as np

import i2x
from i2x.analysis.compare import role_agreement
from i2x.analysis.explain import confused_pairs
from i2x.analysis.links import Links, run_links


def disjoint_sets(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of ``size`` rows each, every class in its share of E (a class-stratified draw)."""
    rng = np.random.default_rng([seed, 36])
    share = size / len(labels)
    a, b = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(share * len(rows)))
        if 2 * n > len(rows):
            raise SystemExit(f"size {size}: class {c} has {len(rows)} images, too few for two disjoint sets")
        a.append(rows[:n])
        b.append(rows[n : 2 * n])
    return np.sort(np.concatenate(a)), np.sort(np.concatenate(b))


def items(links: Links, top: int) -> tuple[set[tuple], dict]:
    """The listed items (a, b, role, prototype), the top ``top`` of each pair in the run's order
    (:meth:`Links.ranked`), and each pair's top item (its first uncertain prototype, else its first reliable
    one, as the run's summary reads it)."""
    out, first = set(), {}
    for j, (a, b) in enumerate(links.pairs.tolist()):
        ks = links.ranked(j)[:top]
        for k in ks:
            role = "uncertain" if links.role[k, j] == 2 else f"reliable->{a if links.steps[:, k, j].sum() > 0 else b}"
            out.add((a, b, role, k))
        unc = [k for k in ks if links.role[k, j] == 2]
        first[(a, b)] = (unc or ks or [None])[0]
    return out, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2500])
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--min-effects", type=float, nargs="*", default=None, help="default: the run's")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument(
        "--bootstrap", type=int, default=None, help="resamples of each item's interval (default: the run's)"
    )
    a = ap.parse_args()
    r = i2x.Run(a.run)
    rec, ia, y = r.records(), r.arrays("intensity"), r.explain_set()["labels"]
    conf, inten, contain, bg = rec["confidences"], ia["intensity"], ia["contain"], ia.get("background")
    reported = [tuple(p[:2]) for p in confused_pairs(r.arrays("evaluate")["confusion"])]
    K = inten.shape[2]
    ident = {k: k for k in range(K)}
    for size, me, split in itertools.product(a.sizes, a.min_effects or [r.config.explain.min_effect], range(a.splits)):
        cfg = replace(r.config.explain, min_effect=me)
        boot = cfg.bootstrap if a.bootstrap is None else a.bootstrap
        sets, seconds = [], []
        for rows in disjoint_sets(y, size, split):
            t0 = time.perf_counter()
            links = run_links(conf[:, rows], inten[:, rows], contain[rows], y[rows], cfg, lam=r.config.ridge_lambda,
                              permutations=a.permutations, seed=split, background=bg, bootstrap=boot)  # fmt: skip
            seconds.append(time.perf_counter() - t0)
            sets.append(items(links, a.top))
        (s1, t1), (s2, t2) = sets
        on = [{x for x in s if (x[0], x[1]) in reported} for s in (s1, s2)]
        every, rep = role_agreement(s1, s2, ident, K), role_agreement(*on, ident, K)
        plain = [{x[:2] + x[3:] for x in s} for s in (*on, s1, s2)]  # (a, b, prototype): the role left out
        print(json.dumps({
            "E": size, "min_effect": me, "split": split, "listed": [len(s1), len(s2)],
            "jaccard_all": every["jaccard"], "random_all": (every["random_matching"] or {}).get("mean"),
            "jaccard_reported": rep["jaccard"], "random_reported": (rep["random_matching"] or {}).get("mean"),
            "jaccard_without_role": [round(len(p & q) / max(1, len(p | q)), 3) for p, q in (plain[2:], plain[:2])],
            "reported_tops": {f"{p[0]}-{p[1]}": [t1[p], t2[p]] for p in reported},
            "same_top_all_pairs": sum(t1[p] == t2[p] and t1[p] is not None for p in t1),
            "seconds": [round(s, 2) for s in seconds],
        }))  # fmt: skip


if __name__ == "__main__":
    main()
