"""Analysis cost at the paper's MNIST scale (issue 11): stages 3-7 with the permutation p-values on,
and the stability stage (issue 24: stages 4-7 on 50 half-subsamples, in worker processes).

    .venv/bin/python benchmarks/bench_analysis.py                 # E = 6,000, 25 checkpoints, K = 32, 4x4
    .venv/bin/python benchmarks/bench_analysis.py --permutations 0 --n 6000   # without p-values
    .venv/bin/python benchmarks/bench_analysis.py --quick         # E = 600, 99 permutations (smoke run)
    .venv/bin/python benchmarks/bench_analysis.py --n 5000 --steps 16 --pair-tests paper samples  # both, one run

The records are synthetic but shaped like a run's: per step, the confidence changes of E form a
handful of clusters (the classes gaining or losing confidence) plus spread, the saliency maps are
non-negative 4x4 maps, and the assignments come from 32 prototypes. Prints the seconds of each
stage (intensity + containment + background, dynamics = HDBSCAN + ridge + permutations, explain
for the 3 most confused pairs, with the samples test of the pair roles (``--pair-tests samples``, the default)
or without it (``paper``), stability) and the total; targets on the 2-core development CPU:
<= 120 s without the stability stage, <= 300 s with it (``--resamples 0`` leaves it out).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from i2x.analysis.dynamics import dynamics
from i2x.analysis.explain import explain
from i2x.analysis.intensity import background_prototypes, containment, intensity, saliency_density
from i2x.analysis.links import run_links
from i2x.analysis.stability import selection_frequencies
from i2x.config import RunConfig


def synthetic(n: int, steps: int, k: int, c: int, hw: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    conf = np.zeros((steps + 1, n, c))
    logits = rng.normal(0, 0.1, (n, c))
    for t in range(1, steps + 1):  # every sample's own class rises, with a few shared moves
        logits[np.arange(n), labels] += rng.gamma(2.0, 0.3 / t, n)
        logits += rng.normal(0, 0.05, (n, c))
        e = np.exp(logits - logits.max(1, keepdims=True))
        conf[t] = e / e.sum(1, keepdims=True)
    assign = rng.integers(0, k, (n, hw, hw)).astype(np.int32)
    sal = rng.gamma(1.0, 1.0, (steps + 1, n, hw, hw)).astype(np.float32)
    return conf, sal, assign, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--steps", type=int, default=24, help="steps = checkpoints - 1")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hw", type=int, default=4)
    p.add_argument("--permutations", type=int, default=RunConfig().permutations)
    p.add_argument("--resamples", type=int, default=RunConfig().stability_resamples, help="stability halves (0: off)")
    p.add_argument("--pair-tests", nargs="+", choices=("samples", "paper"), default=["samples"])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.n, a.permutations = 600, 99
    cfg = RunConfig()
    conf, sal, assign, labels = synthetic(a.n, a.steps, a.k, a.classes, a.hw)
    t0 = time.perf_counter()
    inten = intensity(sal, assign, a.k, cfg.intensity_reduce)
    contain = containment(assign, a.k, sal[-1], cfg.contain_quantile)
    bg = background_prototypes(saliency_density(assign, sal[-1], a.k), cfg.background_saliency)
    t1 = time.perf_counter()
    dyn = dynamics(
        conf, inten, labels, cfg.min_cluster_size, cfg.tau, cfg.ridge_lambda, permutations=a.permutations, seed=0
    )
    t2b = time.perf_counter()
    cm = np.random.default_rng(1).integers(0, 20, (a.classes, a.classes))
    print(
        f"E = {a.n}, {a.steps + 1} checkpoints, K = {a.k}, {a.hw}x{a.hw} maps, C = {a.classes}, "
        f"{a.permutations} permutations per step; clusters per step {dyn.n_clusters.min()}..{dyn.n_clusters.max()}"
    )
    for test in a.pair_tests:
        rules = replace(cfg.explain, pair_test=test)
        t2 = time.perf_counter()
        links = None
        if test == "samples":
            links = run_links(conf, inten, contain, labels, rules, lam=cfg.ridge_lambda,
                              permutations=a.permutations, seed=0, background=bg)  # fmt: skip
        explain(dyn.W, contain, labels, dyn.class_delta, confusion=cm, flagged=dyn.flagged, p_W=dyn.p_W,
                p_pair=dyn.p_pair, background=bg, permutations=a.permutations, cfg=rules, links=links)  # fmt: skip
        t3 = time.perf_counter()
        if a.resamples:
            settings = dict(min_cluster_size=cfg.min_cluster_size, tau=cfg.tau, lam=cfg.ridge_lambda,
                            permutations=a.permutations)  # fmt: skip
            selection_frequencies(conf, inten, contain, labels, a.classes, settings, rules, resamples=a.resamples,
                                  seed=0, background=bg, n_jobs=-1)  # fmt: skip
        t4 = time.perf_counter()
        print(
            f"pair test {test}: intensity+containment {t1 - t0:.1f} s | dynamics {t2b - t1:.1f} s | "
            f"explain {t3 - t2:.1f} s | stability ({a.resamples} halves) {t4 - t3:.1f} s | "
            f"dynamics + stability {t2b - t1 + t4 - t3:.1f} s | total {t2b - t0 + t4 - t2:.1f} s"
        )


if __name__ == "__main__":
    main()
