"""A measured alternative to the per-step rule of the pair roles (issue 24, docs/log/RESULTS-2026-12.md "One test over
all steps"): does pooling a prototype's evidence over the steps make the listed roles replicate across
explanation sets of one model?

The run's rule lists a role from Bonferroni-significant steps (α / T per step). The rule measured here
asks one question per (pair, prototype): over training, does the prototype's intensity change go with the
pair's confidence change in one direction? Statistic: S = Σ_t z_t, z_t = d_t / sd_null(d_t), the pair
contribution of each step standardised by its permutation null; null: the samples' Δp rows permuted
within class, **the same permutation at every step** (so the sum's null keeps the steps' dependence), with
the run's τ and λ and every sample its own row of Eq. 8 (as ``--aggregate samples``, whatever the run's
``aggregate``: a clusters run's HDBSCAN rows are not used); two-sided p = (1 + #{|S_b| ≥ |S|}) / (1 + B).
A "net" role (a, b, net->favoured, k) is listed when p < α and k is not background and is in ≥
``min_pair_contain`` of one class (the reliable rule's eligibility). ``--null-seeds``: the first run again with its
confidence changes permuted within class once per seed (a null run: what the rule lists without a sample-level link).
The runs are explanation sets of one model (``--explain-seed``; prototypes matched to their own centroids) or
runs of other training seeds (``--seed``; matched by the cells they cover, as ``i2x compare``); agreement is
``i2x compare``'s Jaccard after matching, beside 200 random matchings. Printed beside it, from the runs' own
explanations: the run's rule with no resampling and as listed (threshold, ``top``), over all pairs and over the
first run's reported pairs; each reported pair's top pooled item (smallest p, then largest |S|), in the first
run's numbers. 6.2 s for one E = 2,500 run, 999 permutations, 2 threads.

    .venv/bin/python benchmarks/pooled_steps.py RUN_A RUN_B RUN_C [--permutations 999]
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import numpy as np

import i2x
from i2x.analysis.compare import role_agreement
from i2x.analysis.dynamics import _fit_samples, _Step, step_penalty, within_class_permutations
from i2x.compare_runs import listed_roles, prototype_matching


def pooled_pvalues(conf, inten, labels, tau, lam, lam_scale, permutations, seed) -> tuple[np.ndarray, np.ndarray]:
    """S (K, P) and its two-sided p (K, P) for the P = C(C−1)/2 pairs a < b (see the module's text)."""
    T, C = conf.shape[0] - 1, conf.shape[2]
    ia, ib = np.triu_indices(C, 1)
    # one set of within-class draws for every step (the dynamics stage draws anew per step), the observed
    # rows first (row rows[j] in its own place), so that one solve per step gives W and the null's W_b
    perm = within_class_permutations(labels, permutations, np.random.default_rng([seed, 24, 2]))
    draws = _Step(np.arange(len(labels))).draws(np.vstack([np.arange(len(labels)), perm]))
    S = S_null = 0.0
    for t in range(T):
        dp, di = conf[t + 1] - conf[t], inten[t + 1] - inten[t]
        sc, lam_n, _ = step_penalty(di, lam, lam_scale)
        W, Wb = np.split(_fit_samples(dp, di / sc, tau, lam_n, draws), [1])  # Eq. 7-8, the dynamics stage's code
        W = W[0]
        d, db = W[:, ia] - W[:, ib], Wb[:, :, ia] - Wb[:, :, ib]
        sd = db.std(0)
        sd = np.where(sd > 0, sd, np.inf)  # a contribution that never moves adds nothing
        S, S_null = S + d / sd, S_null + db / sd
    p = (1 + (np.abs(S_null) >= np.abs(S) * (1 - 1e-9)).sum(0)) / (1 + permutations)
    return S, p


def net_roles(run: i2x.Run, permutations: int, alpha: float, permute_seed: int | None = None) -> dict[tuple, tuple]:
    """The run's "net" roles {(a, b, "net->favoured", k): (p, -|S|)} under the pooled rule (the value: its rank
    key, smallest p first, then the largest |S|)."""
    cfg = run.config
    conf = run.records(saliency="none")["confidences"].astype(np.float64)
    ia_ = run.arrays("intensity")
    inten, contain, background = ia_["intensity"].astype(np.float64), ia_["contain"], ia_["background"]
    labels = run.explain_set()["labels"]
    if permute_seed is not None:  # a null run: every sample's confidence path given to another of its class
        perm = within_class_permutations(labels, 1, np.random.default_rng(permute_seed))[0]
        conf = conf[:, perm]
    S, p = pooled_pvalues(conf, inten, labels, cfg.tau, cfg.ridge_lambda, cfg.ridge_scale, permutations, cfg.seed)
    C = conf.shape[2]
    frac = np.stack([contain[labels == c].mean(0) for c in range(C)])  # (C, K)
    out = {}
    for j, (a, b) in enumerate(zip(*np.triu_indices(C, 1), strict=True)):
        ok = ((frac[a] >= cfg.explain.min_pair_contain) | (frac[b] >= cfg.explain.min_pair_contain)) & ~background
        for k in np.flatnonzero(ok & (p[:, j] < alpha)):
            out[(int(a), int(b), f"net->{int(a) if S[k, j] > 0 else int(b)}", int(k))] = (p[k, j], -abs(S[k, j]))
    return out


def agreement(sets: list[set], matchings: dict, k: list[int]) -> tuple[list, list]:
    """Pairwise Jaccard of the runs' items after matching (:func:`i2x.analysis.compare.role_agreement`, what
    ``i2x compare`` prints) and its random-matching mean, in the order 0-1, 0-2, 1-2 ..."""
    got = [role_agreement(sets[i], sets[j], matchings[i, j], k[j]) for i, j in matchings]
    return [g["jaccard"] for g in got], [
        None if g["random_matching"] is None else g["random_matching"]["mean"] for g in got
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="runs of one model (--explain-seed) or of several (--seed), one task")
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--null-seeds", type=int, nargs="*", default=[1, 2, 3], help="within-class permuted copies")
    args = ap.parse_args()
    runs = [i2x.Run(r) for r in args.runs]
    matchings = {(i, j): prototype_matching(runs[i], runs[j]) for i, j in itertools.combinations(range(len(runs)), 2)}
    to_first = [{k: k for k in range(runs[0].prototypes().k)}] + [
        matchings[0, j]["b_to_a"] for j in range(1, len(runs))
    ]
    a_to_b = {ij: m["a_to_b"] for ij, m in matchings.items()}
    k = [r.prototypes().k for r in runs]
    pairs = [(min(p["a"], p["b"]), max(p["a"], p["b"])) for p in runs[0].explanations()["pairs"]]
    out = {"runs": [str(r.path) for r in runs], "matched_to_first": [len(m) for m in to_first]}
    pooled = [net_roles(r, args.permutations, args.alpha) for r in runs]
    tops = {}
    for a, b in pairs:
        got = [min(((v, x) for x, v in d.items() if x[:2] == (a, b)), default=None) for d in pooled]
        tops[f"{a}-{b}"] = [
            None if g is None else [g[1][2], m.get(g[1][3])] for g, m in zip(got, to_first, strict=True)
        ]
    out["pooled_top_item"] = tops  # in the first run's numbers (None: a prototype matched to none of them)
    rules = {
        "pooled": [set(d) for d in pooled],
        "per_step_no_resampling": [
            listed_roles(r, replace(r.config.explain, stability_threshold=0, top=10**6)) for r in runs
        ],
        "per_step_listed": [listed_roles(r) for r in runs],
    }
    for name, sets in rules.items():
        rep = [{x for x in s if x[:2] in pairs} for s in sets]
        jac, rnd = agreement(sets, a_to_b, k)
        jac_rep, rnd_rep = agreement(rep, a_to_b, k)
        in_first = [{(*x[:-1], m.get(x[-1])) for x in s} for s, m in zip(sets, to_first, strict=True)]
        out[name] = {
            "listed": [len(s) for s in sets],
            "in_every_run": len({x for x in set.intersection(*in_first) if x[-1] is not None}),
            "pairwise_jaccard": jac,
            "random_matching_mean": rnd,
            "reported_pairs_listed": [len(s) for s in rep],
            "reported_pairs_jaccard": jac_rep,
            "reported_pairs_random_matching_mean": rnd_rep,
        }
    eligible = len(runs[0].classes) * (len(runs[0].classes) - 1) // 2 * runs[0].prototypes().k
    out["pooled_null"] = {
        "tests": eligible,
        "listed": [len(net_roles(runs[0], args.permutations, args.alpha, s)) for s in args.null_seeds],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
