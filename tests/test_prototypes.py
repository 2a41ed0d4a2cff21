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
