import numpy as np
import pytest

from i2x import I2XError, containment, intensity


def test_eq4_on_toy_assignment_map():
    a = np.array([[[0, 1], [1, 2]]])  # (N=1, 2, 2)
    s = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # (1, 2, 2)
    # prototype 0: 1; prototype 1: 2 + 3; prototype 2: 4; prototype 3: absent
    np.testing.assert_array_equal(intensity(s, a, 4), [[1.0, 5.0, 4.0, 0.0]])


def test_intensity_over_checkpoints_matches_loop(rng):
    a = rng.integers(0, 5, size=(7, 3, 4))
    s = rng.random((4, 7, 3, 4))  # (T+1, N, H, W)
    got = intensity(s, a, 5)
    assert got.shape == (4, 7, 5)
    for t in range(4):
        for n in range(7):
            for k in range(5):
                assert got[t, n, k] == pytest.approx(s[t, n][a[n] == k].sum())


def test_intensity_sums_to_total_saliency(rng):
    a = rng.integers(0, 3, size=(5, 2, 2))
    s = rng.random((5, 2, 2))
    np.testing.assert_allclose(intensity(s, a, 3).sum(1), s.sum((1, 2)))


def test_intensity_validates_shapes_and_k():
    with pytest.raises(I2XError, match="disagree"):
        intensity(np.zeros((2, 3, 3)), np.zeros((2, 2, 2), int), 2)
    with pytest.raises(I2XError, match="outside"):
        intensity(np.zeros((1, 2, 2)), np.full((1, 2, 2), 3), 2)


def test_containment_any_position_and_quantile():
    a = np.array([[[0, 0], [1, 2]], [[2, 2], [2, 2]]])
    np.testing.assert_array_equal(containment(a, 4), [[1, 1, 1, 0], [0, 0, 1, 0]])
    s = np.array(
        [
            [[0.1, 0.1], [0.9, 0.2]],
            [
                [
                    1,
                    1,
                ],
                [1, 1],
            ],
        ],
        dtype=float,
    )
    # only positions at or above the sample's 75 % quantile count: sample 0 keeps the 0.9 cell (prototype 1)
    np.testing.assert_array_equal(containment(a, 4, s, quantile=0.75), [[0, 1, 0, 0], [0, 0, 1, 0]])
