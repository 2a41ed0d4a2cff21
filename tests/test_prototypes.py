"""i2x.analysis.prototypes (Eq. 3): PCA + K-Means prototypes, assignment, typical positions, the
streamed training-set fit, defaults, dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import equal_arrays, nearest_prototype
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from i2x import I2XError, prototypes
from i2x.analysis.prototypes import FeatureStream, Prototypes, pca_sample_images, typical_positions


def test_prototypes_recover_planted_patterns(rng):
    # two feature patterns at known positions: left column pattern A, right column pattern B
    n, h, w, d = 30, 2, 2, 6
    a, b = np.zeros(d), np.zeros(d)
    a[0], b[3] = 5.0, 5.0
    f = rng.normal(0, 0.05, size=(n, h, w, d))
    f[:, :, 0] += a
    f[:, :, 1] += b
    p = prototypes(f, k=2, random_state=0)
    assert p.assignments.shape == (n, h, w) and p.k == 2
    left, right = p.assignments[:, :, 0], p.assignments[:, :, 1]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    np.testing.assert_array_equal(nearest_prototype(f, p), p.assignments)
    # typical positions of each prototype are positions assigned to it, one per sample
    for k in range(2):
        t = p.typical[k]
        assert (p.assignments[t[:, 0], t[:, 1], t[:, 2]] == k).all()
        assert len(set(t[:, 0])) == len(t)


def test_pca_keeps_variance_or_caps_components(rng):
    f = rng.normal(size=(40, 2, 2, 10))
    p = prototypes(f, k=3, variance=0.5, max_components=64)
    assert p.pca_components.shape[0] < 10 and p.explained_variance >= 0.5
    p = prototypes(f, k=3, variance=0.999, max_components=4)
    assert p.pca_components.shape[0] == 4


def test_k_larger_than_feature_vectors_is_a_clear_error(rng):
    from i2x.cli import cli_message
    from i2x.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^prototypes=9: ") as err:  # Python names the argument ...
        prototypes(rng.normal(size=(2, 2, 2, 3)), k=9)
    assert cli_message(err.value).startswith("--prototypes 9: ")  # ... the command line its flag


def test_deterministic_given_random_state(rng):
    f = rng.normal(size=(20, 3, 3, 5))
    a, b = prototypes(f, k=4, random_state=1), prototypes(f, k=4, random_state=1)
    np.testing.assert_array_equal(a.assignments, b.assignments)


def test_prototypes_fit_on_other_features_assign_the_explanation_set(rng):
    # the paper fits on the training set: centroids from fit_features, E assigned to the nearest
    fit = np.concatenate([rng.normal(0, 0.1, (30, 2, 2, 3)), rng.normal(5, 0.1, (30, 2, 2, 3))])
    e = np.concatenate([np.full((1, 2, 2, 3), 5.0), np.zeros((1, 2, 2, 3))])
    p = prototypes(e, k=2, fit_features=fit, n_typical=1)
    assert p.assignments.shape == (2, 2, 2)
    assert len(set(p.assignments[0].ravel())) == 1 and len(set(p.assignments[1].ravel())) == 1
    assert p.assignments[0, 0, 0] != p.assignments[1, 0, 0]
    np.testing.assert_array_equal(nearest_prototype(e, p), p.assignments)
    assert prototypes(e[:1], k=4, fit_features=fit).k == 4  # K may exceed E's 4 vectors: the fit set has 240


def _clustered(rng, n: int, k: int = 6, d: int = 40, hw: int = 3):
    """(n, hw, hw, d) features where every vector is one of k planted patterns plus noise, and
    (n, hw, hw) which pattern."""
    centers = np.random.default_rng(99).normal(0, 4.0, size=(k, d))  # the same patterns in every call
    which = rng.integers(0, k, size=(n, hw, hw))
    return (centers[which] + rng.normal(0, 1.0, size=(n, hw, hw, d))).astype(np.float32), which


def test_streamed_training_fit_equals_the_in_memory_fit(rng):
    from sklearn.metrics import adjusted_rand_score

    from i2x.analysis.prototypes import FeatureStream

    (train, _), (e, planted) = _clustered(rng, 300), _clustered(rng, 40)
    seen = []

    def batches(idx):
        for i in range(0, len(idx), 16):
            seen.append(len(idx[i : i + 16]))
            yield train[idx[i : i + 16]]

    stream = FeatureStream(len(train), batches)
    full = prototypes(e, k=6, random_state=3, fit_features=train)  # in memory
    got = prototypes(e, k=6, random_state=3, fit_features=stream)
    # the PCA sees every vector (300 x 9 < the sample cap): the same fit, batch by batch
    np.testing.assert_array_equal(got.assignments, full.assignments)
    assert max(seen) == 16 and sum(seen) == len(train)  # every vector fits the PCA sample: one pass
    # PCA on a seeded sample of 50 images' vectors: the same partition of E (adjusted Rand)
    seen.clear()
    small = prototypes(e, k=6, random_state=3, fit_features=stream, pca_sample=450)
    assert sum(seen) == 50 + len(train)  # a PCA pass over the sample, a projection pass over all
    assert adjusted_rand_score(full.assignments.ravel(), small.assignments.ravel()) >= 0.95
    # and K-Means on the training set finds the planted patterns in E
    assert adjusted_rand_score(planted.ravel(), got.assignments.ravel()) >= 0.95


def test_feature_stream_of_a_model_equals_its_features():
    import torch

    from i2x.nn.saliency import feature_stream, features

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    x = torch.randn(11, 1, 8, 8)
    model(x[:1])
    whole = features(model, x, layer="1", batch_size=4)
    s = feature_stream(model, x, layer="1", batch_size=4)
    idx = np.array([0, 3, 4, 10])
    parts = list(s.batches(idx))
    assert s.n == 11 and [len(p) for p in parts] == [4]
    np.testing.assert_allclose(np.concatenate(parts), whole[idx], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate(list(s.batches(np.arange(11)))), whole, rtol=1e-6)


# ----------------------------------------------------------------------- defaults, dtypes, errors and the saved arrays


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
    # numbered by size (issue 24): P-0 has the most vectors; ties keep K-Means' order
    sizes = np.bincount(km.labels_, minlength=32)
    new = {old: i for i, old in enumerate(sorted(range(32), key=lambda j: (-sizes[j], j)))}
    np.testing.assert_array_equal(p.assignments.ravel(), [new[j] for j in km.labels_])
    assert (np.diff(np.bincount(p.assignments.ravel(), minlength=32)) <= 0).all()
    r = prototypes(f, k=5, random_state=7, n_typical=3)
    assert r.typical.shape == (5, 3, 3)
    lab = KMeans(5, n_init=3, random_state=7).fit(z).labels_
    sizes = np.bincount(lab, minlength=5)
    new = {old: i for i, old in enumerate(sorted(range(5), key=lambda j: (-sizes[j], j)))}
    np.testing.assert_array_equal(r.assignments.ravel(), [new[j] for j in lab])


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
    np.testing.assert_array_equal(p.assignments, nearest_prototype(e, p))
    rows = [r for r in p.typical.reshape(-1, 3) if r[0] >= 0]
    assert rows and all(0 <= r[0] < 5 for r in rows)  # typical positions are rows of E, not of the fit set


def test_assign_is_the_nearest_centroid(rng):
    f = _features(rng)
    p = prototypes(f, k=5)
    got = nearest_prototype(f, p)
    z = (f.reshape(-1, 6) - p.pca_mean) @ p.pca_components.T
    want = ((z[:, None] - p.centroids[None]) ** 2).sum(-1).argmin(1).reshape(f.shape[:3])
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32


def test_prototype_errors_are_one_line_and_name_the_fix():
    f = np.zeros((1, 2, 2, 3), np.float32)
    msg = r"prototypes=5: must be between 1 and the number of feature vectors \(4 = N·H'·W'\); lower it"
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


# ------------------------------------------------------------------------ float32 / float64, seeding, the streamed fit


def test_float64_features_give_the_prototypes_of_the_float32_ones(rng):
    """A caller's float64 activations and the float32 ones the pipeline extracts: the same prototypes."""
    f = rng.normal(size=(6, 3, 3, 5))
    equal_arrays(prototypes(f, 3).to_arrays().values(), prototypes(f.astype(np.float32), 3).to_arrays().values())


def test_prototypes_are_reproducible_for_wide_features(rng):
    """504 vectors of 60 channels (wide like ResNet-50's 2048): scikit-learn's PCA then uses its
    randomized solver, which must be seeded too for the same seed to give the same prototypes,
    fitted on E or on a training set."""
    e = rng.normal(size=(14, 6, 6, 60)).astype(np.float32)
    train = rng.normal(size=(14, 6, 6, 60)).astype(np.float32)
    for fit in (None, train):
        a, b = (prototypes(e, 3, max_components=8, n_init=1, random_state=3, fit_features=fit) for _ in range(2))
        equal_arrays(a.to_arrays().values(), b.to_arrays().values())


class _Reads:
    """A training set streamed as the pipeline streams it, logging the images each pass asks for."""

    def __init__(self, features: np.ndarray):
        self.features, self.asked = features, []

    def stream(self) -> FeatureStream:
        def batches(idx):
            self.asked.append(np.asarray(idx).tolist())
            return (self.features[idx[i : i + 3]] for i in range(0, len(idx), 3))

        return FeatureStream(len(self.features), batches)


def test_a_streamed_fit_samples_whole_images_for_the_pca_then_reads_every_image(rng):
    """PCA on a seeded sample of at most pca_sample vectors (10 of the 20 images of 9 cells for 90 or 95
    vectors: distinct, sorted, the same for the same seed), K-Means on every image; a training set
    that fits in the sample is read once."""
    e, train = rng.normal(size=(4, 3, 3, 4)), rng.normal(size=(20, 3, 3, 4))
    samples = []
    for pca_sample, seed in ((90, 7), (95, 7), (90, 8)):
        r = _Reads(train)
        prototypes(e, 3, fit_features=r.stream(), pca_sample=pca_sample, random_state=seed)
        assert len(r.asked) == 2 and r.asked[1] == list(range(20))
        assert len(r.asked[0]) == len(set(r.asked[0])) == 10 and r.asked[0] == sorted(r.asked[0])
        samples.append(r.asked[0])
    assert samples[0] == samples[1] != samples[2]
    r = _Reads(train)
    prototypes(e, 3, fit_features=r.stream(), pca_sample=180)  # room for every image: read once, all of them
    assert r.asked == [list(range(20))]


def test_pca_sample_images_counts_whole_images_within_the_budget():
    assert pca_sample_images(20, 9, 90) == pca_sample_images(20, 9, 98) == 10
    assert pca_sample_images(3, 9, 90) == 3  # fewer images than the budget: all of them
    assert pca_sample_images(10, 100, 150) == 1  # one image of 100 cells fits, two do not
    assert pca_sample_images(10, 100, 50) == 1  # at least one image, however large
    assert pca_sample_images(10**6, 1, 100) == 100  # a 1x1 layer: one vector per image


def test_every_position_of_a_large_explanation_set_is_assigned(rng):
    """36,100 vectors, more than two of the blocks E is projected in: three blobs of positions, each
    one prototype, every position assigned to its own (as nearest_prototype() recomputes it)."""
    blob = np.arange(190 * 190).reshape(1, 190, 190) % 3
    f = (np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])[blob] + rng.normal(0, 0.1, (1, 190, 190, 2))).astype(np.float32)
    p = prototypes(f, 3, n_init=1)
    lab = p.assignments.ravel()
    assert sorted(set(zip(blob.ravel().tolist(), lab.tolist(), strict=True))) == [(b, lab[b]) for b in range(3)]
    assert len(set(lab.tolist())) == 3
    np.testing.assert_array_equal(p.assignments, nearest_prototype(f, p))


def test_the_fewest_components_reaching_the_variance_exactly(rng):
    """Two orthogonal directions of equal variance: one component explains exactly 0.5, which is enough
    for variance=0.5 (">= variance"), and not for anything above."""
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], np.float32)
    f = np.tile(v, (4, 1)).reshape(4, 2, 2, 3)
    assert prototypes(f, 2, variance=0.5).pca_components.shape == (1, 3)
    assert prototypes(f, 2, variance=0.5).explained_variance == 0.5
    assert prototypes(f, 2, variance=0.5000001).pca_components.shape == (2, 3)


# --------------------------------------------------------------------------- properties: random shapes and values


@given(st.integers(2, 6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.data())
def test_prototypes_properties(n, h, w, d, data):
    f = data.draw(arrays(np.float32, (n, h, w, d), elements=st.floats(-10, 10, width=32)))
    k = data.draw(st.integers(1, n * h * w))
    f0 = f.copy()
    p = prototypes(f, k=k, n_init=1)
    assert p.assignments.shape == (n, h, w) and p.assignments.max() < k and p.assignments.min() >= 0
    assert np.isfinite(p.centroids).all()
    np.testing.assert_array_equal(f, f0)
