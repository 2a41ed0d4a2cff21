"""i2x.analysis.intensity (Eq. 4): intensities, containment, saliency density and background
prototypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from i2x import I2XError, containment, explain, intensity
from i2x.analysis.intensity import background_prototypes, saliency_density


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
    np.testing.assert_array_equal(containment(a, 4, quantile=0), [[1, 1, 1, 0], [0, 0, 1, 0]])
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


# --------------------------------------------------------------------------- boundaries, errors and dtypes


def test_mean_reduce_by_hand_with_an_absent_prototype():
    a = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 1]]])
    s = np.array([[[1.0, 3.0], [2.0, 2.0]], [[1.0, 2.0], [3.0, 8.0]]])
    # sample 0: P-0 mean(1, 3) = 2, P-1 mean(2, 2) = 2; sample 1: P-0 mean(1, 2, 3) = 2, P-1 = 8; P-2 absent: 0
    np.testing.assert_allclose(intensity(s, a, 3, "mean"), [[2.0, 2.0, 0.0], [2.0, 8.0, 0.0]])
    np.testing.assert_allclose(intensity(s[None], a, 3, "mean"), [[[2.0, 2.0, 0.0], [2.0, 8.0, 0.0]]])
    np.testing.assert_allclose(intensity(s, a, 3), [[4.0, 4.0, 0.0], [6.0, 8.0, 0.0]])


def test_intensity_errors():
    with pytest.raises(I2XError, match="reduce='max': must be one of sum, mean"):
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
    assert containment(a, 5, quantile=0).dtype == bool and containment(a, 5, quantile=0).tolist() == [
        [True, True, True, True, False]
    ]
    with pytest.raises(I2XError, match=r"^containment\(quantile=0.5\) keeps the positions .* pass saliency="):
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


# -------------------------------------------------------- background prototypes, selective containment, mean intensity


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
    contain = containment(assign, 3, quantile=0)
    assert contain.all()
    ex = explain(np.zeros((2, 3, 2)), contain, labels, np.zeros((2, 2)), background=bg)
    assert ex["background"] == [0]
    assert all(0 not in c["shared"] + c["shared_not_class_specific"] for c in ex["classes"].values())
    # in every sample of every class: shared by the ρ rule, specific to no class
    assert ex["classes"]["0"]["shared"] == [] and ex["classes"]["0"]["shared_not_class_specific"] == [1, 2]
    # top half of each map's cells: only the prototypes that carry the sample's evidence
    sel = containment(assign, 3, sal, 0.5)
    assert sel[:, 1].all() and sel[:, 2].all() and not sel[:, 0].any()


def test_mean_intensity_does_not_favour_large_prototypes():
    assign = np.array([[[0, 0], [0, 1]]])  # prototype 0: three cells, prototype 1: one
    sal = np.array([[[0.2, 0.2], [0.2, 0.5]]])
    np.testing.assert_allclose(intensity(sal, assign, 2, "sum"), [[0.6, 0.5]])
    np.testing.assert_allclose(intensity(sal, assign, 2, "mean"), [[0.2, 0.5]])


# --------------------------------------------------------------------------- properties: random shapes and values


@st.composite
def maps(draw):
    t, n, h, w, k = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 5)),
    )
    s = draw(arrays(np.float32, (t, n, h, w), elements=st.floats(0, 100, width=32)))
    a = draw(arrays(np.int32, (n, h, w), elements=st.integers(0, k - 1)))
    return s, a, k


@given(maps())
def test_intensity_properties(m):
    s, a, k = m
    s0, a0 = s.copy(), a.copy()
    out = intensity(s, a, k)
    assert out.shape == s.shape[:2] + (k,) and np.isfinite(out).all() and (out >= 0).all()
    np.testing.assert_allclose(out.sum(-1), s.astype(np.float64).sum((-1, -2)), rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(a, a0)
    c = containment(a, k, quantile=0)
    assert c.shape == (a.shape[0], k) and c.any(1).all()
