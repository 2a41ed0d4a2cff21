import numpy as np
import pytest

from i2x import I2XError, prototypes
from i2x.analysis.prototypes import assign


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
    np.testing.assert_array_equal(assign(f, p), p.assignments)
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
    with pytest.raises(I2XError, match="--prototypes"):
        prototypes(rng.normal(size=(2, 2, 2, 3)), k=9)


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
    np.testing.assert_array_equal(assign(e, p), p.assignments)
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
