"""The samples test behind the pair roles (i2x.analysis.links): its parts against their definitions,
then planted truth at the default explanation-set size — a within-class link of r = 0.3 at two steps is
listed as uncertain (opposite signs) or reliable (one sign) in ≥ 80 % of seeds — and null data (no link)
that lists nothing in ≥ 95 % of seeds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from i2x.analysis.links import (
    Links,
    _betas,
    _blocks,
    _Fits,
    _observed,
    _pair_cols,
    eligibility,
    max_t_pvalues,
    pair_links,
    within_class_permutations,
)

PAIR, PROTO, STEPS = (4, 9), 3, (2, 9)


def planted_links(seed: int, r=0.3, signs=(1, -1), n_class=50, C=10, K=32, T=16, pair=PAIR, steps=STEPS):
    """Records of an explanation set shaped like the demo's (E = 500: 10 classes of 50, 32 prototypes, 16
    steps): confidence changes with a class part and heavy-tailed (Student t, 3 df) within-class noise that
    shrinks 20-fold over training; intensity changes with a class part, a factor shared by all prototypes
    and their own noise. At STEPS, prototype PROTO's within-class intensity change is correlated
    r × sign with the confidence change towards PAIR[0] rather than PAIR[1] (r = 0 or signs 0: null data)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_class)
    N = len(y)
    scale = np.geomspace(1.0, 0.05, T)[:, None, None]
    dp = (0.1 * rng.normal(size=(T, C, C))[:, y] + 0.05 * rng.standard_t(3, size=(T, N, C))) * scale
    di = rng.normal(size=(T, C, K))[:, y] + 0.7 * rng.normal(size=(T, N, 1)) + rng.normal(size=(T, N, K))

    def centred(v):
        return v - np.array([v[y == c].mean() for c in range(C)])[y]

    a, b = pair
    for t, s in zip(steps, signs, strict=True):
        u, e = centred(dp[t, :, a] - dp[t, :, b]), centred(di[t, :, PROTO])
        sd = e.std()
        di[t, :, PROTO] += (s * r * u / u.std() + np.sqrt(1 - r * r) * e / sd) * sd - e
    conf = np.concatenate([np.zeros((1, N, C)), np.cumsum(dp, 0)])
    inten = np.concatenate([np.zeros((1, N, K)), np.cumsum(di, 0)])
    return conf, inten, y


def _links(seed: int, **kw) -> Links:
    conf, inten, y = planted_links(seed, **kw)
    return pair_links(conf, inten, y, permutations=499, bootstrap=0, seed=seed, min_effect=0.1)


def test_permutations_keep_every_class():
    y = np.repeat([2, 0, 1], [5, 7, 1])[np.random.default_rng(0).permutation(13)]
    perm = within_class_permutations(y, 200, np.random.default_rng(1))
    assert perm.shape == (200, 13)
    assert all(sorted(p) == list(range(13)) for p in perm)  # permutations
    assert (y[perm] == y[None]).all()  # within class
    assert len({tuple(p) for p in perm}) > 100


def test_the_permutation_sd_is_exact():
    """d's sd under within-class permutation of the confidences, from the closed form, equals the sd over
    many drawn permutations (and its mean is 0: the statistic is centred)."""
    conf, inten, y = planted_links(0, n_class=12, C=4, K=5, T=3, pair=(0, 1), steps=(0, 1))
    ia, ib = _pair_cols(4)
    f = _Fits(conf, inten, y, 10.0)
    d, sd, _ = _observed(f, ia, ib)
    perm = within_class_permutations(y, 20000, np.random.default_rng(2))
    Wb = np.einsum("kn,bnc->bkc", f.A[1], f.Y[1][perm])
    db = Wb[:, :, ia] - Wb[:, :, ib]
    np.testing.assert_allclose(db.std(0), sd[1], rtol=0.03)
    assert np.abs(db.mean(0)).max() < 0.03 * sd[1].max()


def test_bootstrap_effects_equal_the_fitted_ones():
    conf, inten, y = planted_links(1, n_class=20, C=5, K=6, T=4, pair=(0, 1), steps=(0, 1))
    ia, ib = _pair_cols(5)
    beta = _observed(_Fits(conf, inten, y, 10.0), ia, ib)[2]
    z = np.concatenate([np.diff(inten, axis=0), np.diff(conf, axis=0)], axis=2)  # y is sorted: classes are blocks
    np.testing.assert_allclose(_betas(z, _blocks(y), 6, 10.0, ia, ib), beta, atol=1e-12)


def test_tail_pvalues_count_in_the_body_and_never_understate_the_tail():
    """Against the maximum of 16 |N(0, 1)| (exact survival 1 − (2Φ(t) − 1)^16): plain counts where ≥ 10 draws
    reach the value; beyond, the fitted tail is between the truth and 20 times it."""
    rng = np.random.default_rng(0)
    null = np.sort(np.abs(rng.normal(size=(999, 50, 16))).max(-1), axis=0)  # 50 families
    t = np.array([2.0, 3.5, 4.0, 4.5, 5.0])
    p = max_t_pvalues(null, np.broadcast_to(t[:, None], (5, 50)))
    true = 1 - (2 * stats.norm.cdf(t) - 1) ** 16
    counts = (null[None] >= t[:, None, None]).sum(1)
    np.testing.assert_allclose(p[0], (1 + counts[0]) / 1000)  # the body: a count
    for i in range(2, 5):
        assert (p[i] >= 0.9 * true[i]).all() and np.median(p[i]) <= 20 * true[i], (t[i], true[i], p[i])


def test_a_planted_link_of_opposite_signs_is_uncertain():
    hits, false_share = 0, []
    for seed in range(10):
        L = _links(seed)
        j = L.index(*PAIR)[0]
        hits += L.role[PROTO, j] == 2
        assert set(np.flatnonzero(L.steps[:, PROTO, j])) <= set(STEPS)
        # true links: the planted prototype on the pairs that share a class with the planted pair (their
        # confidence changes share that class's); anything else listed is a false discovery
        listed = list(zip(*np.nonzero(L.role), strict=True))
        false = [(k, jj) for k, jj in listed if k != PROTO or not set(L.pairs[jj].tolist()) & set(PAIR)]
        false_share.append(len(false) / max(1, len(listed)))
    assert hits >= 8, hits
    assert np.mean(false_share) <= 0.1, false_share  # the false discovery rate is 0.05


def test_a_planted_link_of_one_sign_is_reliable_and_favours_its_class():
    hits = 0
    for seed in range(10):
        L = _links(seed, signs=(1, 1))
        j, sign = L.index(*PAIR)
        hits += L.role[PROTO, j] == 1 and (sign * L.steps[:, PROTO, j] >= 0).all()
        assert np.isfinite(L.effect[PROTO, j]) == (L.role[PROTO, j] > 0)
    assert hits >= 8, hits


def test_null_data_lists_nothing_in_95_percent_of_seeds():
    listed = [int((_links(seed, r=0.0).role > 0).sum()) for seed in range(100, 120)]
    assert sum(n > 0 for n in listed) <= 1, listed


def test_effect_interval_covers_the_effect_and_min_effect_drops_steps():
    conf, inten, y = planted_links(3)
    L = pair_links(conf, inten, y, permutations=199, bootstrap=100, seed=3, min_effect=0.1)
    j = L.index(*PAIR)[0]
    lo, hi = L.ci[PROTO, j]
    assert lo <= L.effect[PROTO, j] <= hi and 0.15 < L.effect[PROTO, j] < 0.5  # r = 0.3 planted
    big = pair_links(conf, inten, y, permutations=199, bootstrap=0, seed=3, min_effect=0.9)
    assert not big.role.any() and not big.steps.any()  # nothing in this data reaches β = 0.9


def test_eligibility_needs_containment_in_either_class_and_no_background():
    y = np.repeat([0, 1, 2], 10)
    contain = np.zeros((30, 3), bool)
    contain[:10, 0] = True  # prototype 0: in class 0 only
    contain[:, 1] = True  # prototype 1: everywhere, but background
    el = eligibility(contain, y, 3, 0.05, background=np.array([False, True, False]))
    pairs = [tuple(p) for p in np.stack(_pair_cols(3), 1).tolist()]  # (0, 1), (0, 2), (1, 2)
    assert el[0].tolist() == [True, True, False] and not el[1].any() and not el[2].any()
    assert pairs == [(0, 1), (0, 2), (1, 2)]


def test_links_round_trip_and_pair_order():
    L = _links(0)
    back = Links.from_arrays({k: np.asarray(v) for k, v in L.to_arrays().items()})
    assert back.fdr == L.fdr and back.permutations == 499
    np.testing.assert_array_equal(back.role, L.role)
    assert L.index(9, 4) == (L.index(4, 9)[0], -1)
    with pytest.raises(Exception, match="pair"):
        L.index(4, 11)


def test_a_pair_list_is_ordered_by_the_lower_end_of_the_effect_interval():
    """Prototype 0 has the larger effect but the wider interval; prototype 1's effect is supported higher:
    it comes first. Without intervals (bootstrap 0) the effect orders."""
    T, K, P = 2, 3, 1
    zero = np.zeros((T, K, P))
    role = np.array([[1], [2], [0]], np.int8)
    effect = np.array([[0.6], [0.5], [np.nan]])
    ci = np.array([[[0.2, 0.9]], [[0.4, 0.6]], [[np.nan, np.nan]]])
    links = Links(
        np.array([[0, 1]]), zero, zero, zero, np.ones((K, P)), np.ones((K, P)), np.ones((K, P), bool),
        zero.astype(np.int8), role, effect, ci, 0.05, 0.05, 0.1, 99, 200,
    )  # fmt: skip
    assert links.ranked(0) == [1, 0] and links.ranked(0, 1) == [0] and links.score[2, 0] != links.score[2, 0]
    no_ci = replace(links, ci=np.full((K, P, 2), np.nan))
    assert no_ci.ranked(0) == [0, 1]
