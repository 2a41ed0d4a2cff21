"""Stages 4-6 (Eq. 5-8): cluster confidence changes with HDBSCAN, aggregate each cluster's
confidence and intensity change, and regress one on the other with ridge regression.

Pure numpy / scikit-learn; inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import HDBSCAN

from ..config import AGGREGATES, NULLS, uses_settings
from ..errors import DivergedError, I2XError

RIDGE_LAMBDA = 10.0  # the ridge λ of Eq. 8 (relative to the step's mean per-sample energy) when none is given


def confidence_clusters(delta_p: np.ndarray, min_cluster_size: int = 10, min_samples: int | None = None) -> np.ndarray:
    """Eq. 5: HDBSCAN labels (N,) of confidence changes Δp (N, C); −1 = noise.

    Fewer samples than ``min_cluster_size`` (or all identical) cannot form a cluster: all noise.
    """
    x = np.asarray(delta_p, dtype=np.float64)
    if x.ndim != 2:
        raise I2XError(f"delta_p must be (N, C), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DivergedError("confidence changes contain NaN or inf: the model diverged; lower the learning rate")
    n = x.shape[0]
    if n < max(2, min_cluster_size):
        return np.full(n, -1, dtype=np.int64)
    if np.ptp(x, axis=0).max() == 0.0:
        # identical points: HDBSCAN's distances are all zero; one cluster of everything
        return np.zeros(n, dtype=np.int64)
    hdb = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
    return hdb.fit_predict(x).astype(np.int64)


def aggregate_clusters(
    delta_p: np.ndarray, delta_i: np.ndarray, labels: np.ndarray, tau: float = 0.05, relative: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 6-7: per cluster m, ΔP_m = mean Δp and ΔI_m = mean ΔI over its members; noise (−1)
    is dropped. Entries |ΔI_m[k]| < τ are zeroed (τ relative to max_k |ΔI_m[k]| by default).
    The same code as every step of :func:`dynamics` (and of its permutation null).

    Returns (ΔP (M, C), ΔI (M, K), cluster ids (M,)).
    """
    step = _Step(np.asarray(labels))
    P, I = _aggregate(step, np.asarray(delta_p, dtype=np.float64), np.asarray(delta_i, dtype=np.float64), tau, relative)
    return P, I[0], step.ids


def ridge(delta_i: np.ndarray, delta_p: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Eq. 8: W = (ΔIᵀΔI + λ·Id)⁻¹ ΔIᵀ ΔP, shape (K, C); no intercept; λ absolute."""
    di = np.asarray(delta_i, dtype=np.float64)
    dp = np.asarray(delta_p, dtype=np.float64)
    if lam <= 0:
        raise I2XError(f"ridge lambda={lam} must be > 0")
    return ridge_batch(di[None], dp, np.array([float(lam)]))[0]


def ridge_batch(I: np.ndarray, P: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Eq. 8 for a batch: I (B, M, K), P (M, C), lam (B,) -> W (B, K, C).

    Solves the smaller of the two equivalent systems: (IᵀI + λ·Id_K) W = IᵀP when M > K, else
    W = Iᵀ (IIᵀ + λ·Id_M)⁻¹ P (the same W, by the push-through identity). Rows of zeros give W = 0.
    """
    B, M, K = I.shape
    if M == 0:
        return np.zeros((B, K, P.shape[1]))
    It = I.transpose(0, 2, 1)  # (B, K, M)
    if M > K:
        G = It @ I + lam[:, None, None] * np.eye(K)
        return np.linalg.solve(G, It @ P)
    G = I @ It + lam[:, None, None] * np.eye(M)
    return It @ np.linalg.solve(G, np.broadcast_to(P, (B, M, P.shape[1])))


def ridge_penalty(delta_i: np.ndarray, lam: float, scale: str = "relative") -> float:
    """The ridge λ of one step, in the units of ΔI (what :class:`Dynamics` reports as ``lam``):
    ``absolute`` = ``lam``; ``relative`` = ``lam`` × the mean per-sample energy of the step's
    intensity changes, mean_i ‖ΔI_i‖² / K (the mean eigenvalue of the per-sample ΔIᵀΔI / N). W then
    does not change with the scale of the intensities, and λ does not change when the samples are
    permuted (what the permutation test needs). An all-zero ΔI gets λ = 1 (its W is 0 whatever λ).
    The fits themselves run on ΔI / :func:`intensity_scale` (:func:`step_penalty`)."""
    return step_penalty(delta_i, lam, scale)[2]


def step_penalty(delta_i: np.ndarray, lam: float, scale: str = "relative") -> tuple[float, float, float]:
    """The one computation of a step's ridge λ: (s, λ / s², λ) — the RMS size s of the step's
    intensity changes (:func:`intensity_scale`), the λ of the fit on ΔI / s, and the same λ in
    ΔI's own units (reported). W(ΔI, λ) = W(ΔI / s, λ / s²) / s."""
    _check_scale(scale)
    s = intensity_scale(delta_i)
    if scale == "absolute":
        return s, min(lam / s**2, 1e300), float(lam)
    d = np.asarray(delta_i, dtype=np.float64)
    # relative: λ = lam · s², so on ΔI / s the fit's λ is lam itself
    return s, lam, lam * s * s if d.size and np.abs(d).max() > 0 else 1.0


def _check_scale(scale: str) -> None:
    """One check for both readers of the λ scale (a misspelt one fitted with one λ and reported the other)."""
    if scale not in ("relative", "absolute"):
        raise I2XError(f"lam_scale={scale!r} must be 'relative' or 'absolute' (the ridge λ's scale)")


def intensity_scale(delta_i: np.ndarray) -> float:
    """The RMS size of a step's intensity changes, sqrt(mean_i ‖ΔI_i‖² / K) (1 for none), computed
    without squaring tiny numbers. Fits run on ΔI / scale with λ / scale², so that changes of
    1e-156 cannot underflow λ (W(ΔI, λ) = W(ΔI / s, λ / s²) / s)."""
    d = np.asarray(delta_i, dtype=np.float64)
    if not d.size:
        return 1.0
    m = np.abs(d).max()
    if m == 0 or not np.isfinite(m):
        return 1.0
    return float(m * np.sqrt(((d / m) ** 2).sum(1).mean() / d.shape[1]))


def clusters_with_fallback(delta_p: np.ndarray, min_cluster_size: int = 10) -> tuple[np.ndarray, int]:
    """HDBSCAN labels of Δp and how they were found: 0 = at ``min_cluster_size``; 1 = at a smaller
    size (halved down to 2, ``min_samples=1``); 2 = no cluster at any size: one cluster of all
    samples. A step is never left without clusters while it has ≥ 1 sample."""
    labels = confidence_clusters(delta_p, min_cluster_size)
    if (labels >= 0).any() or len(labels) == 0:
        return labels, 0
    m = min_cluster_size
    while m > 2:
        m = max(2, m // 2)
        labels = confidence_clusters(delta_p, m, min_samples=1)
        if (labels >= 0).any():
            return labels, 1
    return np.zeros(len(labels), dtype=np.int64), 2


class _Step:
    """One step's clusters, so that the cluster means of the observed rows and of any batch of draws of
    the permutation null are one indicator matrix and one matrix product (the same arithmetic for both)."""

    def __init__(self, labels: np.ndarray):
        labels = np.asarray(labels)
        self.ids, index, self.sizes = np.unique(labels[labels >= 0], return_inverse=True, return_counts=True)
        self.index = np.full(len(labels), -1, dtype=np.int64)  # sample i -> its cluster's position (-1: noise)
        self.index[labels >= 0] = index
        self.singletons = bool(len(self.ids) == len(labels) and (self.sizes == 1).all())  # aggregate="samples"

    def means(self, x: np.ndarray, null: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Cluster means (B, M, D) of x (N, D): of the observed clusters (B = 1), or of ``null`` =
        (of_row (B, N), rows (N,)) from :meth:`draws`, where row ``rows[j]`` of x is in cluster
        position ``of_row[b, j]`` (-1: in none)."""
        of_row, x = (self.index[None], x) if null is None else (null[0], x[null[1]])
        M = len(self.ids)
        if not M:
            return np.zeros((len(of_row), 0, x.shape[1]))
        member = (of_row[:, None, :] == np.arange(M)[None, :, None]).astype(x.dtype)  # (B, M, N)
        return (member @ x) / self.sizes[None, :, None]

    def draws(self, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The null's draws for :meth:`means` from sample permutations ``perm`` (B, N) (as
        :func:`within_class_permutations` gives): row i's ΔI goes to the cluster of sample perm[b, i], which
        is ΔI's rows permuted among the samples with the clusters kept (a uniform within-class permutation
        and its inverse have one law)."""
        return self.index[perm], np.arange(len(self.index))


def within_class_permutations(labels: np.ndarray, n: int, rng) -> np.ndarray:
    """``n`` permutations (n, N) of the samples, each uniform within every class of ``labels`` (one class
    for all: a permutation of all samples): row i of a draw is the sample whose values sample i gets."""
    y = np.asarray(labels)
    order = np.argsort(y, kind="stable")
    out = np.empty((n, len(y)), dtype=np.int64)
    for lo, hi in _blocks(y[order]):
        out[:, order[lo:hi]] = rng.permuted(np.broadcast_to(order[lo:hi], (n, hi - lo)), axis=1)
    return out


def _blocks(sorted_values: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal values in a sorted array."""
    edges = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1, len(sorted_values)]
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _threshold(I: np.ndarray, tau: float, relative: bool = True) -> np.ndarray:
    """Eq. 7's τ on cluster means I (B, M, K): relative to each cluster's largest |ΔI_m[k]|, or absolute."""
    thr = tau * np.abs(I).max(axis=2, keepdims=True) if relative else tau
    return np.where(np.abs(I) < thr, 0.0, I)


def _aggregate(step: _Step, dp, di, tau, relative: bool = True, null=None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 6-7 for one step: ΔP (M, C) and thresholded ΔI (B, M, K), of the observed rows or of the draws
    ``null`` of :meth:`_Step.draws`."""
    return step.means(dp)[0], _threshold(step.means(di, null), tau, relative)  # the confidence side never moves


def _fit(step: _Step, dp, di, tau, lam: float, null=None) -> np.ndarray:
    """Eq. 6-8 for one step: W (B, K, C), one per draw of ``null`` (one for the observed rows)."""
    if step.singletons and len(step.ids) > di.shape[1]:
        return _fit_samples(dp, di, tau, lam, null)
    P, I = _aggregate(step, dp, di, tau, null=null)
    return ridge_batch(I, P, np.full(len(I), lam))


def _fit_samples(dp, di, tau, lam: float, null=None) -> np.ndarray:
    """:func:`_fit` when every sample is its own group (N > K): Eq. 7's τ acts on each row alone and a
    permutation only reorders the rows, so ΔIᵀΔI, and with it A = (ΔIᵀΔI + λ·Id)⁻¹ ΔIᵀ, is the same for
    every draw: W_b = A ΔP_b, one (K, N) solve per step instead of one per draw (the same W)."""
    I = _threshold(di[None], tau)[0]  # (N, K)
    A = np.linalg.solve(I.T @ I + lam * np.eye(I.shape[1]), I.T)  # (K, N)
    if null is None:
        return (A @ dp)[None]
    # draw b gives row rows[j] of ΔI the place of_row[b, j]: W_b = Σ_j A[:, rows[j]] ΔP[of_row[b, j]]
    of_row, rows = null
    return np.einsum("kj,bjc->bkc", A[:, rows], dp[of_row], optimize=True)


def permutation_pvalues(step: _Step, dp, di, W, tau, lam: float, perm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Two-sided permutation p-values of W (K, C) and of every pair contribution
    d[k, a, b] = W[k, a] − W[k, b] (K, C, C) over the sample permutations ``perm`` (B, N) of
    :func:`within_class_permutations`. The rows of ΔI are permuted (HDBSCAN labels, a function of Δp
    alone, stay): over all samples (H0: ΔI is independent of Δp — which class membership alone
    rejects, since both depend on the class), or within each class (H0: within each class, a sample's
    ΔI is independent of its Δp: what the class explains is kept, so a rejection is a link beyond class
    membership). p = (1 + #{|null| ≥ |observed|}) / (1 + B)."""
    K, C = W.shape
    n_perm = len(perm)
    ia, ib = np.triu_indices(C, 1)  # |d[k, a, b]| = |d[k, b, a]|: count each pair once
    bar_w, bar_d = np.abs(W) * (1 - 1e-9), np.abs(W[:, ia] - W[:, ib]) * (1 - 1e-9)
    cw, cd = np.zeros((K, C)), np.zeros((K, len(ia)))
    chunk = int(max(1, min(128, 2e7 // (K * C * C))))
    for start in range(0, n_perm, chunk):
        Wb = _fit(step, dp, di, tau, lam, step.draws(perm[start : start + chunk]))  # (b, K, C)
        cw += (np.abs(Wb) >= bar_w).sum(0)
        cd += (np.abs(Wb[:, :, ia] - Wb[:, :, ib]) >= bar_d).sum(0)
    p_d = np.ones((K, C, C))  # d[k, a, a] = 0: p = 1
    p_d[:, ia, ib] = p_d[:, ib, ia] = (1 + cd) / (1 + n_perm)
    return (1 + cw) / (1 + n_perm), p_d


@dataclass(frozen=True)
class Dynamics:
    W: np.ndarray  # (T, K, C) ridge coefficients per step t -> t+1
    labels: np.ndarray  # (T, N) HDBSCAN labels per step
    n_clusters: np.ndarray  # (T,) clusters per step
    flagged: np.ndarray  # (T,) True where no cluster could be formed (W_t = 0)
    class_delta: np.ndarray  # (T, C) mean change of class c's confidence over class-c samples (NaN if absent)
    fallback: np.ndarray | None = None  # (T,) 0 HDBSCAN as set, 1 smaller min_cluster_size, 2 one cluster of all
    lam: np.ndarray | None = None  # (T,) the ridge λ used at each step
    p_W: np.ndarray | None = None  # (T, K, C) permutation p-value of W_t[k, c] under ``null``
    p_pair: np.ndarray | None = None  # (T, K, C, C) permutation p-value of d_t[k] = W_t[k, a] − W_t[k, b]
    permutations: int = 0
    null: str = "all"  # the stratum of p_W / p_pair: within-class (the samples' classes) or all samples
    p_W_class: np.ndarray | None = None  # (T, K, C) with null within-class: the all-sample p-values too
    p_pair_class: np.ndarray | None = None  # (T, K, C, C) (class-level association, not a sample-level link)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "W": self.W,
            "labels": self.labels,
            "n_clusters": self.n_clusters,
            "flagged": self.flagged,
            "class_delta": self.class_delta,
            "permutations": np.int64(self.permutations),
            "null": np.array(self.null),
        }
        for name in ("fallback", "lam", "p_W", "p_pair", "p_W_class", "p_pair_class"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Dynamics:
        return cls(
            a["W"],
            a["labels"],
            a["n_clusters"],
            a["flagged"],
            a["class_delta"],
            a.get("fallback"),
            a.get("lam"),
            a.get("p_W"),
            a.get("p_pair"),
            int(a.get("permutations", 0)),
            str(a.get("null", "all")),
            a.get("p_W_class"),
            a.get("p_pair_class"),
        )

    def coverage(self) -> float:
        """Share of the total |class-confidence change| (summed over steps and classes) that
        falls in steps with a fitted W_t (not flagged)."""
        cd = np.nan_to_num(np.abs(self.class_delta))
        return float(cd[~self.flagged].sum() / cd.sum()) if cd.sum() > 0 else 1.0


@uses_settings(
    min_cluster_size="min_cluster_size", tau="tau", lam="ridge_lambda", lam_scale="ridge_scale",
    fallback="cluster_fallback", permutations="permutations", seed="seed", null="permutation_null",
    aggregate="aggregate",
)  # fmt: skip
def dynamics(
    confidences: np.ndarray,
    intensities: np.ndarray,
    labels: np.ndarray | None = None,
    min_cluster_size: int = 10,
    tau: float = 0.05,
    lam: float = RIDGE_LAMBDA,
    *,
    lam_scale: str = "relative",
    fallback: bool = True,
    permutations: int = 999,
    seed: int = 0,
    null: str = "within-class",
    class_level: bool = True,
    aggregate: str = "clusters",
    progress=None,
) -> Dynamics:
    """Stages 4-6 over every step. confidences (T+1, N, C), intensities (T+1, N, K); ``labels``
    (N,) true classes, only used for ``class_delta``. ``lam_scale``: ``relative``
    (:func:`ridge_penalty`, scale-free) or ``absolute``. ``fallback``: a step where HDBSCAN finds no cluster
    is clustered again (:func:`clusters_with_fallback`) instead of W_t = 0. ``permutations`` > 0
    adds permutation p-values (:func:`permutation_pvalues`), drawn once for all steps, seeded by ``seed``: ``null``
    ``within-class`` permutes within the classes ``labels`` (``p_W`` / ``p_pair``: a link beyond
    class membership) and also over all samples (``p_W_class`` / ``p_pair_class``: the class-level
    association, with the stream ``null="all"`` uses; ``class_level=False`` skips them); ``all``
    permutes over all samples only. ``aggregate``: the rows of Eq. 8: ``clusters`` (the paper: HDBSCAN
    clusters of Δp, Eq. 5-6) or ``samples`` (every sample is its own group, no HDBSCAN: Eq. 6-8 on the N
    samples; docs/METHOD.md has why and what it changes)."""
    p, inten = _check_inputs(confidences, intensities)
    if aggregate not in AGGREGATES:
        raise I2XError(f"aggregate={aggregate!r} must be one of {', '.join(AGGREGATES)}")
    _check_scale(lam_scale)
    if null not in NULLS:
        raise I2XError(f"null={null!r} must be one of {', '.join(NULLS)}")
    if null == "within-class" and permutations and labels is None:
        raise I2XError(
            f"the p-values (permutations={permutations}) permute within the classes: pass labels= (or "
            "permutations=0 for W without p-values, or null='all')"
        )
    within = null == "within-class" and permutations > 0
    class_level = class_level and within
    T, n, c = p.shape[0] - 1, p.shape[1], p.shape[2]
    T, k = max(T, 0), inten.shape[2]
    W, labs = np.zeros((T, k, c)), np.full((T, n), -1, dtype=np.int64)
    ncl, fb, lams = np.zeros(T, dtype=np.int64), np.zeros(T, dtype=np.int8), np.zeros(T)
    p_W = np.ones((T, k, c), dtype=np.float32) if permutations else None
    p_pair = np.ones((T, k, c, c), dtype=np.float32) if permutations else None
    p_W_class, p_pair_class = (np.ones_like(p_W), np.ones_like(p_pair)) if class_level else (None, None)
    # one set of draws shared by every step (as in the pair roles' test), drawn once
    draws_all, draws_within = None, None
    if permutations and (class_level or not within):
        draws_all = within_class_permutations(np.zeros(n), permutations, np.random.default_rng([seed]))
    if within:
        draws_within = within_class_permutations(labels, permutations, np.random.default_rng([seed, 1]))
    for t in range(T) if progress is None else progress(range(T)):
        dp, di = p[t + 1] - p[t], inten[t + 1] - inten[t]  # (N, C), (N, K)
        if aggregate == "samples":
            labs[t] = np.arange(n)
        elif fallback:
            labs[t], fb[t] = clusters_with_fallback(dp, min_cluster_size)
        else:
            labs[t] = confidence_clusters(dp, min_cluster_size)
        step = _Step(labs[t])
        sc, lam_n, lams[t] = step_penalty(di, lam, lam_scale)  # the λ fitted on ΔI / sc, and reported
        di_n = di / sc  # unit RMS: W(ΔI, λ) = W(ΔI / s, λ / s²) / s
        ncl[t] = len(step.ids)
        W_n = _fit(step, dp, di_n, tau, lam_n)[0]
        W[t] = W_n / sc
        if permutations and ncl[t]:  # p-values do not depend on the scale: computed on ΔI / s
            fit = (step, dp, di_n, W_n, tau, lam_n)
            if class_level or not within:
                all_samples = permutation_pvalues(*fit, draws_all)
                if not within:
                    p_W[t], p_pair[t] = all_samples
                else:
                    p_W_class[t], p_pair_class[t] = all_samples
            if within:
                p_W[t], p_pair[t] = permutation_pvalues(*fit, draws_within)
    cd, fb = _class_delta(p, labels), fb if fallback else None
    return Dynamics(W, labs, ncl, ncl == 0, cd, fb, lams, p_W, p_pair, permutations, null, p_W_class, p_pair_class)


def _check_inputs(confidences, intensities) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(confidences, dtype=np.float64)
    inten = np.asarray(intensities, dtype=np.float64)
    if p.ndim != 3 or inten.ndim != 3 or p.shape[:2] != inten.shape[:2]:
        raise I2XError(f"confidences {p.shape} and intensities {inten.shape} must be (T+1, N, C) and (T+1, N, K)")
    if not np.all(np.isfinite(p)) or not np.all(np.isfinite(inten)):
        bad = "confidences" if not np.all(np.isfinite(p)) else "saliency/intensities"
        raise DivergedError(f"{bad} contain NaN or inf: the model diverged; lower the learning rate")
    return p, inten


def _class_delta(p: np.ndarray, labels) -> np.ndarray:
    """(T, C) mean change of class c's confidence over the class-c samples (NaN without labels/samples)."""
    cd = np.full((max(p.shape[0] - 1, 0), p.shape[2]), np.nan)
    if labels is not None:
        y = np.asarray(labels)
        for cls in range(p.shape[2]):
            m = y == cls
            if m.any():
                cd[:, cls] = (p[1:, m, cls] - p[:-1, m, cls]).mean(1)
    return cd
