"""i2x.analysis.dynamics (Eq. 5-8): HDBSCAN clusters of confidence change, the ridge fit of W per
step, the permutation null, the cluster fallback, defaults, dtypes and errors.

Expected numbers are written out from the formulas of docs/METHOD.md, not taken from the code
under test."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from helpers import equal_arrays
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from i2x import aggregate_clusters, confidence_clusters, dynamics, explain, ridge
from i2x.analysis.dynamics import (
    Dynamics,
    clusters_with_fallback,
    intensity_scale,
    permutation_pvalues,
    ridge_batch,
    ridge_penalty,
    within_class_permutations,
)
from i2x.analysis.explain import significant_signs
from i2x.analysis.intensity import saliency_density
from i2x.errors import DivergedError, I2XError


def test_ridge_equals_normal_equations(rng):
    dI = rng.normal(size=(6, 4))
    dP = rng.normal(size=(6, 3))
    lam = 0.7
    expected = np.linalg.solve(dI.T @ dI + lam * np.eye(4), dI.T @ dP)
    np.testing.assert_allclose(ridge(dI, dP, lam), expected, atol=1e-10)


def test_ridge_with_more_prototypes_than_clusters(rng):
    dI, dP = rng.normal(size=(2, 5)), rng.normal(size=(2, 3))
    expected = np.linalg.solve(dI.T @ dI + np.eye(5), dI.T @ dP)
    np.testing.assert_allclose(ridge(dI, dP, 1.0), expected, atol=1e-10)


def test_noise_is_excluded_from_eq6_eq7():
    dp = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [100.0, 100.0]])
    di = np.array([[1.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1000.0, 1000.0]])
    labels = np.array([0, 0, 1, -1])
    P, I, ids = aggregate_clusters(dp, di, labels, tau=0.0)
    np.testing.assert_array_equal(ids, [0, 1])
    np.testing.assert_allclose(P, [[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(I, [[2.0, 1.0], [0.0, 5.0]])


def test_tau_zeroes_small_intensity_changes():
    dp = np.zeros((2, 2))
    di = np.array([[10.0, 0.4, -0.6], [10.0, 0.4, -0.6]])
    _, I, _ = aggregate_clusters(dp, di, np.array([0, 0]), tau=0.05)  # threshold 0.05 * 10 = 0.5
    np.testing.assert_allclose(I, [[10.0, 0.0, -0.6]])
    _, I, _ = aggregate_clusters(dp, di, np.array([0, 0]), tau=0.5, relative=False)
    np.testing.assert_allclose(I, [[10.0, 0.0, -0.6]])


def test_hdbscan_finds_planted_clusters_and_noise(rng):
    a = rng.normal([0.3, -0.3], 0.01, size=(30, 2))
    b = rng.normal([-0.2, 0.2], 0.01, size=(30, 2))
    x = np.vstack([a, b, [[5.0, 5.0]]])
    lab = confidence_clusters(x, min_cluster_size=10)
    assert lab[-1] == -1
    assert len(set(lab[:30])) == 1 and len(set(lab[30:60])) == 1 and lab[0] != lab[30]


def test_steps_without_clusters_are_flagged_with_zero_w(rng):
    # 4 samples < min_cluster_size: every step is all noise (the paper's rule, fallback off)
    conf = rng.random((3, 4, 2))
    inten = rng.random((3, 4, 5))
    d = dynamics(conf, inten, labels=np.array([0, 1, 0, 1]), min_cluster_size=10, fallback=False)
    assert d.flagged.tolist() == [True, True]
    assert d.n_clusters.tolist() == [0, 0]
    assert not d.W.any() and d.W.shape == (2, 5, 2)
    assert (d.labels == -1).all()
    assert d.coverage() == 0.0


def test_steps_without_clusters_fall_back_instead_of_going_silent(rng):
    conf = rng.random((3, 4, 2))
    inten = rng.random((3, 4, 5))
    d = dynamics(conf, inten, labels=np.array([0, 1, 0, 1]), min_cluster_size=10)
    assert not d.flagged.any() and (d.n_clusters >= 1).all()
    assert set(d.fallback.tolist()) <= {1, 2} and d.W.any(axis=(1, 2)).all()
    assert d.coverage() == 1.0


def test_relative_lambda_makes_w_scale_free(rng):
    conf = rng.random((2, 30, 3))
    inten = rng.random((2, 30, 4))
    a = dynamics(conf, inten, min_cluster_size=5, lam=0.5, permutations=0)
    b = dynamics(conf, 10 * inten, min_cluster_size=5, lam=0.5, permutations=0)
    np.testing.assert_allclose(10 * b.W, a.W, rtol=1e-9, atol=1e-12)  # W follows ΔP / ΔI, not ΔIᵀΔP
    c = dynamics(conf, 10 * inten, min_cluster_size=5, lam=0.5, lam_scale="absolute", permutations=0)
    assert not np.allclose(10 * c.W, a.W)


def test_dynamics_recovers_a_linear_effect(rng):
    # two groups of samples: group 1's prototype-0 intensity rises and so does class 0's confidence
    n = 40
    conf = np.zeros((2, n, 2))
    inten = np.zeros((2, n, 3))
    conf[1, :20] = [0.5, -0.5]
    inten[1, :20, 0] = 1.0
    conf[1, 20:] = [-0.2, 0.2]
    inten[1, 20:, 1] = 1.0
    conf[1] += rng.normal(0, 1e-3, size=(n, 2))
    d = dynamics(conf, inten, labels=np.r_[np.zeros(20, int), np.ones(20, int)], min_cluster_size=5, lam=1e-3)
    assert d.n_clusters[0] == 2 and not d.flagged[0]
    assert d.W[0, 0, 0] == pytest.approx(0.5, abs=1e-2) and d.W[0, 0, 1] == pytest.approx(-0.5, abs=1e-2)
    assert d.W[0, 1, 0] == pytest.approx(-0.2, abs=1e-2)
    assert d.class_delta[0, 0] == pytest.approx(0.5, abs=1e-2)


def test_inputs_are_not_mutated(rng):
    conf = rng.random((3, 12, 2))
    inten = rng.random((3, 12, 4))
    c0, i0 = conf.copy(), inten.copy()
    dynamics(conf, inten, np.arange(12) % 2, min_cluster_size=3)
    np.testing.assert_array_equal(conf, c0)
    np.testing.assert_array_equal(inten, i0)


def test_a_misspelt_ridge_scale_is_an_error_in_both_readers():
    import pytest

    from i2x import I2XError
    from i2x.analysis.dynamics import dynamics, ridge_penalty

    di = np.ones((4, 2))
    with pytest.raises(I2XError, match="'relativ' must be 'relative' or 'absolute'"):
        ridge_penalty(di, 1.0, "relativ")
    with pytest.raises(I2XError, match="lam_scale='absolut': must be one of relative, absolute"):
        dynamics(np.zeros((2, 4, 2)), np.zeros((2, 4, 2)), np.zeros(4, int), lam_scale="absolut")


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
    assert np.isnan(dynamics(conf, inten, None, min_cluster_size=2, permutations=0).class_delta).all()


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
    # the groups are the classes here: an effect of class membership, which only the all-sample null tests
    d = dynamics(conf, inten, labels, min_cluster_size=5, permutations=n_perm, seed=1, null="all")
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
    d = dynamics(conf, inten, None, min_cluster_size=3, permutations=4000, seed=0, null="all")
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
    pw, pd = permutation_pvalues(
        step, dp, di, W, 0.05, lam, within_class_permutations(np.zeros(20), 99, np.random.default_rng(0))
    )
    assert pw.shape == (2, 2) and pd.shape == (2, 2, 2)
    assert np.allclose(pw[0], 0.01) and np.allclose(pd[0, 0, 1], 0.01)
    assert pw[1].max() > 0.05
    # identity "permutations" would give p = 1 everywhere; a real null does not
    assert pw.min() < 1


# --------------------------------------------------------------------------- defaults, boundaries, dtypes and errors


def _groups(n_a=10, n_b=10, T=2):
    """Two groups with identical changes within a group (HDBSCAN finds exactly the groups)."""
    n = n_a + n_b
    conf, inten = np.zeros((T + 1, n, 2)), np.zeros((T + 1, n, 3))
    for t in range(T):
        conf[t + 1], inten[t + 1] = conf[t], inten[t]
        conf[t + 1, :n_a] += [0.1 * (t + 1), -0.1]
        conf[t + 1, n_a:] += [-0.2, 0.2 / (t + 1)]
        inten[t + 1, :n_a, 0] += 1.0 + t
        inten[t + 1, n_a:, 1] += 2.0
        inten[t + 1, :, 2] += 0.3 * (t + 1)
    return conf, inten, np.r_[np.zeros(n_a, int), np.ones(n_b, int)]


def test_dynamics_defaults_are_the_documented_settings():
    conf, inten, labels = _groups()
    a = dynamics(conf, inten, labels)
    b = dynamics(
        conf, inten, labels, 10, 0.05, 10.0, lam_scale="relative", fallback=True, permutations=999, seed=0,
        null="within-class", aggregate="clusters",
    )  # fmt: skip
    for name in ("W", "labels", "n_clusters", "fallback", "lam", "p_W", "p_pair", "p_W_class"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.fallback.tolist() == [0, 0]  # groups of exactly 10: found at the default min_cluster_size
    assert a.permutations == 999 and a.null == "within-class"  # what i2x run computes (RunConfig's defaults)
    c = dynamics(conf, inten, labels, permutations=19)
    d = dynamics(conf, inten, labels, permutations=19, seed=0)
    np.testing.assert_array_equal(c.p_W, d.p_W)
    np.testing.assert_array_equal(c.p_pair, d.p_pair)


def test_dynamics_arrays_have_the_schema_dtypes():
    conf, inten, labels = _groups()
    d = dynamics(conf, inten, labels, permutations=9)
    assert d.labels.dtype == np.int64 and d.n_clusters.dtype == np.int64 and d.fallback.dtype == np.int8
    assert d.p_W.dtype == np.float32 and d.p_pair.dtype == np.float32 and d.flagged.dtype == bool
    assert d.W.dtype == np.float64 and d.lam.dtype == np.float64
    assert dynamics(conf, inten, labels, fallback=False).fallback is None


def test_permutation_p_values_are_seeded_per_step():
    conf, inten, _ = _groups(T=3)
    inten = inten + np.random.default_rng(0).normal(0, 0.5, inten.shape)
    labels = np.arange(inten.shape[1]) % 2  # classes across the groups: within-class permutations matter
    a = dynamics(conf, inten, labels, 5, permutations=49, seed=3)
    b = dynamics(conf, inten, labels, 5, permutations=49, seed=3)
    c = dynamics(conf, inten, labels, 5, permutations=49, seed=4)
    for p in ("p_W", "p_W_class"):  # both nulls: reproducible from the seed, and another seed differs
        np.testing.assert_array_equal(getattr(a, p), getattr(b, p))
        assert not np.array_equal(getattr(a, p), getattr(c, p))


def test_a_prototype_that_never_changes_is_never_significant():
    conf, inten, labels = _groups()
    inten[:, :, 2] = 1.0  # constant intensity: ΔI = 0, W = 0, p = 1 (not "no permutation beats 0")
    d = dynamics(conf, inten, labels, permutations=19)
    assert not d.W[:, 2].any()
    assert (d.p_W[:, 2] == 1.0).all() and (d.p_pair[:, 2] == 1.0).all()


def test_dynamics_progress_wraps_the_steps():
    conf, inten, labels = _groups(T=3)
    seen = []

    def progress(it):
        seen.append(list(it))
        return it

    d = dynamics(conf, inten, labels, progress=progress)
    assert seen == [[0, 1, 2]] and d.W.shape == (3, 3, 2)


def test_dynamics_without_fallback_uses_the_given_min_cluster_size():
    conf, inten, labels = _groups(n_a=4, n_b=4)  # groups of 4: clusters at 3, none at the default 10
    d = dynamics(conf, inten, labels, min_cluster_size=3, fallback=False)
    assert (d.n_clusters == 2).all() and not d.flagged.any()
    d = dynamics(conf, inten, labels, fallback=False)
    assert d.flagged.all() and not d.W.any()


def test_relative_tau_keeps_an_entry_exactly_at_the_threshold():
    conf, inten, labels = _groups(T=1)
    inten[1, :10, 1] = 0.5  # group A: ΔI = (1.0, 0.5, 0.3): 0.5 is exactly 0.5 × max, kept
    kept = dynamics(conf, inten, labels, tau=0.5, lam=0.1, lam_scale="absolute")
    inten[1, :10, 1] = 0.49
    dropped = dynamics(conf, inten, labels, tau=0.5, lam=0.1, lam_scale="absolute")
    # with P-1 kept in group A, its W for class 0 is pulled towards group A's rise
    assert kept.W[0, 1, 0] > dropped.W[0, 1, 0]
    P = np.array([[0.1, -0.1], [-0.2, 0.2]])
    I = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, 0.3]])  # group B's 0.3 < 0.5 · 2 is zeroed
    I[1, 2] = 0.0
    np.testing.assert_allclose(kept.W[0], np.linalg.solve(I.T @ I + 0.1 * np.eye(3), I.T @ P), rtol=1e-9)


def test_one_checkpoint_has_no_step():
    d = dynamics(np.zeros((1, 4, 2)), np.zeros((1, 4, 3)), np.array([0, 1, 0, 1]))
    assert d.W.shape == (0, 3, 2) and d.class_delta.shape == (0, 2) and d.labels.shape == (0, 4)


def test_dynamics_input_errors_name_what_is_wrong():
    with pytest.raises(I2XError, match=r"confidences \(2, 5\) and intensities \(2, 5, 3\) must be"):
        dynamics(np.zeros((2, 5)), np.zeros((2, 5, 3)))
    with pytest.raises(I2XError, match=r"must be \(T\+1, N, C\) and \(T\+1, N, K\)"):
        dynamics(np.zeros((2, 5, 2)), np.zeros((2, 5)))
    with pytest.raises(I2XError, match="must be"):
        dynamics(np.zeros((2, 5, 2)), np.zeros((2, 4, 3)))
    conf, inten = np.zeros((2, 5, 2)), np.zeros((2, 5, 3))
    conf[1, 0, 0] = np.nan
    with pytest.raises(DivergedError, match="^confidences contain NaN or inf: the model diverged; lower the learning"):
        dynamics(conf, inten)
    conf[1, 0, 0], inten[1, 0, 0] = 0.0, np.inf
    with pytest.raises(DivergedError, match="^saliency/intensities contain NaN or inf: the model diverged"):
        dynamics(conf, inten)


def test_fallback_defaults_and_levels_by_hand():
    x = np.zeros((20, 2))
    x[:10], x[10:] = [0.1, -0.1], [-0.2, 0.2]  # two groups of exactly 10: clusters at the default 10
    lab, lvl = clusters_with_fallback(x)
    assert lvl == 0 and (lab[:10] == lab[0]).all() and (lab[10:] == lab[10]).all() and lab[0] != lab[10]
    # a single sample: nothing at any size, one cluster of all (level 2), no endless halving
    lab, lvl = clusters_with_fallback(np.zeros((1, 2)), 10)
    assert lvl == 2 and lab.tolist() == [0]
    # no cluster at 10; the retry at 10 // 2 = 5 with min_samples = 1 (not at 3, not with min_samples = 5)
    pts = np.array(
        [[-0.03, -0.246], [0.148, -4.097], [0.173, 1.673], [-0.735, 1.951], [-1.353, 0.998], [-0.86, 1.626],
         [-4.548, -1.735], [1.473, -0.389], [-3.416, -6.058], [0.608, 2.725], [1.049, -1.301], [1.087, -1.073],
         [-2.664, -3.836], [1.678, 0.947]]
    )  # fmt: skip
    lab, lvl = clusters_with_fallback(pts, 10)
    assert lvl == 1 and lab.tolist() == confidence_clusters(pts, 5, min_samples=1).tolist()
    assert lab.tolist() != confidence_clusters(pts, 3, min_samples=1).tolist()
    # min_cluster_size 3: the retry at 2 still happens (3 > 2)
    pairs = np.array([[0.0, 0.0], [0.0, 0.001], [1.0, 1.0], [1.0, 1.001], [5.0, -5.0]])
    lab, lvl = clusters_with_fallback(pairs, 3)
    if (confidence_clusters(pairs, 3) < 0).all():
        assert lvl == 1 and lab[0] == lab[1] and lab[2] == lab[3] and lab[0] != lab[2]


def test_aggregate_and_ridge_defaults():
    dp = np.array([[1.0, 0.0], [0.0, 1.0]])
    di = np.array([[10.0, 0.6, 0.55], [0.0, 2.0, 0.0]])
    labels = np.array([0, 1])
    P, I, _ = aggregate_clusters(dp, di, labels)  # τ = 0.05 relative: 0.55 ≥ 0.05 · 10 kept, nothing zeroed
    np.testing.assert_allclose(I, di)
    _, I2, _ = aggregate_clusters(dp, di, labels, tau=0.05, relative=False)
    np.testing.assert_allclose(I2, di)
    np.testing.assert_allclose(ridge(di, dp), np.linalg.solve(di.T @ di + np.eye(3), di.T @ dp))  # λ = 1
    assert ridge_penalty(di, 2.0) == pytest.approx(2.0 * ((100 + 0.36 + 0.3025) + 4.0) / 2 / 3)
    small = np.array([[0.5, 0.0], [0.0, 0.1]])  # changes below 1: still λ = lam · mean energy, not 1
    assert ridge_penalty(small, 10.0) == pytest.approx(10.0 * (0.25 + 0.01) / 2 / 2)
    assert ridge_penalty(np.zeros((2, 2)), 10.0) == 1.0


def test_dynamics_from_arrays_of_an_old_run_and_coverage_without_change():
    conf, inten, labels = _groups()
    a = dynamics(conf, inten, labels).to_arrays()
    for name in ("permutations", "fallback", "lam", "p_W", "p_pair"):
        a.pop(name, None)
    d = Dynamics.from_arrays(a)
    assert d.permutations == 0 and d.p_W is None and d.fallback is None and d.lam is None
    still = Dynamics(d.W, d.labels, d.n_clusters, np.array([False, True]), np.zeros((2, 2)))
    assert still.coverage() == 1.0  # no confidence change at all: nothing left unexplained
    assert Dynamics(d.W, d.labels, d.n_clusters, d.flagged, np.full((2, 2), np.nan)).coverage() == 1.0


# --------------------------------------------------------------------------- float32 on disk, float64 in the math


def _steps(rng, n=24, t=3, c=3, k=5):
    """Confidences (T+1, N, C) of two groups moving apart, intensities (T+1, N, K), labels (N,)."""
    g = np.arange(n) % 2
    conf = np.full((t, n, c), 1 / c)
    for s in range(1, t):
        conf[s] = conf[s - 1] + np.where(g[:, None] == 0, [0.11, -0.05, -0.06], [-0.07, 0.04, 0.03]) * (-1) ** s
    conf += rng.normal(0, 0.003, conf.shape)
    return conf, rng.random((t, n, k)) * 30, np.arange(n) % c


def test_float32_arrays_as_saved_give_the_float64_results_bit_for_bit(rng):
    """The run stores confidences, saliency, intensities and p-values as float32; every analysis
    function computes in float64, so the numbers recomputed from those files equal the ones from
    the same values held in float64, to the last bit (a float32 computation differs near 1e-7)."""
    conf, inten, labels = (a.astype(np.float32) if a.dtype.kind == "f" else a for a in _steps(rng))
    d32 = dynamics(conf, inten, labels, min_cluster_size=5, tau=0.05, lam=2.0)
    d64 = dynamics(conf.astype(np.float64), inten.astype(np.float64), labels, min_cluster_size=5, tau=0.05, lam=2.0)
    assert (d32.n_clusters > 0).all() and np.abs(d32.W).max() > 0
    equal_arrays((d32.W, d32.class_delta, d32.lam), (d64.W, d64.class_delta, d64.lam))
    dp, di = (conf[1] - conf[0]).astype(np.float32), (inten[1] - inten[0]).astype(np.float32)
    lab = d32.labels[0]
    equal_arrays(aggregate_clusters(dp, di, lab), aggregate_clusters(dp.astype(np.float64), di.astype(np.float64), lab))
    equal_arrays([ridge(di, dp, 0.5)], [ridge(di.astype(np.float64), dp.astype(np.float64), 0.5)])
    assert intensity_scale(di) == intensity_scale(di.astype(np.float64))
    sal = rng.random((40, 4, 4)).astype(np.float32)
    a = rng.integers(0, 6, (40, 4, 4))
    equal_arrays([saliency_density(a, sal, 6)], [saliency_density(a, sal.astype(np.float64), 6)])
    d = rng.normal(size=(3, 4))
    p = rng.random((3, 4)).astype(np.float32) / 10
    equal_arrays(significant_signs(d, p, 0.05), significant_signs(d, p.astype(np.float64), 0.05))


# --------------------------------------------------------------------------- HDBSCAN labels (Eq. 5)


def test_cluster_labels_are_integers_in_every_branch():
    """Labels index clusters (np.bincount(labels + 1) counts noise and members): ints whichever way
    they were found: too few samples, all samples alike, HDBSCAN, the fallback's one cluster of all."""
    two_groups = np.repeat([[0.1, -0.1], [-0.2, 0.2]], 6, axis=0) + np.linspace(0, 1e-3, 12)[:, None]
    spread = np.array([[0, 0], [0.001, 0], [1, 1], [2, -1], [-3, 1]], float)
    cases = {
        "too few": confidence_clusters(np.zeros((3, 2)), 5),
        "alike": confidence_clusters(np.zeros((6, 2)), 5),
        "hdbscan": confidence_clusters(two_groups, 5),
        "one of all": clusters_with_fallback(spread, 4)[0],
        "dynamics": dynamics(np.zeros((3, 6, 2)), np.zeros((3, 6, 2)), min_cluster_size=5, permutations=0).labels,
    }
    assert clusters_with_fallback(spread, 4)[1] == 2
    for name, lab in cases.items():
        assert lab.dtype.kind == "i", name
        assert np.bincount(lab.ravel() + 1).sum() == lab.size
    assert np.bincount(cases["hdbscan"] + 1).tolist() == [0, 6, 6]


def test_samples_that_all_moved_alike_are_one_cluster():
    """Every sample's confidence moved by the same (non-constant) vector: HDBSCAN sees zero distances
    and would call it noise; the method calls it one cluster as soon as there are min_cluster_size
    samples (10 by default, and 2 is enough at min_cluster_size=2)."""
    alike = np.array([0.12, -0.05, -0.07])
    assert confidence_clusters(np.tile(alike, (12, 1)), 5).tolist() == [0] * 12
    assert confidence_clusters(np.tile(alike, (5, 1)), 5).tolist() == [0] * 5  # exactly min_cluster_size
    assert confidence_clusters(np.tile(alike, (4, 1)), 5).tolist() == [-1] * 4
    assert confidence_clusters(np.tile(alike, (2, 1)), 2).tolist() == [0, 0]
    assert confidence_clusters(np.tile(alike, (10, 1))).tolist() == [0] * 10  # the default min_cluster_size
    assert confidence_clusters(np.tile(alike, (9, 1))).tolist() == [-1] * 9
    # 6 alike at min_cluster_size 10: found at the first smaller size (5), level 1, not "nothing at any size"
    lab, level = clusters_with_fallback(np.tile(alike, (6, 1)), 10)
    assert lab.tolist() == [0] * 6 and level == 1


def test_confidence_clusters_names_the_fix_and_warns_nothing():
    with pytest.raises(DivergedError) as e:
        confidence_clusters(np.array([[np.nan, 0.0]] * 12), 10)
    assert str(e.value) == "confidence changes contain NaN or inf: the model diverged; lower the learning rate"
    x = np.repeat([[0.1, -0.1], [-0.2, 0.2]], 6, axis=0) + np.linspace(0, 1e-3, 12)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning from scikit-learn in every run's output
        assert (confidence_clusters(x, 5) >= 0).all()


def test_intensity_scale_is_one_when_there_is_nothing_to_scale():
    """The documented RMS size sqrt(mean_i ||dI_i||^2 / K), and 1 (no rescaling) for no sample,
    all-zero or non-finite changes."""
    assert intensity_scale(np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(np.sqrt(25 / 4))
    assert intensity_scale(np.zeros((0, 3))) == 1.0
    assert intensity_scale(np.zeros((4, 3))) == 1.0
    assert intensity_scale(np.array([[np.inf, 1.0]])) == 1.0


# --------------------------------------------------------------------------- the defaults of the run


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


# --------------------------------------------------------------------------- properties: random shapes and values


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@given(st.integers(1, 8), st.integers(1, 5), st.integers(1, 4), st.data())
def test_aggregate_and_ridge_properties(n, k, c, data):
    dp = data.draw(arrays(np.float64, (n, c), elements=finite))
    di = data.draw(arrays(np.float64, (n, k), elements=finite))
    labels = data.draw(arrays(np.int64, (n,), elements=st.integers(-1, 2)))
    lam = data.draw(st.floats(1e-3, 1e3))
    copies = dp.copy(), di.copy(), labels.copy()
    P, I, ids = aggregate_clusters(dp, di, labels, tau=0.05)
    assert P.shape == (len(ids), c) and I.shape == (len(ids), k) and -1 not in ids
    W = ridge(I, P, lam)
    assert W.shape == (k, c) and np.isfinite(W).all() and np.isfinite(P).all() and np.isfinite(I).all()
    for x, x0 in zip((dp, di, labels), copies, strict=True):
        np.testing.assert_array_equal(x, x0)


@given(st.integers(2, 4), st.integers(3, 25), st.integers(2, 4), st.integers(1, 5), st.data())
def test_dynamics_and_explain_properties(t1, n, c, k, data):
    conf = data.draw(arrays(np.float64, (t1, n, c), elements=st.floats(0, 1)))
    inten = data.draw(arrays(np.float64, (t1, n, k), elements=st.floats(0, 50)))
    labels = data.draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    contain = data.draw(arrays(np.bool_, (n, k)))
    copies = conf.copy(), inten.copy(), labels.copy(), contain.copy()
    d = dynamics(conf, inten, labels, min_cluster_size=3)
    assert d.W.shape == (t1 - 1, k, c) and np.isfinite(d.W).all()
    assert (d.flagged == (d.n_clusters == 0)).all() and not d.W[d.flagged].any()
    cm = data.draw(arrays(np.int64, (c, c), elements=st.integers(0, 9)))
    ex = explain(d.W, contain, labels, d.class_delta, confusion=cm, flagged=d.flagged)
    present = {str(x) for x in np.unique(labels)}
    assert set(ex["classes"]) == present
    for x, x0 in zip((conf, inten, labels, contain), copies, strict=True):
        np.testing.assert_array_equal(x, x0)


def test_pair_pvalues_are_symmetric_with_one_on_the_diagonal():
    rng = np.random.default_rng(0)
    conf = rng.dirichlet(np.ones(4), size=(4, 60))
    inten = rng.random((4, 60, 5))
    d = dynamics(conf, inten, rng.integers(0, 4, 60), permutations=49, min_cluster_size=5)
    assert np.array_equal(d.p_pair, d.p_pair.transpose(0, 1, 3, 2))
    assert (d.p_pair[:, :, np.arange(4), np.arange(4)] == 1).all()


def test_samples_aggregate_is_the_ridge_on_every_sample_and_its_null_draws_are_the_general_fit(rng):
    """``aggregate="samples"``: W_t is Eq. 8 on the N samples' own (τ-thresholded) ΔI and Δp, by the normal
    equations; the null's shortcut (one solve per step, the draws permute ΔP) equals the general cluster-mean
    fit of the same draws with singleton clusters, and the p-values equal a hand-written permutation test."""
    from i2x.analysis.dynamics import _aggregate, _fit, _Step, _threshold, step_penalty

    N, K, C, T = 40, 4, 3, 2
    conf = np.cumsum(rng.normal(0, 0.1, (T + 1, N, C)), 0)
    inten = np.cumsum(rng.normal(0, 1.0, (T + 1, N, K)), 0)
    labels = np.arange(N) % C
    dyn = dynamics(conf, inten, labels, aggregate="samples", permutations=49, seed=3, class_level=False)
    assert (dyn.labels == np.arange(N)).all() and dyn.fallback.tolist() == [0] * T
    for t in range(T):
        dp, di = conf[t + 1] - conf[t], inten[t + 1] - inten[t]
        I = _threshold(di[None], 0.05)[0]
        lam = step_penalty(di, 10.0)[2]
        np.testing.assert_allclose(
            dyn.W[t], np.linalg.solve(I.T @ I + lam * np.eye(K), I.T @ dp), rtol=1e-8, atol=1e-12
        )
    step = _Step(np.arange(N))
    dp, di = conf[1] - conf[0], inten[1] - inten[0]
    draws = step.draws(within_class_permutations(labels, 6, np.random.default_rng(0)))
    P, I = _aggregate(step, dp, di, 0.05, null=draws)
    np.testing.assert_allclose(_fit(step, dp, di, 0.05, 2.0, draws), ridge_batch(I, P, np.full(6, 2.0)), atol=1e-12)
    # the p-values: the same draws by hand
    sc, lam_n, _ = step_penalty(di, 10.0)
    W0 = _fit(step, dp, di / sc, 0.05, lam_n)[0]
    perm = within_class_permutations(labels, 49, np.random.default_rng([3, 1]))  # the draws of every step
    Wb = _fit(step, dp, di / sc, 0.05, lam_n, step.draws(perm))
    p_hand = (1 + (np.abs(Wb) >= np.abs(W0) * (1 - 1e-9)).sum(0)) / 50
    np.testing.assert_allclose(dyn.p_W[0], p_hand, atol=1e-6)
