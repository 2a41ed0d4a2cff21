"""Planted truth for the calibrated explanation (issue 11): a prototype that alternates between two
classes is found uncertain with p < 0.01, a steady one reliable, and a null run (intensity changes
independent of confidence changes) lists at most 5 % of (pair, prototype) combinations.
Background prototypes and selective containment on constructed maps."""

from __future__ import annotations

import itertools

import numpy as np

from i2x.analysis.dynamics import dynamics
from i2x.analysis.explain import explain, pair_explanation
from i2x.analysis.intensity import background_prototypes, containment, intensity, saliency_density
from i2x.config import ExplainConfig

A, B = 0, 1  # the pair


def _planted(seed: int, T: int = 6, n_group: int = 40, K: int = 6, signal: bool = True):
    """Confidences (T+1, N, 3) and intensities (T+1, N, K) of three groups of samples whose
    confidence changes form clear clusters. G1 and G2 move classes A and B in opposite
    directions (which one goes up alternates with the step); G3 does not move. With ``signal``:
    prototype 0 brightens in G1 at every step (so it favours A at even steps and B at odd steps:
    uncertain) and prototype 1 brightens in whichever group raises A (reliable for A).
    Other prototypes (and everything without ``signal``) are noise."""
    rng = np.random.default_rng(seed)
    n = 3 * n_group
    g = np.repeat([0, 1, 2], n_group)
    conf = np.zeros((T + 1, n, 3))
    inten = np.zeros((T + 1, n, K))
    for t in range(T):
        up = 1.0 if t % 2 == 0 else -1.0  # +: G1 raises A; -: G1 raises B
        dp = np.zeros((n, 3))
        dp[g == 0, A], dp[g == 0, B] = 0.2 * up, -0.2 * up
        dp[g == 1, A], dp[g == 1, B] = -0.2 * up, 0.2 * up
        dp += rng.normal(0, 0.005, size=dp.shape)
        di = rng.normal(0, 0.3, size=(n, K))
        if signal:
            di[g == 0, 0] += 1.0
            di[g == (0 if up > 0 else 1), 1] += 1.0
        conf[t + 1] = conf[t] + dp
        inten[t + 1] = inten[t] + di
    labels = np.tile([A, B, 2], n)[:n]  # every group holds samples of every class
    return conf, inten, labels


def _pairs_listed(dyn, labels, K):
    contain = np.ones((len(labels), K), dtype=bool)
    listed = 0
    for a, b in itertools.combinations(range(3), 2):
        pe = pair_explanation(dyn.W, contain, labels, a, b, ExplainConfig(top=K), p_pair=dyn.p_pair)
        listed += len(pe["uncertain"]) + len(pe["reliable"])
    return listed


def test_planted_uncertain_and_reliable_prototypes_are_found_significant():
    conf, inten, labels = _planted(0)
    dyn = dynamics(conf, inten, labels, min_cluster_size=10, permutations=999, seed=0)
    assert (dyn.n_clusters == 3).all()
    contain = np.ones((len(labels), 6), dtype=bool)
    pe = pair_explanation(dyn.W, contain, labels, A, B, p_pair=dyn.p_pair)
    unc, rel = pe["uncertain"], pe["reliable"]
    assert [u["prototype"] for u in unc] == [0]
    assert unc[0]["p_value"] < 0.01 and unc[0]["sign_flips"] == 5
    assert [s["favours"] for s in unc[0]["significant_steps"]] == [A, B, A, B, A, B]
    assert rel and rel[0]["prototype"] == 1 and rel[0]["favours"] == A and rel[0]["p_value"] < 0.01
    assert 0 not in [r["prototype"] for r in rel] and 1 not in [u["prototype"] for u in unc]


def test_null_run_lists_at_most_five_percent():
    # intensity changes independent of confidence changes: any listed prototype is a false positive.
    # Pooled over 20 seeds (one run's 18 combinations are correlated: they share its W).
    listed = uncalibrated = combos = 0
    contain = np.ones((120, 6), dtype=bool)
    for seed in range(20):
        conf, inten, labels = _planted(200 + seed, signal=False)
        dyn = dynamics(conf, inten, labels, min_cluster_size=10, permutations=199, seed=seed)
        listed += _pairs_listed(dyn, labels, 6)
        combos += 18
        for a, b in itertools.combinations(range(3), 2):  # every non-zero sign counts: what i2x did before
            uncalibrated += len(pair_explanation(dyn.W, contain, labels, a, b, ExplainConfig(top=6))["uncertain"])
    assert listed / combos <= 0.05
    assert uncalibrated / combos >= 0.5  # the null is not trivial: uncalibrated signs list most combinations


def test_dynamics_defaults_are_the_run_defaults():
    import inspect

    from i2x.config import RunConfig

    d, c = inspect.signature(dynamics).parameters, RunConfig()
    assert (d["min_cluster_size"].default, d["tau"].default, d["lam"].default) == (
        c.min_cluster_size,
        c.tau,
        c.ridge_lambda,
    )
    assert (d["lam_scale"].default, d["fallback"].default) == (c.ridge_scale, c.cluster_fallback)


def test_background_prototype_is_never_shared_and_containment_is_selective():
    # 10 samples, 2x2 maps; prototype 0 covers the two left cells of every sample with almost no
    # saliency; prototype 1 the top-right cell, prototype 2 the bottom-right cell
    assign = np.tile(np.array([[0, 1], [0, 2]]), (10, 1, 1))
    sal = np.tile(np.array([[0.01, 1.0], [0.02, 0.3]]), (10, 1, 1))
    dens = saliency_density(assign, sal, 3)
    bg = background_prototypes(dens, 0.5)
    assert bg.tolist() == [True, False, False]
    labels = np.array([0] * 5 + [1] * 5)
    # any cell: every prototype in every sample; the background one is still never shared
    contain = containment(assign, 3)
    assert contain.all()
    ex = explain(np.zeros((2, 3, 2)), contain, labels, np.zeros((2, 2)), background=bg)
    assert ex["background"] == [0]
    assert all(0 not in c["shared"] for c in ex["classes"].values())
    assert ex["classes"]["0"]["shared"] == [1, 2]
    # top half of each map's cells: only the prototypes that carry the sample's evidence
    sel = containment(assign, 3, sal, 0.5)
    assert sel[:, 1].all() and sel[:, 2].all() and not sel[:, 0].any()


def test_mean_intensity_does_not_favour_large_prototypes():
    assign = np.array([[[0, 0], [0, 1]]])  # prototype 0: three cells, prototype 1: one
    sal = np.array([[[0.2, 0.2], [0.2, 0.5]]])
    np.testing.assert_allclose(intensity(sal, assign, 2, "sum"), [[0.6, 0.5]])
    np.testing.assert_allclose(intensity(sal, assign, 2, "mean"), [[0.2, 0.5]])
