"""The numpy stages at their edges (issue 17, from mutation testing; docs/TESTING.md): documented
defaults used when a keyword is left out, thresholds exactly at their boundary, dtypes and keys
of the saved arrays and JSON, the one-line error messages, and degenerate inputs (one checkpoint,
no cluster, a prototype without cells). Each test here killed mutants that the method tests left."""

from __future__ import annotations

import numpy as np
import pytest

from i2x.analysis.dynamics import (
    Dynamics,
    aggregate_clusters,
    clusters_with_fallback,
    confidence_clusters,
    dynamics,
    ridge,
    ridge_penalty,
)
from i2x.analysis.explain import (
    _significance,
    confused_pairs,
    explain,
    key_checkpoints,
    pair_explanation,
    sign_flips,
    significant_signs,
    specialized_prototypes,
)
from i2x.analysis.intensity import background_prototypes, containment, intensity, saliency_density
from i2x.analysis.prototypes import Prototypes, assign, prototypes, typical_positions
from i2x.config import ExplainConfig
from i2x.errors import DivergedError, I2XError

# --------------------------------------------------------------------------- prototypes (Eq. 3)


def _features(rng, n=12, h=3, w=3, d=6):
    return rng.normal(size=(n, h, w, d)).astype(np.float32)


def test_prototypes_defaults_are_the_documented_settings(rng):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    f = _features(rng, n=8, h=3, w=3, d=10)  # 72 vectors: room for K = 32
    p = prototypes(f)
    q = prototypes(f, k=32, variance=0.95, max_components=64, n_init=3, random_state=0, n_typical=8)
    for name in ("centroids", "assignments", "pca_components", "pca_mean", "typical"):
        np.testing.assert_array_equal(getattr(p, name), getattr(q, name), err_msg=name)
    assert p.k == 32 and p.typical.shape == (32, 8, 3) and p.explained_variance == q.explained_variance
    # K-Means as docs/METHOD.md states it: n_init=3, random_state=seed, on the PCA scores
    x = f.reshape(-1, 10)
    pca = PCA(n_components=10, random_state=0).fit(x)
    z = (x - pca.mean_) @ pca.components_[: p.pca_components.shape[0]].T
    km = KMeans(n_clusters=32, n_init=3, random_state=0).fit(z)
    np.testing.assert_array_equal(p.assignments.ravel(), km.labels_)
    r = prototypes(f, k=5, random_state=7, n_typical=3)
    assert r.typical.shape == (5, 3, 3)
    np.testing.assert_array_equal(r.assignments.ravel(), KMeans(5, n_init=3, random_state=7).fit(z).labels_)


def test_prototypes_default_n_init_and_component_cap():
    f = np.random.default_rng(5).normal(size=(8, 3, 3, 10)).astype(np.float32)  # n_init 3 and 4 differ here
    a, b = prototypes(f), prototypes(f, n_init=3)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    assert not np.array_equal(a.assignments, prototypes(f, n_init=4).assignments)
    wide = np.random.default_rng(0).normal(size=(10, 3, 3, 70)).astype(np.float32)  # 90 vectors of 70 channels
    assert prototypes(wide, k=2, variance=0.99999).pca_components.shape == (64, 70)  # at most 64 by default


def test_prototypes_saved_dtypes():
    p = prototypes(_features(np.random.default_rng(1)), k=4)
    assert p.centroids.dtype == np.float32 and p.pca_components.dtype == np.float32
    assert p.pca_mean.dtype == np.float32 and p.assignments.dtype == np.int32 and p.typical.dtype == np.int32
    assert isinstance(p.explained_variance, float)


def _spectrum(variances):
    """Feature vectors (2D, 1, 1, D) whose covariance is diagonal with the given variances (±s e_j)."""
    d = len(variances)
    rows = []
    for j, v in enumerate(variances):
        e = np.zeros(d)
        e[j] = np.sqrt(v)
        rows += [e, -e]
    return np.array(rows, dtype=np.float32).reshape(2 * d, 1, 1, d)


@pytest.mark.parametrize(
    "variance, max_components, p", [(0.5, 64, 1), (0.75, 64, 2), (0.9, 64, 3), (0.95, 64, 4), (0.99, 2, 2)]
)
def test_pca_keeps_the_fewest_components_reaching_the_variance(variance, max_components, p):
    f = _spectrum([8.0, 4.0, 2.0, 1.0])  # explained variance ratios 8/15, 4/15, 2/15, 1/15
    protos = prototypes(f, k=2, variance=variance, max_components=max_components)
    assert protos.pca_components.shape == (p, 4)
    assert protos.explained_variance == pytest.approx([8, 12, 14, 15][p - 1] / 15)


def test_pca_on_degenerate_features():
    const = np.ones((4, 2, 2, 3), np.float32)  # all equal: PCA's ratios are NaN, one component, 100 %
    p = prototypes(const, k=1)
    assert p.pca_components.shape[0] == 1 and p.explained_variance == 1.0
    few = np.random.default_rng(0).normal(size=(1, 1, 3, 8)).astype(np.float32)  # 3 vectors of 8 channels
    p = prototypes(few, k=2, variance=0.999)
    assert p.pca_components.shape[0] <= 3 and p.assignments.shape == (1, 1, 3)


def test_prototypes_fitted_on_other_features_assign_the_explanation_set(rng):
    fit = np.concatenate([rng.normal(-5, 0.1, (6, 2, 2, 3)), rng.normal(5, 0.1, (6, 2, 2, 3))]).astype(np.float32)
    e = rng.normal(0, 4, (5, 2, 2, 3)).astype(np.float32)
    p = prototypes(e, k=2, fit_features=fit)
    alone = prototypes(fit, k=2)
    np.testing.assert_allclose(p.centroids, alone.centroids, rtol=1e-5)
    np.testing.assert_allclose(p.pca_mean, alone.pca_mean, rtol=1e-5, atol=1e-6)
    assert p.assignments.shape == (5, 2, 2)
    np.testing.assert_array_equal(p.assignments, assign(e, p))
    rows = [r for r in p.typical.reshape(-1, 3) if r[0] >= 0]
    assert rows and all(0 <= r[0] < 5 for r in rows)  # typical positions are rows of E, not of the fit set


def test_assign_is_the_nearest_centroid(rng):
    f = _features(rng)
    p = prototypes(f, k=5)
    got = assign(f, p)
    z = (f.reshape(-1, 6) - p.pca_mean) @ p.pca_components.T
    want = ((z[:, None] - p.centroids[None]) ** 2).sum(-1).argmin(1).reshape(f.shape[:3])
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32


def test_prototype_errors_are_one_line_and_name_the_fix():
    f = np.zeros((1, 2, 2, 3), np.float32)
    msg = r"prototypes k=5 must be between 1 and the number of feature vectors \(4 = N·H'·W'\); lower --prototypes"
    with pytest.raises(I2XError, match=msg):
        prototypes(f, k=5)
    with pytest.raises(I2XError, match=r"features must be \(N, H', W', D\), got shape \(2, 3\)"):
        prototypes(np.zeros((2, 3)), k=1)
    bad = f.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(
        I2XError, match="^features contain NaN or inf: the final model diverged; lower the learning rate$"
    ):
        prototypes(bad, k=1)


def test_prototypes_arrays_roundtrip_with_the_schema_keys(rng):
    p = prototypes(_features(rng), k=3)
    a = p.to_arrays()
    assert set(a) == {"centroids", "assignments", "pca_components", "pca_mean", "explained_variance", "typical"}
    assert a["explained_variance"] == p.explained_variance and a["explained_variance"].dtype == np.float64
    back = Prototypes.from_arrays(a)
    for name in ("centroids", "assignments", "pca_components", "pca_mean", "typical"):
        np.testing.assert_array_equal(getattr(back, name), getattr(p, name))
    assert back.explained_variance == p.explained_variance and back.k == 3
    old = {k: v for k, v in a.items() if k != "typical"}  # runs written before typical positions
    assert "typical" not in Prototypes.from_arrays(old).to_arrays()
    assert Prototypes.from_arrays(old).typical is None


def test_typical_positions_use_the_squared_distance():
    # one prototype centred at (2, 2); positions at offsets (−3, 0), (1, 0), (0, −2) in samples 0, 1, 2
    z = np.array([[-1.0, 2.0], [3.0, 2.0], [2.0, 0.0]])
    labels = np.zeros(3, int)
    typ = typical_positions(z, labels, np.array([[2.0, 2.0]]), (3, 1, 1))
    assert typ.shape == (1, 8, 3)  # n = 8 by default, −1 padded
    assert typ[0, :3, 0].tolist() == [1, 2, 0] and (typ[0, 3:] == -1).all()


def test_typical_positions_break_ties_by_sample_order():
    n = 40  # one position per sample, all at the same distance: the first samples, in order
    z = np.ones((n, 1))
    typ = typical_positions(z, np.zeros(n, int), np.zeros((1, 1)), (n, 1, 1), n=5)
    assert typ[0, :, 0].tolist() == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- intensity (Eq. 4)


def test_mean_reduce_by_hand_with_an_absent_prototype():
    a = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 1]]])
    s = np.array([[[1.0, 3.0], [2.0, 2.0]], [[1.0, 2.0], [3.0, 8.0]]])
    # sample 0: P-0 mean(1, 3) = 2, P-1 mean(2, 2) = 2; sample 1: P-0 mean(1, 2, 3) = 2, P-1 = 8; P-2 absent: 0
    np.testing.assert_allclose(intensity(s, a, 3, "mean"), [[2.0, 2.0, 0.0], [2.0, 8.0, 0.0]])
    np.testing.assert_allclose(intensity(s[None], a, 3, "mean"), [[[2.0, 2.0, 0.0], [2.0, 8.0, 0.0]]])
    np.testing.assert_allclose(intensity(s, a, 3), [[4.0, 4.0, 0.0], [6.0, 8.0, 0.0]])


def test_intensity_errors():
    with pytest.raises(I2XError, match="reduce='max' must be 'sum' or 'mean'"):
        intensity(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), int), 2, "max")
    with pytest.raises(I2XError, match=r"assignments hold values outside 0\.\.1: pass the k"):
        intensity(np.zeros((1, 2, 2)), np.full((1, 2, 2), 2), 2)  # a value equal to k is outside
    with pytest.raises(I2XError, match="outside"):
        intensity(np.zeros((1, 2, 2)), np.full((1, 2, 2), -1), 2)


def test_containment_needs_positive_saliency_and_returns_bools():
    a = np.array([[[0, 1], [2, 3]]])
    s = np.array([[[0.0, 0.0], [0.0, 1.0]]])  # median 0: only the cell with saliency > 0 counts
    got = containment(a, 4, s, 0.5)
    assert got.dtype == bool and got.tolist() == [[False, False, False, True]]
    assert containment(a, 5).dtype == bool and containment(a, 5).tolist() == [[True, True, True, True, False]]
    with pytest.raises(I2XError, match=r"^containment\(quantile=\.\.\.\) needs the saliency maps it thresholds$"):
        containment(a, 4, None, 0.5)


def test_saliency_density_by_hand():
    a = np.array([[[0, 0], [0, 1]]])
    s = np.array([[[1.0, 1.0], [1.0, 5.0]]])  # mean per cell 2; P-0: 1 per cell, P-1 (one cell): 5
    d = saliency_density(a, s, 3)
    assert d.shape == (3,) and d[0] == pytest.approx(0.5) and d[1] == pytest.approx(2.5) and np.isnan(d[2])
    zero = saliency_density(a, np.zeros((1, 2, 2)), 2)  # a map without saliency: 0, not NaN
    assert zero.tolist() == [0.0, 0.0]


def test_background_threshold_default_and_boundary():
    d = np.array([0.4, 0.5, 0.6, np.nan, 1.4])
    assert background_prototypes(d).tolist() == [True, False, False, True, False]  # default 0.5; NaN: no cell
    assert background_prototypes(d, 1.0).tolist() == [True, True, True, True, False]


# --------------------------------------------------------------------------- dynamics (Eq. 5-8)


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
        conf, inten, labels, 10, 0.05, 10.0, lam_scale="relative", fallback=True, permutations=0, seed=0
    )  # fmt: skip
    for name in ("W", "labels", "n_clusters", "fallback", "lam"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.fallback.tolist() == [0, 0]  # groups of exactly 10: found at the default min_cluster_size
    assert a.p_W is None and a.p_pair is None and a.permutations == 0
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
    conf, inten, labels = _groups(T=3)
    inten = inten + np.random.default_rng(0).normal(0, 0.5, inten.shape)
    a = dynamics(conf, inten, labels, 5, permutations=49, seed=3)
    b = dynamics(conf, inten, labels, 5, permutations=49, seed=3)
    c = dynamics(conf, inten, labels, 5, permutations=49, seed=4)
    np.testing.assert_array_equal(a.p_W, b.p_W)  # reproducible from the seed
    assert not np.array_equal(a.p_W, c.p_W)


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


# --------------------------------------------------------------------------- explain (§2.6)


def test_specialized_defaults_order_and_jaccard():
    labels = np.zeros(8, int)
    contain = np.zeros((8, 6), bool)
    contain[:4, 0] = contain[4:6, 1] = contain[6:7, 2] = contain[7:, 3] = True  # 4 natural groups
    groups = specialized_prototypes(contain, labels, 0, [])  # groups = 3 by default
    assert len(groups) == 3 and sum(g["size"] for g in groups) == 8
    assert [g["size"] for g in groups] == sorted((g["size"] for g in groups), reverse=True)  # largest first
    assert groups[0]["size"] > groups[-1]["size"]
    # Jaccard (not Euclidean) distance between containment vectors: these 6 samples split 1 | 1 | 4
    x = np.array(
        [[0, 1, 1, 0, 0], [1, 1, 0, 0, 1], [0, 1, 0, 1, 1], [0, 1, 0, 1, 0], [0, 1, 0, 1, 1], [1, 1, 0, 1, 1]], bool
    )
    g = specialized_prototypes(x, np.zeros(6, int), 0, [], groups=3, rho_group=1.0)
    assert sorted(tuple(m["members"]) for m in g) == [(0,), (1,), (2, 3, 4, 5)]


def test_key_checkpoint_ordering_and_skips():
    T, K, C = 3, 3, 3
    delta = np.zeros((T, C))
    delta[:, 0] = [0.5, 0.5, 0.5]
    W = np.zeros((T, K, C))
    # step 0: the largest |W| has the wrong sign, the next has the right one and is ≥ 0.5 × the largest
    W[0, 0, 0], W[0, 1, 0] = -0.9, 0.6
    # step 1: no candidate has any weight; step 2: two key prototypes, listed by |W|; against W = 1.0 exactly
    W[2, 0, 0], W[2, 1, 0], W[2, 1, 2] = 0.6, 0.9, -1.0
    kc = key_checkpoints(W, delta, 0, [0, 1], ExplainConfig())
    assert [k["step"] for k in kc] == [0, 2]
    assert [p["prototype"] for p in kc[0]["prototypes"]] == [1]
    assert [p["prototype"] for p in kc[1]["prototypes"]] == [1, 0]
    assert kc[1]["prototypes"][0]["against"] == [{"class": 2, "weight": -1.0}]
    W[2, 1, 2] = 1.0  # same sign as W[2, 1, 0]: not against
    W[2, 0, 1] = -1.0
    kc = key_checkpoints(W, delta, 0, [0, 1], ExplainConfig())
    assert kc[1]["prototypes"][1]["against"] == [{"class": 1, "weight": -1.0}]
    # a negative key weight: a class with W exactly +1.0 is against it
    W2 = np.zeros((1, 2, 3))
    W2[0, 0, 0], W2[0, 0, 1] = -0.7, 1.0
    kc2 = key_checkpoints(W2, -delta[:1], 0, [0], ExplainConfig())
    assert kc2[0]["prototypes"][0]["against"] == [{"class": 1, "weight": 1.0}]
    # a prototype whose p ≥ α is skipped, the next one still counts
    p_W = np.full((T, K, C), 0.01)
    p_W[2, 1, 0] = 0.5
    kc = key_checkpoints(W, delta, 0, [0, 1], ExplainConfig(), p_W=p_W)
    assert [p["prototype"] for p in kc[1]["prototypes"]] == [0]


def test_sign_flips_and_significance_at_the_boundary():
    assert sign_flips(np.array([[1.0], [-1.0]])).dtype == np.int64
    sig, adj = significant_signs(np.array([[1.0], [-1.0]]), np.array([[0.125], [0.0625]]), 0.25)
    assert adj.tolist() == [[0.25], [0.125]] and sig.tolist() == [[0.0], [-1.0]]  # adjusted p = α: not significant


def _pp(p, T, K):
    out = np.ones((T, K, 2, 2))
    out[:, :, 0, 1] = out[:, :, 1, 0] = p
    return out


def test_pair_rows_at_their_boundaries():
    labels, contain = np.array([0, 0, 1, 1]), np.ones((4, 2), bool)
    W = np.zeros((3, 2, 2))
    W[:, 0, 0] = [0.5, -0.5, 0.0]  # P-0: significant + then −: Σ d over its significant steps = 0 -> favours b
    W[:, 1, 0] = [0.2, 0.3, -0.4]  # P-1: +, +, − : the last pair of steps changes sign
    pe = pair_explanation(W, contain, labels, 0, 1, p_pair=_pp(0.001, 3, 2))
    rows = {r["prototype"]: r for r in pe["uncertain"]}
    assert rows[0]["favours"] == 1 and rows[0]["sign_changes_at"] == [1]
    assert rows[1]["sign_changes_at"] == [2] and rows[1]["sign_flips"] == 1
    # no step at all: nothing listed, no error
    assert pair_explanation(np.zeros((0, 2, 2)), contain, labels, 0, 1, p_pair=np.ones((0, 2, 2, 2)))["uncertain"] == []


def test_reliable_opposite_step_at_exactly_alpha_and_one_class_at_the_threshold():
    labels = np.array([0] * 20 + [1] * 20)
    contain = np.zeros((40, 1), bool)
    contain[20] = True  # in 1 of 20 = 5 % of class b only
    W = np.zeros((2, 1, 2))
    W[:, 0, 0] = [0.5, -0.2]
    pp = _pp(np.array([[0.001], [0.125]]), 2, 1)  # step 1: opposite sign at unadjusted p = α = 0.125
    pe = pair_explanation(W, contain, labels, 0, 1, ExplainConfig(alpha=0.125), p_pair=pp)
    assert [r["prototype"] for r in pe["reliable"]] == [0]  # p = α is not "< α": no opposite step
    pp = _pp(np.array([[0.001], [0.1]]), 2, 1)
    assert pair_explanation(W, contain, labels, 0, 1, ExplainConfig(alpha=0.125), p_pair=pp)["reliable"] == []


def test_confused_pairs_counts_ranks_and_ties():
    cm = np.zeros((5, 5), int)
    cm[0, 3], cm[1, 2], cm[2, 4], cm[0, 1], cm[3, 4] = 5, 5, 9, 1, 2
    assert confused_pairs(cm) == [(2, 4, 9), (0, 3, 5), (1, 2, 5)]  # top 3 by default; ties by a, then b
    assert confused_pairs(cm, top=10) == [(2, 4, 9), (0, 3, 5), (1, 2, 5), (3, 4, 2), (0, 1, 1)]


def test_explain_schema_keys_and_counts():
    labels = np.array([0, 0, 0, 1, 1])
    contain = np.ones((5, 2), bool)
    ex = explain(np.zeros((2, 2, 2)), contain, labels, np.zeros((2, 2)), classes=["a", "b"])
    assert set(ex) == {"config", "significance", "background", "classes", "pairs", "skipped_pairs", "flagged_steps"}
    a = ex["classes"]["a"]
    assert set(a) == {"index", "n_samples", "shared", "specialized", "key_checkpoints"}
    assert (a["index"], a["n_samples"], ex["classes"]["b"]["n_samples"]) == (0, 3, 2)
    assert all(set(g) == {"size", "prototypes"} for g in a["specialized"])


def test_explain_passes_its_settings_to_every_part():
    labels = np.array([0] * 6 + [1] * 2)
    contain = np.zeros((8, 4), bool)
    contain[:3, 0] = contain[3:, 1] = True  # class 0: two sub-groups, each with its own prototype
    contain[:, 2] = True
    ex = explain(np.zeros((2, 4, 2)), contain, labels, np.zeros((2, 2)), cfg=ExplainConfig(groups=2, rho_group=0.5))
    got = sorted(tuple(g["prototypes"]) for g in ex["classes"]["0"]["specialized"])
    want = specialized_prototypes(contain, labels, 0, [2], groups=2, rho_group=0.5)
    assert got == sorted(tuple(g["prototypes"]) for g in want) == [(0,), (1,)]
    # rho_group reaches the sub-groups: P-3 in 2 of the 3 samples of one sub-group (67 %)
    contain[0, 3] = contain[1, 3] = True
    for rho_group, has in ((0.5, True), (0.9, False)):
        cfg = ExplainConfig(groups=2, rho_group=rho_group)
        ex = explain(np.zeros((2, 4, 2)), contain, labels, np.zeros((2, 2)), cfg=cfg)
        assert any(3 in g["prototypes"] for g in ex["classes"]["0"]["specialized"]) is has
    contain[0, 3] = contain[1, 3] = False
    # top and the flagged steps reach the pairs and the key checkpoints
    W = np.zeros((3, 4, 2))
    W[:, 0, 0] = W[:, 1, 0] = [1.0, -1.0, 1.0]
    delta = np.zeros((3, 2))
    delta[0, 0] = 0.5
    contain[:] = True
    ex = explain(W, contain, labels, delta, pairs=[(0, 1)], cfg=ExplainConfig(top=1))
    assert len(ex["pairs"][0]["uncertain"]) == 1
    assert ex["classes"]["0"]["key_checkpoints"][0]["step"] == 0
    ex = explain(W, contain, labels, delta, pairs=[(0, 1)], flagged=np.array([True, False, False]))
    assert ex["classes"]["0"]["key_checkpoints"] == [] and ex["flagged_steps"] == [0]
    ex = explain(W, contain, labels, delta, pairs=[(0, 1)], p_pair=np.full((3, 4, 2, 2), 0.001))
    assert ex["significance"]["permutations"] == 0  # not given: 0, not made up


def test_significance_text_is_the_documented_one():
    assert _significance(False, 0, 0.05, 4) == {
        "calibrated": False,
        "test": "none: every non-zero sign counts (no p-values given)",
    }
    s = _significance(True, 999, 0.05, 4)
    assert s["null"] == (
        "H0: each step's intensity changes ΔI are independent of its confidence changes Δp "
        "(rows of ΔI permuted over the samples; the HDBSCAN clusters of Δp kept)"
    )
    assert s["test"] == (
        "two-sided permutation p of d_t[k] = W_t[k,a] - W_t[k,b] (and of W_t[k,c]); a step's sign counts when "
        "p x 4 steps (Bonferroni) < alpha; uncertain = significant for a at one step and for b at another "
        "(p_value = max of the two sides); reliable = significant with one sign only"
    )
    assert (s["calibrated"], s["alpha"], s["permutations"]) == (True, 0.05, 999)
