"""The method's numbers on constructed cases (issue 17): multi-step dynamics and explanations
against values computed by hand, and one case per ranking rule where the rule changes the answer
(the uncertain ordering, the Bonferroni threshold, non-significant sign changes, the sign check of
key checkpoints, rho, background prototypes, the pair's confusion counts, the permutation null).

Every expected number below is written out from the formulas of docs/METHOD.md, not taken from
the code under test."""

from __future__ import annotations

import itertools
from dataclasses import asdict

import numpy as np
import pytest

from i2x.analysis.dynamics import (
    Dynamics,
    aggregate_clusters,
    clusters_with_fallback,
    confidence_clusters,
    dynamics,
    permutation_pvalues,
    ridge,
    ridge_batch,
    ridge_penalty,
)
from i2x.analysis.explain import (
    confused_pairs,
    explain,
    key_checkpoints,
    pair_explanation,
    shared_prototypes,
    sign_flips,
    significant_signs,
    specialized_prototypes,
)
from i2x.analysis.finetune import summarize
from i2x.config import ExplainConfig
from i2x.errors import DivergedError, I2XError

# --------------------------------------------------------------------------- dynamics, by hand


def _two_groups(steps):
    """Confidences (T+1, 20, 2) and intensities (T+1, 20, 2) of two groups of 10 samples.

    ``steps``: per step (u, v, x, y): group A's confidence moves by (+u, −u) and its prototype-0
    intensity by x; group B's by (−v, +v) and its prototype-1 intensity by y. Within a group the
    changes are identical, so HDBSCAN finds exactly the two groups."""
    T, n = len(steps), 20
    conf, inten = np.zeros((T + 1, n, 2)), np.zeros((T + 1, n, 2))
    conf[0] = 0.5
    for t, (u, v, x, y) in enumerate(steps):
        conf[t + 1], inten[t + 1] = conf[t], inten[t]
        conf[t + 1, :10] += [u, -u]
        conf[t + 1, 10:] += [-v, v]
        inten[t + 1, :10, 0] += x
        inten[t + 1, 10:, 1] += y
    return conf, inten, np.r_[np.zeros(10, int), np.ones(10, int)]


STEPS = [(0.1, 0.2, 1.0, 2.0), (-0.1, 0.1, 2.0, -1.0), (0.05, -0.15, -0.5, 3.0)]


def _hand_w(u, v, x, y, lam0):
    """Eq. 6-8 for the two groups: P = [[u, −u], [−v, v]], I = diag(x, y) (each a cluster mean);
    λ = lam0 · mean_i ‖ΔI_i‖² / K = lam0 · (x² + y²) / 4; W = (IᵀI + λ)⁻¹ IᵀP is diagonal in I."""
    lam = lam0 * (x * x + y * y) / 4
    return np.array([[x * u, -x * u], [-y * v, y * v]]) / np.array([[x * x + lam], [y * y + lam]]), lam


def test_dynamics_multi_step_equals_hand_computed_w():
    conf, inten, labels = _two_groups(STEPS)
    dyn = dynamics(conf, inten, labels, min_cluster_size=5, lam=2.0)
    assert dyn.n_clusters.tolist() == [2, 2, 2] and not dyn.flagged.any()
    assert dyn.fallback.tolist() == [0, 0, 0]
    for t, (u, v, x, y) in enumerate(STEPS):
        w, lam = _hand_w(u, v, x, y, 2.0)
        # ΔI is against the previous checkpoint: step 1's x is 2, not 1 + 2 = 3 (the change since T0)
        np.testing.assert_allclose(dyn.W[t], w, rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
        assert dyn.lam[t] == pytest.approx(lam)
        # class_delta: mean change of class c's confidence over the class-c samples
        np.testing.assert_allclose(dyn.class_delta[t], [u, v], atol=1e-12)
        lab = dyn.labels[t]
        assert len(set(lab[:10])) == 1 and len(set(lab[10:])) == 1 and lab[0] != lab[10] and (lab >= 0).all()
    # the second step by hand, spelled out: x = 2, y = −1, λ = 2 · 5 / 4 = 2.5
    assert dyn.W[1, 0, 0] == pytest.approx(2 * -0.1 / (4 + 2.5))
    assert dyn.W[1, 1, 1] == pytest.approx(-1 * 0.1 / (1 + 2.5))
    assert dyn.W[1, 0, 1] == pytest.approx(-dyn.W[1, 0, 0]) and dyn.W[1, 1, 0] == pytest.approx(-dyn.W[1, 1, 1])
    assert dyn.W[1, 0, 1] != 0 and dyn.W[2, 1, 0] != 0


def test_dynamics_absolute_lambda_and_tau_by_hand():
    conf, inten, labels = _two_groups(STEPS)
    # absolute λ = 0.5: W = x u / (x² + 0.5)
    dyn = dynamics(conf, inten, labels, min_cluster_size=5, lam=0.5, lam_scale="absolute")
    for t, (u, v, x, y) in enumerate(STEPS):
        assert dyn.W[t, 0, 0] == pytest.approx(x * u / (x * x + 0.5))
        assert dyn.W[t, 1, 1] == pytest.approx(y * v / (y * y + 0.5))
        assert dyn.lam[t] == 0.5
    # τ (relative to each cluster's largest |ΔI_m[k]|): group A's prototype 1 also moves by 0.3 per step
    inten2 = inten.copy()
    inten2[1:, :10, 1] += np.cumsum([0.3, 0.3, 0.3])[:, None]
    for tau, kept in ((0.55, True), (0.65, False)):
        dyn = dynamics(conf, inten2, labels, min_cluster_size=5, lam=0.5, lam_scale="absolute", tau=tau)
        # steps 0 and 1: A's ΔI = (1.0, 0.3), (2.0, 0.3): 0.3 < τ · 1.0 is zeroed, W as without it
        assert dyn.W[0, 0, 0] == pytest.approx(1.0 * 0.1 / (1.0 + 0.5))
        assert dyn.W[1, 0, 0] == pytest.approx(2.0 * -0.1 / (4.0 + 0.5))
        # step 2: A's ΔI = (−0.5, 0.3): 0.3 ≥ 0.55 · 0.5 kept, < 0.65 · 0.5 zeroed; B's ΔI = (0, 3)
        I = np.array([[-0.5, 0.3 if kept else 0.0], [0.0, 3.0]])
        P = np.array([[0.05, -0.05], [0.15, -0.15]])
        np.testing.assert_allclose(dyn.W[2], np.linalg.solve(I.T @ I + 0.5 * np.eye(2), I.T @ P), rtol=1e-9)


def test_dynamics_steps_are_independent_of_earlier_steps():
    """Changing what happened before checkpoint t leaves W of steps ≥ t unchanged (ΔI, Δp of one step)."""
    conf, inten, labels = _two_groups(STEPS)
    a = dynamics(conf, inten, labels, min_cluster_size=5)
    inten2, conf2 = inten.copy(), conf.copy()
    inten2[0] -= 7.0  # only checkpoint 0 moves: step 0 changes, steps 1 and 2 do not
    conf2[0] -= 0.01
    b = dynamics(conf2, inten2, labels, min_cluster_size=5)
    np.testing.assert_allclose(b.W[1:], a.W[1:], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.class_delta[1:], a.class_delta[1:], atol=1e-15)
    assert not np.allclose(b.W[0], a.W[0])


def test_class_delta_uses_each_class_own_samples_and_nan_when_absent():
    conf = np.zeros((2, 4, 3))
    conf[1] = [[0.3, 0.1, 0.0], [0.1, 0.5, 0.0], [0.2, 0.9, 0.0], [0.4, 0.0, 0.0]]
    inten = np.zeros((2, 4, 2))
    d = dynamics(conf, inten, np.array([0, 1, 0, 0]), min_cluster_size=2)
    assert d.class_delta[0, 0] == pytest.approx((0.3 + 0.2 + 0.4) / 3)
    assert d.class_delta[0, 1] == pytest.approx(0.5)  # sample 1 only, not 0.375 over all samples
    assert np.isnan(d.class_delta[0, 2])
    assert np.isnan(dynamics(conf, inten, None, min_cluster_size=2).class_delta).all()


def test_ridge_penalty_relative_is_mean_energy_per_prototype():
    di = np.array([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]])  # ‖ΔI_i‖² = 5, 9, 0 -> mean 14/3, / K=2 -> 7/3
    assert ridge_penalty(di, 10.0) == pytest.approx(10 * 7 / 3)
    assert ridge_penalty(di, 10.0, "absolute") == 10.0
    assert ridge_penalty(np.zeros((3, 2)), 10.0) == 1.0
    assert ridge_penalty(np.zeros((0, 2)), 4.0) == 1.0


def test_ridge_batch_both_branches_equal_normal_equations(rng):
    for m, k in ((7, 3), (3, 7), (4, 4)):
        I = rng.normal(size=(2, m, k))
        P = rng.normal(size=(m, 2))
        lam = np.array([0.3, 2.0])
        got = ridge_batch(I, P, lam)
        for b in range(2):
            want = np.linalg.solve(I[b].T @ I[b] + lam[b] * np.eye(k), I[b].T @ P)
            np.testing.assert_allclose(got[b], want, rtol=1e-9, atol=1e-12)
    assert ridge_batch(np.zeros((2, 0, 3)), np.zeros((0, 2)), np.ones(2)).shape == (2, 3, 2)
    with pytest.raises(I2XError, match="lambda"):
        ridge(np.ones((2, 2)), np.ones((2, 2)), 0.0)


def test_aggregate_relative_tau_per_cluster_row():
    dp = np.zeros((4, 1))
    di = np.array([[10.0, 0.6], [10.0, 0.4], [1.0, 0.06], [1.0, 0.04]])
    _, I, ids = aggregate_clusters(dp, di, np.array([0, 0, 1, 1]), tau=0.05)
    # cluster 0: 0.5 ≥ 0.05·10 kept; cluster 1: 0.05 ≥ 0.05·1 kept (the threshold is each row's own)
    np.testing.assert_allclose(I, [[10.0, 0.5], [1.0, 0.05]])
    _, I, _ = aggregate_clusters(dp, di, np.array([0, 0, 1, 1]), tau=0.051)
    np.testing.assert_allclose(I, [[10.0, 0.0], [1.0, 0.0]])
    P, I, ids = aggregate_clusters(dp, di, np.full(4, -1))
    assert P.shape == (0, 1) and I.shape == (0, 2) and len(ids) == 0


def test_clusters_with_fallback_levels():
    # 12 identical points: one cluster at once (level 0)
    lab, lvl = clusters_with_fallback(np.zeros((12, 2)), 10)
    assert lvl == 0 and (lab == 0).all()
    # 3 far-apart points below min_cluster_size: nothing at 10, 5, 2 -> one cluster of all (level 2)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    lab, lvl = clusters_with_fallback(x, 10)
    assert lvl in (1, 2) and (lab >= 0).any()
    # two tight pairs: min_cluster_size 10 finds none, a smaller size does (level 1)
    x = np.array([[0.0, 0.0], [0.0, 0.001], [1.0, 1.0], [1.0, 1.001], [0.5, 5.0]])
    lab, lvl = clusters_with_fallback(x, 10)
    assert lvl == 1 and lab[0] == lab[1] and lab[2] == lab[3] and lab[0] != lab[2]
    assert clusters_with_fallback(np.zeros((0, 2)), 10)[1] == 0
    # without fallback the paper's rule: no cluster -> W_t = 0, flagged
    assert (confidence_clusters(x, 10) == -1).all()
    with pytest.raises(DivergedError):
        confidence_clusters(np.array([[np.nan, 0.0]] * 12), 10)
    with pytest.raises(I2XError, match="delta_p"):
        confidence_clusters(np.zeros(5), 2)


def test_dynamics_roundtrip_and_coverage():
    conf, inten, labels = _two_groups(STEPS)
    d = dynamics(conf, inten, labels, min_cluster_size=5, permutations=9)
    back = Dynamics.from_arrays(d.to_arrays())
    for name in ("W", "labels", "n_clusters", "flagged", "class_delta", "fallback", "lam", "p_W", "p_pair"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))
    assert back.permutations == 9
    cd = np.array([[0.2, -0.2], [0.1, 0.0], [0.3, 0.1]])
    cov = Dynamics(d.W, d.labels, d.n_clusters, np.array([False, True, False]), cd).coverage()
    assert cov == pytest.approx((0.4 + 0.4) / 0.9)


def test_tiny_intensity_changes_give_a_finite_w():
    # was a bug (found by this suite): a ΔI of ~1e-156 made the relative λ subnormal and W NaN
    conf, inten = np.zeros((2, 3, 2)), np.zeros((2, 3, 1))
    inten[0, 0, 0] = 4.5e-156  # λ = 10 · (4.5e-156)² / 3 = 6.9e-311: subnormal
    d = dynamics(conf, inten, np.zeros(3, int), min_cluster_size=3)
    assert np.isfinite(d.W).all()


# --------------------------------------------------------------------------- the permutation null


def _signal_steps(seed=0, n=30, T=2):
    """Two clusters of confidence change; prototype 0's intensity change follows the cluster
    (a real effect), prototype 1's is noise."""
    rng = np.random.default_rng(seed)
    g = np.arange(n) % 2
    conf, inten = np.zeros((T + 1, n, 2)), np.zeros((T + 1, n, 2))
    for t in range(T):
        conf[t + 1] = conf[t] + np.where(g[:, None] == 0, [0.2, -0.2], [-0.2, 0.2])
        inten[t + 1] = inten[t] + rng.normal(0, 0.3, size=(n, 2))
        inten[t + 1, g == 0, 0] += 2.0
    return conf, inten, g


def test_planted_effect_gets_the_smallest_p_and_noise_does_not():
    conf, inten, labels = _signal_steps()
    n_perm = 199
    d = dynamics(conf, inten, labels, min_cluster_size=5, permutations=n_perm, seed=1)
    assert (d.n_clusters == 2).all()
    floor = 1 / (1 + n_perm)
    # the real effect: no permutation of ΔI's rows reaches it (p at its floor) at every step
    assert np.allclose(d.p_W[:, 0, :], floor)
    assert np.allclose(d.p_pair[:, 0, 0, 1], floor) and np.allclose(d.p_pair[:, 0, 1, 0], floor)
    # the noise prototype: some permutations beat it (a p at the floor for noise = observed vs itself)
    assert (d.p_W[:, 1, :] > 5 * floor).any()
    assert ((d.p_W > 0) & (d.p_W <= 1)).all()
    assert np.allclose(d.p_pair[:, :, 0, 0], 1.0)  # d = W[k,a] − W[k,a] = 0: never significant


def _exact_p(dp, di, labels, lam, tau=0.05):
    """Exact two-sided permutation p-values of W (K, C) and of d[k, a, b] = W[k, a] − W[k, b] (K, C, C)
    over all row permutations of ΔI, with the clusters (``labels``) fixed: an independent Eq. 6-8
    (:func:`aggregate_clusters` + normal equations). Ties count (|null| ≥ |observed|)."""

    def fit(x):
        P, I, _ = aggregate_clusters(dp, x, labels, tau)
        return np.linalg.solve(I.T @ I + lam * np.eye(I.shape[1]), I.T @ P)

    w0 = fit(di)
    d0 = w0[:, :, None] - w0[:, None, :]
    cw, cd, total = np.zeros_like(w0), np.zeros_like(d0), 0
    for perm in itertools.permutations(range(len(di))):
        w = fit(di[list(perm)])
        cw += np.abs(w) >= np.abs(w0) * (1 - 1e-9)
        cd += np.abs(w[:, :, None] - w[:, None, :]) >= np.abs(d0) * (1 - 1e-9)
        total += 1
    return cw / total, cd / total


def test_permutation_p_values_match_exact_enumeration_with_clusters_fixed():
    """The null of docs/METHOD.md: ΔI's rows permuted, HDBSCAN labels (a function of Δp) kept. On 6
    samples the exact p over all 720 permutations is the reference (the observed partition itself
    recurs in 36 of them: ties count); p-values computed without permuting (observed vs itself:
    p = 1) or with the clusters redrawn differ from it."""
    rng = np.random.default_rng(3)
    n = 6
    conf = np.zeros((2, n, 2))
    conf[1, :3], conf[1, 3:] = [0.3, -0.3], [-0.1, 0.1]
    inten = np.zeros((2, n, 2))
    inten[1] = rng.normal(size=(n, 2))
    inten[1, :3, 0] += 1.5
    d = dynamics(conf, inten, None, min_cluster_size=3, permutations=4000, seed=0)
    assert d.n_clusters[0] == 2 and d.fallback[0] == 0
    exact_w, exact_d = _exact_p(conf[1] - conf[0], inten[1] - inten[0], d.labels[0], d.lam[0])
    np.testing.assert_allclose(d.p_W[0], exact_w, atol=0.03)
    off = ~np.eye(2, dtype=bool)
    np.testing.assert_allclose(d.p_pair[0][:, off], exact_d[:, off], atol=0.03)
    assert exact_w.min() <= 0.05 and exact_w.max() >= 0.3  # the case separates a real effect from noise


def test_permutation_pvalues_function_on_fixed_clusters():
    from i2x.analysis.dynamics import _Step

    conf, inten, labels = _signal_steps(n=20, T=1)
    dp, di = conf[1] - conf[0], inten[1] - inten[0]
    step = _Step(labels)
    lam = ridge_penalty(di, 10.0)
    P, I, _ = aggregate_clusters(dp, di, labels, 0.05)
    W = np.linalg.solve(I.T @ I + lam * np.eye(2), I.T @ P)
    pw, pd = permutation_pvalues(step, dp, di, W, 0.05, lam, 99, np.random.default_rng(0))
    assert pw.shape == (2, 2) and pd.shape == (2, 2, 2)
    assert np.allclose(pw[0], 0.01) and np.allclose(pd[0, 0, 1], 0.01)
    assert pw[1].max() > 0.05
    # identity "permutations" would give p = 1 everywhere; a real null does not
    assert pw.min() < 1


# --------------------------------------------------------------------------- explain, by hand

A, B = 0, 1


def _pair_case(d_rows, p_rows):
    """W (T, K, 2) with W[:, k, A] = d, W[:, k, B] = 0 and p_pair (T, K, 2, 2) with p on both orders."""
    d, p = np.asarray(d_rows, float).T, np.asarray(p_rows, float).T  # (T, K)
    T, K = d.shape
    W = np.zeros((T, K, 2))
    W[:, :, A] = d
    pp = np.ones((T, K, 2, 2))
    pp[:, :, A, B] = pp[:, :, B, A] = p
    return W, pp


def test_pair_explanation_multi_step_by_hand():
    # T = 5 steps; Bonferroni: a step counts when p × 5 < 0.05, i.e. p < 0.01
    W, pp = _pair_case(
        [
            [0.4, -0.2, 0.3, 0.1, -0.5],  # P-0: +, −, ·, ·, − significant -> uncertain
            [0.3, 0.3, 0.2, 0.3, 0.3],  # P-1: + at every step -> reliable for A
            [0.5, -0.5, 0.5, -0.5, 0.5],  # P-2: flips, but only step 0 is significant -> reliable, not uncertain
            [0.5, -0.1, 0.5, 0.5, 0.5],  # P-3: the opposite sign at p = 0.03 < α unadjusted -> neither
        ],
        [
            [0.001, 0.002, 0.5, 1.0, 0.004],
            [0.001] * 5,
            [0.001, 0.2, 0.3, 0.2, 0.3],
            [0.001, 0.03, 0.001, 0.001, 0.001],
        ],
    )
    contain = np.ones((6, 4), bool)
    labels = np.array([0, 0, 0, 1, 1, 1])
    pe = pair_explanation(W, contain, labels, A, B, ExplainConfig(), p_pair=pp)
    assert [r["prototype"] for r in pe["uncertain"]] == [0]
    u = pe["uncertain"][0]
    assert u["sign_flips"] == 1 and u["sign_changes_at"] == [1]
    assert [(s["step"], s["favours"]) for s in u["significant_steps"]] == [(0, A), (1, B), (4, B)]
    assert [s["p_value"] for s in u["significant_steps"]] == pytest.approx([0.005, 0.01, 0.02])
    assert u["p_value"] == pytest.approx(0.01)  # max(smallest adjusted p for A 0.005, for B 0.01)
    assert u["score"] == pytest.approx(1 * (0.4 + 0.2 + 0.5))  # sign changes × Σ|d| over significant steps
    assert u["total_contribution"] == pytest.approx(0.1)
    assert u["favours"] == B  # Σ d over its significant steps = 0.4 − 0.2 − 0.5 < 0
    assert u["contain_a"] == 1.0 and u["contain_b"] == 1.0
    assert [r["prototype"] for r in pe["reliable"]] == [1, 2]  # both p 0.005; then |Σ d| 1.4 > 0.5
    r1, r2 = pe["reliable"]
    assert r1["p_value"] == pytest.approx(0.005) and r1["score"] == pytest.approx(1.4) and r1["favours"] == A
    assert r1["sign_flips"] == 0 and r1["sign_changes_at"] == [] and len(r1["significant_steps"]) == 5
    assert r2["score"] == pytest.approx(0.5) and [s["step"] for s in r2["significant_steps"]] == [0]


def test_pair_explanation_is_antisymmetric_in_a_and_b():
    W, pp = _pair_case([[0.4, -0.2, 0.3, 0.1, -0.5]], [[0.001, 0.002, 0.5, 1.0, 0.004]])
    contain, labels = np.ones((4, 1), bool), np.array([0, 0, 1, 1])
    ab = pair_explanation(W, contain, labels, A, B, p_pair=pp)
    ba = pair_explanation(W, contain, labels, B, A, p_pair=pp)
    assert (ab["a"], ab["b"], ba["a"], ba["b"]) == (A, B, B, A)
    ua, ub = ab["uncertain"][0], ba["uncertain"][0]
    assert ua["total_contribution"] == pytest.approx(-ub["total_contribution"])
    assert ua["favours"] == ub["favours"] == B
    assert [s["favours"] for s in ua["significant_steps"]] == [s["favours"] for s in ub["significant_steps"]]


def test_uncertain_ranked_by_p_then_sign_changes_times_magnitude():
    # equal p (every step p = 0.001, adjusted 0.004): sign changes × Σ|d| decides
    W, pp = _pair_case(
        [[1.0, -1.0, 1.0, -1.0], [2.5, -2.5, -2.5, -2.5]],  # P-0: 3 changes × 4 = 12; P-1: 1 × 10 = 10
        [[0.001] * 4, [0.001] * 4],
    )
    contain, labels = np.ones((4, 2), bool), np.array([0, 0, 1, 1])
    pe = pair_explanation(W, contain, labels, A, B, p_pair=pp)
    assert [r["prototype"] for r in pe["uncertain"]] == [0, 1]  # Σ|d| alone would put P-1 (10 > 4) first
    assert [r["score"] for r in pe["uncertain"]] == pytest.approx([12.0, 10.0])
    assert [r["sign_flips"] for r in pe["uncertain"]] == [3, 1]
    # p first: P-0 keeps the larger score, but its weaker side now has adjusted p 0.04 > 0.004
    pp[1, 0, A, B] = pp[1, 0, B, A] = pp[3, 0, A, B] = pp[3, 0, B, A] = 0.01
    pe = pair_explanation(W, contain, labels, A, B, p_pair=pp)
    assert [r["prototype"] for r in pe["uncertain"]] == [1, 0]
    assert [r["p_value"] for r in pe["uncertain"]] == pytest.approx([0.004, 0.04])
    # ties in p and score: by prototype index
    W2, pp2 = _pair_case([[1.0, -1.0], [1.0, -1.0]], [[0.001] * 2, [0.001] * 2])
    pe = pair_explanation(W2, contain, labels, A, B, p_pair=pp2)
    assert [r["prototype"] for r in pe["uncertain"]] == [0, 1]
    # top: at most cfg.top rows
    assert len(pair_explanation(W, contain, labels, A, B, ExplainConfig(top=1), p_pair=pp)["uncertain"]) == 1


def test_reliable_ranked_by_p_then_total_contribution():
    W, pp = _pair_case([[0.1, 0.1], [-0.5, -0.5], [0.9, 0.9]], [[0.001, 0.001], [0.001, 0.001], [0.02, 0.001]])
    contain, labels = np.ones((4, 3), bool), np.array([0, 0, 1, 1])
    pe = pair_explanation(W, contain, labels, A, B, p_pair=pp)
    # P-0 and P-1 have adjusted p 0.002; |Σd| 1.0 (P-1) > 0.2 (P-0); P-2's smallest adjusted p is also 0.002
    assert [r["prototype"] for r in pe["reliable"]] == [2, 1, 0]
    assert [r["favours"] for r in pe["reliable"]] == [A, B, A]
    assert [r["p_value"] for r in pe["reliable"]] == pytest.approx([0.002, 0.002, 0.002])


def test_bonferroni_threshold_decides_significance():
    contain, labels = np.ones((4, 1), bool), np.array([0, 0, 1, 1])
    W, _ = _pair_case([[1.0, -1.0, 0.0, 0.0]], [[1.0] * 4])
    for p, alpha, listed in ((0.02, 0.05, False), (0.012, 0.05, True), (0.02, 0.1, True), (0.0125, 0.05, False)):
        pp = np.ones((4, 1, 2, 2))
        pp[:2, 0, A, B] = pp[:2, 0, B, A] = p  # T = 4 steps: adjusted p = 4p
        pe = pair_explanation(W, contain, labels, A, B, ExplainConfig(alpha=alpha), p_pair=pp)
        assert bool(pe["uncertain"]) is listed, (p, alpha)
    sig, adj = significant_signs(np.array([[1.0], [-2.0]]), np.array([[0.01], [0.6]]), 0.05)
    assert sig.tolist() == [[1.0], [0.0]] and adj.tolist() == [[0.02], [1.0]]  # adjusted p capped at 1
    sig, adj = significant_signs(np.array([[1.0], [0.0]]), None, 0.05)  # uncalibrated: every non-zero sign
    assert sig.tolist() == [[1.0], [0.0]] and adj.tolist() == [[0.0], [1.0]]


def test_one_significant_side_with_nonsignificant_sign_changes_is_not_uncertain():
    """The calibrated rule (issue 11): significant steps of *both* signs; d changing sign at steps
    whose p is not significant is noise, not uncertainty."""
    contain, labels = np.ones((4, 2), bool), np.array([0, 0, 1, 1])
    W, pp = _pair_case(
        [[0.5, -0.5, 0.5, -0.5], [-0.2, 0.2, -0.2, 0.2]],
        [[0.001, 0.3, 0.4, 0.5], [0.5, 0.6, 0.7, 0.8]],  # P-0: one significant step; P-1: none
    )
    pe = pair_explanation(W, contain, labels, A, B, p_pair=pp)
    assert pe["uncertain"] == []
    assert [r["prototype"] for r in pe["reliable"]] == [0]
    assert pe["reliable"][0]["sign_flips"] == 0 and pe["reliable"][0]["sign_changes_at"] == []
    # the same W without p-values (uncalibrated): every non-zero sign counts, both are uncertain
    pe = pair_explanation(W, contain, labels, A, B)
    assert sorted(r["prototype"] for r in pe["uncertain"]) == [0, 1] and pe["uncertain"][0]["p_value"] is None
    assert sign_flips(np.array([[1.0], [0.0], [-1.0], [0.0], [-1.0]])).tolist() == [1]


def test_pair_containment_threshold():
    W, pp = _pair_case([[1.0, -1.0], [1.0, 1.0]], [[0.001] * 2, [0.001] * 2])
    labels = np.array([0] * 20 + [1] * 20)
    contain = np.zeros((40, 2), bool)
    contain[:1, :] = True  # 1 of 20 = 5 % of class A ...
    contain[20:21, :] = True  # ... and 5 % of class B
    pe = pair_explanation(W, contain, labels, A, B, p_pair=pp)
    assert [r["prototype"] for r in pe["uncertain"]] == [0] and [r["prototype"] for r in pe["reliable"]] == [1]
    assert pe["uncertain"][0]["contain_a"] == pytest.approx(0.05)
    pe = pair_explanation(W, contain, labels, A, B, ExplainConfig(min_pair_contain=0.06), p_pair=pp)
    assert pe["uncertain"] == [] and pe["reliable"] == []
    only_a = contain.copy()
    only_a[20:21] = False  # in class A only: reliable may be listed (either class), uncertain needs both
    pe = pair_explanation(W, only_a, labels, A, B, p_pair=pp)
    assert pe["uncertain"] == [] and [r["prototype"] for r in pe["reliable"]] == [1]
    with pytest.raises(I2XError, match="class 2"):
        pair_explanation(W, contain, labels, A, 2)


def test_key_checkpoints_need_the_sign_of_the_confidence_change():
    T, K, C = 3, 2, 2
    delta = np.zeros((T, C))
    delta[1, 0], delta[2, 0] = 0.5, -0.4
    W = np.zeros((T, K, C))
    W[1, 0, 0], W[1, 0, 1] = -0.8, 0.3  # class 0 rises at step 1, but P-0's W is negative: not key
    W[2, 1, 0], W[2, 1, 1] = -0.6, 0.2  # class 0 falls at step 2 and P-1 lowers it: key
    kc = key_checkpoints(W, delta, 0, [0, 1], ExplainConfig())
    assert [k["step"] for k in kc] == [2]
    assert kc[0]["delta_confidence"] == pytest.approx(-0.4)
    assert kc[0]["prototypes"] == [
        {"prototype": 1, "weight": -0.6, "p_value": None, "against": [{"class": 1, "weight": 0.2}]}
    ]
    W[1, 0, 0] = 0.8  # same sign as the change: now key, against class 1 only if its W has the opposite sign
    kc = key_checkpoints(W, delta, 0, [0, 1], ExplainConfig())
    assert [k["step"] for k in kc] == [1, 2]
    assert kc[0]["prototypes"][0]["against"] == []  # W[1, 0, 1] = 0.3 has the same sign as 0.8


def test_key_checkpoints_thresholds_and_p_values():
    T, K, C = 4, 3, 3
    delta = np.zeros((T, C))
    delta[:, 0] = [0.05, 0.5, 0.1, 0.09]  # fraction 0.2 of the largest (0.5): steps 1 and 2 (0.1 ≥ 0.1)
    W = np.zeros((T, K, C))
    W[:, 0, 0] = 1.0
    W[:, 1, 0] = [0.5, 0.49, 0.5, 0.5]  # ≥ 0.5 × the step's largest: steps 0, 2, 3 only
    W[:, 2, 0] = 0.3
    W[:, 0, 1], W[:, 0, 2] = -0.2, -0.7  # opposing classes, ordered by |W|
    kc = key_checkpoints(W, delta, 0, [0, 1, 2], ExplainConfig())
    assert [k["step"] for k in kc] == [1, 2]
    assert [p["prototype"] for p in kc[0]["prototypes"]] == [0]
    assert [p["prototype"] for p in kc[1]["prototypes"]] == [0, 1]
    assert [a["class"] for a in kc[1]["prototypes"][0]["against"]] == [2, 1]
    assert len(key_checkpoints(W, delta, 0, [0, 1, 2], ExplainConfig(top=1))[1]["prototypes"][0]["against"]) == 1
    # permutation p ≥ α removes a key prototype; a flagged step is never key
    p_W = np.full((T, K, C), 0.01)
    p_W[2, 0, 0] = 0.05
    kc = key_checkpoints(W, delta, 0, [0, 1, 2], ExplainConfig(), p_W=p_W)
    assert [p["prototype"] for p in kc[1]["prototypes"]] == [1] and kc[1]["prototypes"][0]["p_value"] == 0.01
    kc = key_checkpoints(W, delta, 0, [0, 1, 2], ExplainConfig(), flagged=np.array([False, True, False, False]))
    assert [k["step"] for k in kc] == [2]
    assert key_checkpoints(W, np.zeros((T, C)), 0, [0], ExplainConfig()) == []
    assert key_checkpoints(W, delta, 0, [], ExplainConfig()) == []
    assert key_checkpoints(np.zeros_like(W), delta, 0, [0, 1], ExplainConfig()) == []
    assert [k["step"] for k in key_checkpoints(W, delta, 0, [0], ExplainConfig(key_step_fraction=0.19))] == [1, 2]
    assert [k["step"] for k in key_checkpoints(W, delta, 0, [0], ExplainConfig(key_step_fraction=0.17))] == [1, 2, 3]
    assert [k["step"] for k in key_checkpoints(W, delta, 0, [0], ExplainConfig(key_step_fraction=0.1))] == [0, 1, 2, 3]


def test_shared_needs_every_sample_at_rho_one():
    labels = np.array([0] * 10 + [1] * 2)
    contain = np.zeros((12, 3), bool)
    contain[:10, 0] = True  # 10 of 10
    contain[:9, 1] = True  # 9 of 10: shared only at rho ≤ 0.9
    contain[10:, 2] = True
    assert shared_prototypes(contain, labels, 0) == [0]
    assert shared_prototypes(contain, labels, 0, rho=0.9) == [0, 1]
    assert shared_prototypes(contain, labels, 0, rho=0.91) == [0]
    assert shared_prototypes(contain, labels, 0, background=np.array([True, False, False])) == []
    ex = explain(np.zeros((1, 3, 2)), contain, labels, np.zeros((1, 2)))
    assert ex["classes"]["0"]["shared"] == [0] and ex["classes"]["1"]["shared"] == [2]
    ex = explain(np.zeros((1, 3, 2)), contain, labels, np.zeros((1, 2)), cfg=ExplainConfig(rho=0.9))
    assert ex["classes"]["0"]["shared"] == [0, 1]
    with pytest.raises(I2XError, match="class 5"):
        shared_prototypes(contain, labels, 5)


def test_specialized_groups_exclude_shared_and_background():
    labels = np.zeros(9, int)
    contain = np.zeros((9, 5), bool)
    contain[:, 0] = True  # shared
    contain[:3, 1] = contain[3:6, 2] = contain[6:, 3] = True  # one prototype per sub-group
    contain[6:, 4] = True
    groups = specialized_prototypes(contain, labels, 0, [0], groups=3, rho_group=0.9)
    assert sorted(tuple(g["prototypes"]) for g in groups) == [(1,), (2,), (3, 4)]
    assert [g["size"] for g in groups] == [3, 3, 3]
    bg = np.array([False, False, False, False, True])
    groups = specialized_prototypes(contain, labels, 0, [0], groups=3, background=bg)
    assert sorted(tuple(g["prototypes"]) for g in groups) == [(1,), (2,), (3,)]
    one = specialized_prototypes(contain[:1], labels[:1], 0, [0], groups=3)
    assert len(one) == 1 and one[0]["size"] == 1 and one[0]["prototypes"] == [1]
    same = specialized_prototypes(np.ones((4, 2), bool), np.zeros(4, int), 0, [], groups=3)
    assert len(same) == 1 and same[0]["prototypes"] == [0, 1]


def test_explain_never_lists_background_prototypes():
    T, K, C = 4, 3, 2
    labels = np.array([0] * 5 + [1] * 5)
    contain = np.ones((10, K), bool)
    W = np.zeros((T, K, C))
    W[:, 0, 0] = [1.0, -1.0, 1.0, -1.0]  # P-0 would be uncertain for (0, 1), shared and key
    W[:, 1, 0] = 0.5  # P-1 reliable, shared
    delta = np.zeros((T, C))
    delta[:, 0] = [0.4, -0.4, 0.4, -0.4]
    cm = np.array([[10, 3], [1, 10]])
    bg = np.array([True, False, False])
    kw = dict(confusion=cm, classes=["x", "y"], cfg=ExplainConfig(rho_group=0.9))
    plain = explain(W, contain, labels, delta, **kw)
    assert 0 in plain["classes"]["x"]["shared"] and plain["pairs"][0]["uncertain"][0]["prototype"] == 0
    assert any(p["prototype"] == 0 for kc in plain["classes"]["x"]["key_checkpoints"] for p in kc["prototypes"])
    ex = explain(W, contain, labels, delta, background=bg, **kw)
    assert ex["background"] == [0] and plain["background"] == []
    listed = set()
    for c in ex["classes"].values():
        listed |= set(c["shared"]) | {k for g in c["specialized"] for k in g["prototypes"]}
        listed |= {p["prototype"] for kc in c["key_checkpoints"] for p in kc["prototypes"]}
    for p in ex["pairs"]:
        listed |= {r["prototype"] for r in p["uncertain"] + p["reliable"]}
    assert 0 not in listed and {1, 2} <= listed
    assert [r["prototype"] for r in ex["pairs"][0]["reliable"]] == [1]


def test_explain_pairs_carry_their_own_confusion_counts():
    cm = np.array([[50, 7, 0], [2, 40, 1], [0, 4, 30]])  # 0→1: 7, 1→0: 2, 2→1: 4, 1→2: 1
    labels = np.array([0, 0, 1, 1, 2, 2])
    ex = explain(np.zeros((2, 2, 3)), np.ones((6, 2), bool), labels, np.zeros((2, 3)), confusion=cm)
    got = [(p["a"], p["b"], p["confusions"]["a_to_b"], p["confusions"]["b_to_a"]) for p in ex["pairs"]]
    assert got == [(0, 1, 7, 2), (1, 2, 1, 4)]  # ranked by a↔b: 9, 5; a < b within a pair
    assert [p["names"] for p in ex["pairs"]] == [["0", "1"], ["1", "2"]]
    assert confused_pairs(cm, top=3) == [(0, 1, 9), (1, 2, 5)]
    ex = explain(np.zeros((2, 2, 3)), np.ones((6, 2), bool), labels, np.zeros((2, 3)), pairs=[(2, 1)], confusion=cm)
    assert ex["pairs"][0]["confusions"] == {"a_to_b": 4, "b_to_a": 1}
    ex = explain(np.zeros((2, 2, 3)), np.ones((6, 2), bool), labels, np.zeros((2, 3)), pairs=[(0, 1)])
    assert "confusions" not in ex["pairs"][0]


def test_explain_passes_p_values_and_flagged_steps_through():
    T, K, C = 3, 2, 2
    labels = np.array([0, 0, 1, 1])
    contain = np.ones((4, K), bool)
    W = np.zeros((T, K, C))
    W[:, 0, 0] = [1.0, -1.0, 1.0]
    delta = np.zeros((T, C))
    delta[0, 0] = 0.5
    p_pair = np.full((T, K, C, C), 0.001)
    p_W = np.full((T, K, C), 0.5)  # no W is significant: no key prototype
    flagged = np.array([False, False, True])
    ex = explain(W, contain, labels, delta, flagged=flagged, pairs=[(0, 1)], p_W=p_W, p_pair=p_pair, permutations=99)
    assert ex["flagged_steps"] == [2] and ex["classes"]["0"]["key_checkpoints"] == []
    assert ex["significance"]["calibrated"] and ex["significance"]["permutations"] == 99
    assert "3 steps" in ex["significance"]["test"] and ex["significance"]["alpha"] == 0.05
    assert ex["pairs"][0]["uncertain"][0]["p_value"] == pytest.approx(0.003)
    p_pair[1] = 0.5  # step 1's sign is no longer significant: no sign change left
    ex = explain(W, contain, labels, delta, pairs=[(0, 1)], p_W=p_W, p_pair=p_pair)
    assert ex["pairs"][0]["uncertain"] == []
    ex = explain(W, contain, labels, delta, pairs=[(0, 1)])
    assert not ex["significance"]["calibrated"] and ex["flagged_steps"] == []
    assert ex["classes"]["0"]["key_checkpoints"][0]["step"] == 0
    assert ex["config"] == asdict(ExplainConfig())


# --------------------------------------------------------------------------- fine-tuning statistics


def test_summarize_uses_the_sample_std():
    reps = [
        {"accuracy": 0.9, "a_to_b": 1, "b_to_a": 4, "ab": 5},
        {"accuracy": 0.8, "a_to_b": 2, "b_to_a": 4, "ab": 6},
        {"accuracy": 0.7, "a_to_b": 6, "b_to_a": 4, "ab": 10},
    ]
    s = summarize(reps)
    assert s["accuracy_mean"] == pytest.approx(0.8) and s["accuracy_std"] == pytest.approx(0.1)  # ddof=1
    assert s["a_to_b_mean"] == pytest.approx(3.0) and s["a_to_b_std"] == pytest.approx(np.sqrt(7.0))
    assert s["b_to_a_std"] == 0.0 and s["ab_std"] == pytest.approx(np.sqrt(7.0))
    assert summarize(reps[:1])["accuracy_std"] == 0.0
