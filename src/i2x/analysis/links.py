"""The test behind the pair roles: which prototypes move a pair's confidence, sample by sample.

For every step t, every pair of classes (a, b) and every prototype k, the link is the ridge
coefficient of the samples' intensity change ΔI_t[k] in the regression of their confidence change
towards a rather than b, y_t = Δp_t[a] − Δp_t[b], with one row per sample and both sides centred
within class (class intercepts): only what varies *within* a class is used, so a link is never
the class membership that both sides share. One regression per step explains every class at once:
W_t = (XᵀX + λ·Id)⁻¹ Xᵀ ΔP_t, d_t[k, (a, b)] = W_t[k, a] − W_t[k, b].

The null (H0: within each class, which sample's intensity trajectory goes with which sample's
confidence trajectory is arbitrary) is tested with whole trajectories permuted within class, one
permutation shared by all steps; each d is standardised by its exact permutation standard deviation
(z), and a (pair, prototype) family's statistic is max_t |z_t| (max-T: the steps' dependence kept).
Benjamini-Hochberg over all eligible families of all pairs controls the false discovery rate of
the whole list; inside a selected family, the steps whose max-T adjusted p is below the
Benjamini-Bogomolov level (fdr × selected / tested) are its significant steps; those whose effect
(below) is under ``min_effect`` do not count. A family with counted steps of both signs is
*uncertain* (its link changes direction during training), of one sign *reliable* (the paper's
meanings; the paper also asks an uncertain prototype to be contained in both classes: here a
prototype of one class whose samples' confidence it pushes to a at some steps and to b at others is
uncertain too, and the row says how much of each class contains it).

Every listed item carries an effect size, the standardised coefficient β_t = d_t · sd(ΔI_t[k]) /
sd(y_t) (within class: a 1-SD larger intensity change goes with β SD more confidence towards a),
summarised as its largest |β_t| over its counted steps, with a percentile interval from a class-stratified
bootstrap of the samples. A step counts only when it is significant *and* |β_t| ≥ ``min_effect``: with
many samples every family becomes significant somewhere, and a role is then read from the steps that
matter. Pure numpy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np
from scipy.stats import false_discovery_control

from ..errors import I2XError
from .dynamics import RIDGE_LAMBDA, _blocks, _check_inputs, step_penalty, within_class_permutations


@dataclass(frozen=True)
class Links:
    """Everything the pair roles are read from; every (T, K, P) array is indexed by step, prototype and
    pair ``pairs[j] = (a, b)``, a < b (d > 0 favours a)."""

    pairs: np.ndarray  # (P, 2)
    z: np.ndarray  # (T, K, P) d_t standardised by its permutation sd
    beta: np.ndarray  # (T, K, P) standardised within-class coefficient
    p_step: np.ndarray  # (T, K, P) max-T adjusted p of each step inside its family
    p_family: np.ndarray  # (K, P) permutation p of max_t |z_t| (1 for families not tested)
    q: np.ndarray  # (K, P) Benjamini-Hochberg adjusted p over the tested families (1 for the others)
    tested: np.ndarray  # (K, P) bool: eligible families (contained in either class, not background)
    steps: np.ndarray  # (T, K, P) int8: sign of each significant step whose |β| ≥ min_effect, 0 elsewhere
    role: np.ndarray  # (K, P) int8: 0 none, 1 reliable, 2 uncertain (from ``steps``)
    effect: np.ndarray  # (K, P) the item's effect (NaN without a role)
    ci: np.ndarray  # (K, P, 2) its bootstrap percentile interval (NaN without bootstrap)
    step_level: float  # the Benjamini-Bogomolov level a step's p must not exceed
    fdr: float
    min_effect: float
    permutations: int
    bootstrap: int

    def index(self, a: int, b: int) -> tuple[int, int]:
        """(column of the pair, sign): d of (a, b) is sign × the column (the column holds min → max)."""
        lo, hi = min(a, b), max(a, b)
        hit = np.flatnonzero((self.pairs[:, 0] == lo) & (self.pairs[:, 1] == hi))
        if not len(hit):
            raise I2XError(f"pair ({a}, {b}) is not among the tested pairs")
        return int(hit[0]), 1 if a < b else -1

    @property
    def score(self) -> np.ndarray:
        """(K, P) what a pair's list is ordered by: the lower end of the effect's bootstrap interval (the
        effect the data support at 97.5 %), the effect itself where there is no interval. On two disjoint
        explanation sets of 2,500 images the top 5 per pair ordered so agreed more than by the effect (the
        reported pairs' (pair, prototype) items 0.77-0.88 against 0.58-0.77; docs/RESULTS.md)."""
        low = self.ci[..., 0]
        return np.where(np.isfinite(low), low, self.effect)

    def ranked(self, j: int, code: int | None = None) -> list[int]:
        """Pair column ``j``'s listed prototypes (of role ``code``, or all), best :attr:`score` first."""
        listed = self.role[:, j] > 0 if code is None else self.role[:, j] == code
        return sorted(np.flatnonzero(listed).tolist(), key=lambda k: (-self.score[k, j], k))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Links:
        conv = {"step_level": float, "fdr": float, "min_effect": float, "permutations": int, "bootstrap": int}
        return cls(**{f.name: conv.get(f.name, np.asarray)(a[f.name]) for f in fields(cls)})


def _onehot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, S) class indicator and (S,) class sizes, over the classes present."""
    _, inv, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    M = np.zeros((len(labels), len(sizes)))
    M[np.arange(len(labels)), inv] = 1.0
    return M, sizes


def _centre(x: np.ndarray, M: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """x (..., N, D) minus its class means (M (N, S) indicator)."""
    return x - M @ ((M.T @ x) / sizes[:, None])


class _Fits:
    """The centred regressions of every step: A_t = (XᵀX + λ·Id)⁻¹Xᵀ (K, N) on X = centred ΔI / scale,
    and the centred confidence changes Y_t (N, C), so that any permutation's d is A_t Y_t[π]."""

    def __init__(self, p: np.ndarray, inten: np.ndarray, labels: np.ndarray, lam: float):
        M, sizes = _onehot(labels)
        dp, di = _centre(np.diff(p, axis=0), M, sizes), _centre(np.diff(inten, axis=0), M, sizes)
        T, N, K = di.shape
        self.Y, self.A, self.sd_x = dp, np.zeros((T, K, N)), di.std(axis=1)  # (T, N, C), (T, K, N), (T, K)
        for t in range(T):
            s, lam_n, _ = step_penalty(di[t], lam)
            X = di[t] / s
            self.A[t] = np.linalg.solve(X.T @ X + lam_n * np.eye(K), X.T) / s
        self.M, self.w = M, np.where(sizes > 1, 1.0 / np.maximum(sizes - 1, 1), 0.0)


def _pair_cols(C: int) -> tuple[np.ndarray, np.ndarray]:
    ia, ib = np.array(list(itertools.combinations(range(C), 2)), dtype=np.int64).reshape(-1, 2).T
    return ia, ib


def _observed(f: _Fits, ia, ib) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d (T, K, P), its exact within-class permutation sd (T, K, P) and β (T, K, P)."""
    W = f.A @ f.Y  # (T, K, C)
    d = W[:, :, ia] - W[:, :, ib]
    y = f.Y[:, :, ia] - f.Y[:, :, ib]  # (T, N, P), centred within class
    # Var_π(Σ_i A_ki y_π(i)) = Σ_classes Σ_i∈s A_ki² · Σ_i∈s y_i² / (n_s − 1) (A's rows sum to 0 in a class)
    sa = np.einsum("tkn,ns->tks", f.A**2, f.M)
    sy = np.einsum("tnp,ns->tsp", y**2, f.M) * f.w[None, :, None]
    sd = np.sqrt(np.maximum(sa @ sy, 0.0))
    sd_y = y.std(axis=1)  # (T, P)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(sd_y[:, None, :] > 0, d * f.sd_x[:, :, None] / sd_y[:, None, :], 0.0)
    return d, sd, beta


def _inverse_sd(sd: np.ndarray) -> np.ndarray:
    """1 / sd, 0 where sd is (numerically) 0: a link that no permutation can move is z = 0. Computed once
    per test, so that every permutation's z is one product."""
    tiny = 1e-12 * max(float(sd.max(initial=0.0)), 1e-300)
    return np.where(sd > tiny, 1.0 / np.where(sd > tiny, sd, 1.0), 0.0)


def pair_links(
    confidences: np.ndarray,
    intensities: np.ndarray,
    labels: np.ndarray,
    *,
    eligible: np.ndarray | None = None,
    lam: float = RIDGE_LAMBDA,
    permutations: int = 999,
    fdr: float = 0.05,
    min_effect: float = 0.0,
    bootstrap: int = 200,
    seed: int = 0,
) -> Links:
    """The pair roles of every (pair, prototype) family (module docstring).

    confidences (T+1, N, C), intensities (T+1, N, K), labels (N,) the samples' classes. ``eligible``
    (K, P) bool: the families tested (default all), e.g. prototypes contained in either class of the
    pair and not background. ``lam``: the ridge λ relative to the step's mean per-sample
    energy (as :func:`i2x.analysis.dynamics.ridge_penalty`). ``permutations``: within-class
    permutations of whole trajectories; ``fdr``: the false discovery rate of the list;
    ``min_effect``: the smallest |β_t| of a step that counts; ``bootstrap``: class-stratified
    resamples for each item's interval (0: none). Seeded by ``seed``."""
    p, inten = _check_inputs(confidences, intensities)
    y = np.asarray(labels)
    if y.shape != (p.shape[1],):
        raise I2XError(f"labels {y.shape} must be (N,) = ({p.shape[1]},)")
    if permutations < 1:
        raise I2XError(f"permutations={permutations} must be ≥ 1: the pair roles are a permutation test")
    if not 0 < fdr < 1:
        raise I2XError(f"fdr={fdr} must lie in (0, 1)")
    T, K, C = p.shape[0] - 1, inten.shape[2], p.shape[2]
    ia, ib = _pair_cols(C)
    P = len(ia)
    tested = np.ones((K, P), bool) if eligible is None else np.asarray(eligible, bool)
    if tested.shape != (K, P):
        raise I2XError(f"eligible {tested.shape} must be (K, P) = ({K}, {P})")
    f = _Fits(p, inten, y, lam)
    d, sd, beta = _observed(f, ia, ib)
    inv = _inverse_sd(sd)  # (T, K, P)
    z = d * inv
    t_obs = np.abs(z).max(axis=0) if T else np.zeros((K, P))  # (K, P)
    rng = np.random.default_rng([seed, 36])
    null = _null_maxima(f, y, inv, ia, ib, permutations, rng)  # (B, K, P) max_t |z_t| of every draw
    null.sort(axis=0)
    p_family = np.where(tested, max_t_pvalues(null, t_obs[None])[0], 1.0)
    p_step = max_t_pvalues(null, np.abs(z))
    q = np.ones((K, P))
    if tested.any():
        q[tested] = false_discovery_control(p_family[tested], method="bh")  # Benjamini-Hochberg adjusted p
    selected = tested & (q <= fdr)
    m, R = int(tested.sum()), int(selected.sum())
    step_level = fdr * R / m if m else 0.0
    significant = selected[None] & (p_step <= step_level * (1 + 1e-9))  # (T, K, P)
    steps = np.where(significant & (np.abs(beta) >= min_effect), np.sign(z), 0).astype(np.int8)
    role = np.where((steps > 0).any(0) & (steps < 0).any(0), 2, np.where((steps != 0).any(0), 1, 0)).astype(np.int8)
    effect = np.where(role > 0, item_effect(beta, steps), np.nan)
    ci = np.full((K, P, 2), np.nan)
    if bootstrap and (role > 0).any():
        ci = _bootstrap(p, inten, y, lam, steps, role, bootstrap, ia, ib, np.random.default_rng([seed, 36, 1]))
    return Links(
        np.stack([ia, ib], 1), z.astype(np.float32), beta.astype(np.float32), p_step.astype(np.float32),
        p_family, q, tested, steps, role, effect, ci, float(step_level), float(fdr),
        float(min_effect), int(permutations), int(bootstrap),
    )  # fmt: skip


def _null_maxima(f: _Fits, y: np.ndarray, inv: np.ndarray, ia, ib, permutations: int, rng) -> np.ndarray:
    """max_t |z_t| (B, K, P) of ``permutations`` draws of whole trajectories permuted within class (one
    permutation shared by all steps). Per step and chunk of draws: the class-wise gather of Y's rows, one
    product with A, one with the pair contrast; in float32 (the null's values agree with float64 to
    ~1e-5, three times faster at 1,250 samples, twice at 5,000), the observed statistics stay float64."""
    T, K, N = f.A.shape
    C, P = f.Y.shape[2], len(ia)
    Yt = np.ascontiguousarray(f.Y.transpose(0, 2, 1), dtype=np.float32)  # (T, C, N)
    At = np.ascontiguousarray(f.A.transpose(0, 2, 1), dtype=np.float32)  # (T, N, K)
    inv_t = np.ascontiguousarray(inv.transpose(0, 2, 1), dtype=np.float32)  # (T, P, K)
    contrast = np.zeros((P, C), np.float32)  # d = W[:, a] − W[:, b] for every pair at once
    contrast[np.arange(P), ia], contrast[np.arange(P), ib] = 1.0, -1.0
    null = np.zeros((permutations, K, P))
    chunk = int(max(1, min(256, 2e7 // max(1, N * C))))
    for start in range(0, permutations, chunk):
        perm = within_class_permutations(y, min(chunk, permutations - start), rng)  # (b, N)
        b = len(perm)
        mx = np.zeros((P, b, K), np.float32)
        for t in range(T):
            Wb = np.take(Yt[t], perm, axis=1).reshape(C * b, N) @ At[t]  # (C·b, K): W of every draw
            d = (contrast @ Wb.reshape(C, b * K)).reshape(P, b, K)
            np.abs(d, out=d)
            d *= inv_t[t][:, None, :]
            np.maximum(mx, d, out=mx)
        null[start : start + b] = mx.transpose(1, 2, 0)
    return null


def max_t_pvalues(null: np.ndarray, observed: np.ndarray, exact_below: int = 10, tail: int = 250) -> np.ndarray:
    """Permutation p-values of ``observed`` (L, *F) against the sorted null draws ``null`` (B, *F):
    (1 + #{null ≥ observed}) / (1 + B) where at least ``exact_below`` draws reach it; beyond (where a
    plain count cannot resolve the p-values an error rate over many families needs, 1 / (B + 1) at
    best), the tail of a generalized Pareto distribution fitted to the top ``tail`` draws (at most a
    quarter of B) by probability-weighted moments (Hosking & Wallis 1987; the tail approximation of
    Knijnenburg et al. 2009 and of FSL's PALM). Its shape is capped at the exponential tail, never a
    bounded one: for maxima of normal statistics that overstates p (2-16x at p = 1e-3 to 1e-5), it
    never understates it."""
    B = null.shape[0]
    count = (null[None] >= observed[:, None] * (1 - 1e-9)).sum(1)  # observed (L, *F)
    p = (1 + count) / (1 + B)
    n = min(tail, B // 4)
    if n < 10:
        return p
    u = (null[B - n - 1] + null[B - n]) / 2  # the threshold between the body and the top n
    x = null[B - n :] - u  # (n, *F) exceedances, ascending
    pj = (np.arange(1, n + 1) - 0.35) / n
    a0, a1 = x.mean(0), np.einsum("n,n...->...", 1 - pj, x) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        k = a0 / (a0 - 2 * a1) - 2
        sigma = np.where(k > 0, a0, 2 * a0 * a1 / (a0 - 2 * a1))  # k > 0 (a bounded tail): exponential instead
        k = np.minimum(k, 0.0)
        over = np.maximum(observed - u, 0.0)
        surv = np.where(k < -1e-9, (1 - k * over / sigma) ** (1 / np.where(k < -1e-9, k, -1.0)), np.exp(-over / sigma))
    tail_p = n / B * np.where(sigma > 0, surv, 0.0)
    return np.where((count < exact_below) & (observed > u), np.minimum(p, np.maximum(tail_p, 1e-300)), p)


def item_effect(beta: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(..., K, P) an item's effect: its largest |β_t| (β (..., T, K, P)) over its counted ``steps``
    (T, K, P) signs, in the direction each step was counted with; NaN where no step counts."""
    b = np.where(steps != 0, np.asarray(beta, dtype=np.float64) * steps, -np.inf).max(axis=-3)
    return np.where((steps != 0).any(0), b, np.nan)


def _bootstrap(p, inten, y, lam, steps, role, n, ia, ib, rng) -> np.ndarray:
    """(K, P, 2) 2.5 / 97.5 % percentiles of each listed item's effect over ``n`` class-stratified
    bootstrap resamples of the samples (its significant steps and their signs held fixed)."""
    order = np.argsort(y, kind="stable")
    blocks = _blocks(y[order])
    used = np.flatnonzero((steps != 0).any(axis=(1, 2)))  # the steps any item needs
    z = np.concatenate([np.diff(inten, axis=0)[used], np.diff(p, axis=0)[used]], axis=2)  # (T', N, K + C)
    items = role > 0
    eff = np.empty((n, int(items.sum())))
    for r in range(n):
        idx = np.concatenate([order[lo:hi][rng.integers(0, hi - lo, hi - lo)] for lo, hi in blocks])
        eff[r] = item_effect(_betas(z[:, idx], blocks, inten.shape[2], lam, ia, ib), steps[used])[items]
    ci = np.full((*role.shape, 2), np.nan)
    ci[items] = np.percentile(eff, [2.5, 97.5], axis=0).T
    return ci


def _betas(z: np.ndarray, blocks, K: int, lam: float, ia, ib) -> np.ndarray:
    """β (T, K, P) of :func:`_observed` from the steps' changes z = [ΔI, Δp] (T, N, K + C) whose samples
    lie in class ``blocks`` (start, end), from their cross-products alone (the bootstrap's fast path):
    W = (SxxΔ + λ s² Id)⁻¹ Sxy with s² = trace(Sxx) / (N K), the ridge of :func:`step_penalty`."""
    starts = np.array([lo for lo, _ in blocks])
    sizes = np.diff(np.r_[starts, z.shape[1]])
    z = z - np.repeat(np.add.reduceat(z, starts, axis=1) / sizes[None, :, None], sizes, axis=1)
    S = z.transpose(0, 2, 1) @ z  # (T, K + C, K + C)
    Sxx, Sxy, Syy = S[:, :K, :K], S[:, :K, K:], S[:, K:, K:]
    var_x = np.diagonal(Sxx, axis1=1, axis2=2)  # (T, K), × N
    s2 = var_x.sum(1) / (z.shape[1] * K)
    s2 = np.where(s2 > 0, s2, 1.0)
    W = np.linalg.solve(Sxx + lam * s2[:, None, None] * np.eye(K), Sxy)  # (T, K, C)
    var_y = Syy[:, ia, ia] + Syy[:, ib, ib] - 2 * Syy[:, ia, ib]  # (T, P), × N
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(var_x[:, :, None] / np.where(var_y > 0, var_y, 1.0)[:, None, :])
        return np.where(var_y[:, None, :] > 0, (W[:, :, ia] - W[:, :, ib]) * ratio, 0.0)


def eligibility(contain: np.ndarray, labels: np.ndarray, n_classes: int, min_contain: float, background=None):
    """(K, P) bool over the pairs of :func:`pair_links`: prototype k is tested for the pair when it is
    contained in ≥ ``min_contain`` of either class's samples and is not ``background`` (a prototype
    absent from both classes cannot move them)."""
    x, y = np.asarray(contain, dtype=np.float64), np.asarray(labels)
    frac = np.stack([x[y == c].mean(0) if (y == c).any() else np.zeros(x.shape[1]) for c in range(n_classes)])
    ia, ib = _pair_cols(n_classes)
    fa, fb = frac[ia].T >= min_contain - 1e-12, frac[ib].T >= min_contain - 1e-12  # (K, P)
    fg = np.zeros(x.shape[1], bool) if background is None else np.asarray(background, bool)
    return (fa | fb) & ~fg[:, None]


def run_links(
    confidences, intensities, contain, labels, cfg, *, lam: float = RIDGE_LAMBDA, permutations: int, seed: int,
    background=None, bootstrap: int | None = None,
) -> Links:  # fmt: skip
    """:func:`pair_links` with a run's explanation rules ``cfg`` (an :class:`~i2x.config.ExplainConfig`:
    alpha as the false discovery rate, min_pair_contain, min_effect, bootstrap) and its ridge λ: what the
    explain stage and every half-subsample of the stability stage compute."""
    eligible = eligibility(contain, labels, np.shape(confidences)[2], cfg.min_pair_contain, background)
    return pair_links(
        confidences, intensities, labels, eligible=eligible, lam=lam, permutations=permutations,
        fdr=cfg.alpha, min_effect=cfg.min_effect, bootstrap=cfg.bootstrap if bootstrap is None else bootstrap,
        seed=seed,
    )  # fmt: skip
