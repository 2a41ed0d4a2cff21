"""Stages 4-6 (Eq. 5-8): cluster confidence changes with HDBSCAN, aggregate each cluster's
confidence and intensity change, and regress one on the other with ridge regression.

Pure numpy / scikit-learn; inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import HDBSCAN
from sklearn.linear_model import Ridge

from ..errors import DivergedError, I2XError


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

    Returns (ΔP (M, C), ΔI (M, K), cluster ids (M,)).
    """
    dp = np.asarray(delta_p, dtype=np.float64)
    di = np.asarray(delta_i, dtype=np.float64)
    labels = np.asarray(labels)
    ids = np.unique(labels[labels >= 0])
    P = np.stack([dp[labels == m].mean(0) for m in ids]) if len(ids) else np.zeros((0, dp.shape[1]))
    I = np.stack([di[labels == m].mean(0) for m in ids]) if len(ids) else np.zeros((0, di.shape[1]))
    thr = tau * np.abs(I).max(axis=1, keepdims=True) if relative else np.full((len(ids), 1), tau)
    I = np.where(np.abs(I) < thr, 0.0, I)
    return P, I, ids


def ridge(delta_i: np.ndarray, delta_p: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Eq. 8: W = (ΔIᵀΔI + λ·Id)⁻¹ ΔIᵀ ΔP, shape (K, C); no intercept."""
    di = np.asarray(delta_i, dtype=np.float64)
    dp = np.asarray(delta_p, dtype=np.float64)
    if lam <= 0:
        raise I2XError(f"ridge lambda={lam} must be > 0")
    if di.shape[0] == 0:
        return np.zeros((di.shape[1], dp.shape[1]))
    coef = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(di, dp).coef_
    return coef.reshape(dp.shape[1], di.shape[1]).T.copy()  # sklearn drops the target axis when C == 1


@dataclass(frozen=True)
class Dynamics:
    W: np.ndarray  # (T, K, C) ridge coefficients per step t -> t+1
    labels: np.ndarray  # (T, N) HDBSCAN labels per step
    n_clusters: np.ndarray  # (T,) clusters found per step
    flagged: np.ndarray  # (T,) True where no cluster was found (W_t = 0)
    class_delta: np.ndarray  # (T, C) mean change of class c's confidence over class-c samples (NaN if absent)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "W": self.W,
            "labels": self.labels,
            "n_clusters": self.n_clusters,
            "flagged": self.flagged,
            "class_delta": self.class_delta,
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Dynamics:
        return cls(a["W"], a["labels"], a["n_clusters"], a["flagged"], a["class_delta"])


def dynamics(
    confidences: np.ndarray,
    intensities: np.ndarray,
    labels: np.ndarray | None = None,
    min_cluster_size: int = 10,
    tau: float = 0.05,
    lam: float = 1.0,
    progress=None,
) -> Dynamics:
    """Stages 4-6 over every step. confidences (T+1, N, C), intensities (T+1, N, K);
    ``labels`` (N,) true classes, only used for ``class_delta``."""
    p = np.asarray(confidences, dtype=np.float64)
    inten = np.asarray(intensities, dtype=np.float64)
    if p.ndim != 3 or inten.ndim != 3 or p.shape[:2] != inten.shape[:2]:
        raise I2XError(f"confidences {p.shape} and intensities {inten.shape} must be (T+1, N, C) and (T+1, N, K)")
    if not np.all(np.isfinite(p)) or not np.all(np.isfinite(inten)):
        bad = "confidences" if not np.all(np.isfinite(p)) else "saliency/intensities"
        raise DivergedError(f"{bad} contain NaN or inf: the model diverged; lower the learning rate")
    T, n, c = p.shape[0] - 1, p.shape[1], p.shape[2]
    k = inten.shape[2]
    W = np.zeros((max(T, 0), k, c))
    labs = np.full((max(T, 0), n), -1, dtype=np.int64)
    ncl = np.zeros(max(T, 0), dtype=np.int64)
    steps = range(T) if progress is None else progress(range(T))
    for t in steps:
        dp = p[t + 1] - p[t]  # (N, C)
        di = inten[t + 1] - inten[t]  # (N, K)
        labs[t] = confidence_clusters(dp, min_cluster_size)
        P, I, ids = aggregate_clusters(dp, di, labs[t], tau)
        ncl[t] = len(ids)
        W[t] = ridge(I, P, lam)
    cd = np.full((max(T, 0), c), np.nan)
    if labels is not None:
        y = np.asarray(labels)
        for cls in range(c):
            m = y == cls
            if m.any():
                cd[:, cls] = (p[1:, m, cls] - p[:-1, m, cls]).mean(1)
    return Dynamics(W, labs, ncl, ncl == 0, cd)
