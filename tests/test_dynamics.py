import numpy as np
import pytest

from i2x import aggregate_clusters, confidence_clusters, dynamics, ridge


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
    a = dynamics(conf, inten, min_cluster_size=5, lam=0.5)
    b = dynamics(conf, 10 * inten, min_cluster_size=5, lam=0.5)
    np.testing.assert_allclose(10 * b.W, a.W, rtol=1e-9, atol=1e-12)  # W follows ΔP / ΔI, not ΔIᵀΔP
    c = dynamics(conf, 10 * inten, min_cluster_size=5, lam=0.5, lam_scale="absolute")
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
    dynamics(conf, inten, min_cluster_size=3)
    np.testing.assert_array_equal(conf, c0)
    np.testing.assert_array_equal(inten, i0)


def test_a_misspelt_ridge_scale_is_an_error_in_both_readers():
    import pytest

    from i2x import I2XError
    from i2x.analysis.dynamics import dynamics, ridge_penalty

    di = np.ones((4, 2))
    with pytest.raises(I2XError, match="'relativ' must be 'relative' or 'absolute'"):
        ridge_penalty(di, 1.0, "relativ")
    with pytest.raises(I2XError, match="must be 'relative' or 'absolute'"):
        dynamics(np.zeros((2, 4, 2)), np.zeros((2, 4, 2)), np.zeros(4, int), lam_scale="absolut")
