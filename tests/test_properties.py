"""Property tests of the analysis stages: random shapes and values, no crash, no NaN out of
finite input, inputs never mutated."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from i2x import aggregate_clusters, containment, dynamics, explain, intensity, prototypes, ridge

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
settings.register_profile(
    "i2x", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("i2x")


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
    c = containment(a, k)
    assert c.shape == (a.shape[0], k) and c.any(1).all()


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


@given(st.integers(2, 6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.data())
def test_prototypes_properties(n, h, w, d, data):
    f = data.draw(arrays(np.float32, (n, h, w, d), elements=st.floats(-10, 10, width=32)))
    k = data.draw(st.integers(1, n * h * w))
    f0 = f.copy()
    p = prototypes(f, k=k, n_init=1)
    assert p.assignments.shape == (n, h, w) and p.assignments.max() < k and p.assignments.min() >= 0
    assert np.isfinite(p.centroids).all()
    np.testing.assert_array_equal(f, f0)
