"""Stage 3 (Eq. 4): prototype intensity I_t(x)[k] = Σ_{(u,v): A(x)[u,v] = k} S_t(x)[u,v] (or the
mean over those cells), which prototypes a sample contains, and which prototypes are background."""

from __future__ import annotations

import numpy as np

from ..config import uses_settings
from ..errors import I2XError


@uses_settings(reduce="intensity_reduce")
def intensity(saliency: np.ndarray, assignments: np.ndarray, k: int, reduce: str = "sum") -> np.ndarray:
    """Saliency over the positions assigned to each prototype: their ``sum`` (Eq. 4 as printed)
    or their ``mean`` (0 where the sample has no cell of the prototype).

    saliency: (..., N, H', W') (e.g. (T+1, N, H', W') for all checkpoints);
    assignments: (N, H', W') ints in 0..k-1. Returns (..., N, k) float64.
    """
    s = np.asarray(saliency)
    a = np.asarray(assignments)
    if s.shape[-3:] != a.shape:
        raise I2XError(f"saliency {s.shape} and assignments {a.shape} disagree: both need (N, H', W') last")
    if a.size and (a.min() < 0 or a.max() >= k):
        raise I2XError(f"assignments hold values outside 0..{k - 1}: pass the k the prototypes were fitted with")
    lead = s.shape[:-3]
    n = a.shape[0]
    s2 = s.reshape(-1, n, a.shape[1] * a.shape[2])  # (L, N, HW)
    L = s2.shape[0]
    # one bincount over flat (l, n, k) bins: exact sums, no (N, HW, K) one-hot in memory
    bins = (np.arange(L)[:, None, None] * n + np.arange(n)[None, :, None]) * k + a.reshape(1, n, -1)
    out = np.bincount(bins.ravel(), weights=s2.astype(np.float64).ravel(), minlength=L * n * k).reshape(L, n, k)
    if reduce == "mean":
        cells = np.bincount((np.arange(n)[:, None] * k + a.reshape(n, -1)).ravel(), minlength=n * k).reshape(n, k)
        out = out / np.maximum(cells, 1)
    return out.reshape(*lead, n, k)


@uses_settings(quantile="contain_quantile")
def containment(
    assignments: np.ndarray, k: int, saliency: np.ndarray | None = None, quantile: float = 0.75
) -> np.ndarray:
    """(N, k) bool: sample x contains prototype k when A(x) has ≥ 1 position equal to k among the positions
    that carry its evidence: with ``saliency`` (N, H', W', usually the final checkpoint's) and ``quantile``
    q, the positions whose saliency is ≥ the q-quantile of that sample's map, and > 0. ``quantile=0``:
    any position (the paper's literal reading; ``saliency`` is then not needed).
    """
    a = np.asarray(assignments)
    n = a.shape[0]
    mask = np.ones(a.shape, dtype=bool)
    if quantile:
        if saliency is None:
            raise I2XError(
                f"containment(quantile={quantile}) keeps the positions in the top of each saliency map: pass "
                "saliency= (the final checkpoint's maps), or quantile=0 for any position"
            )
        thr = np.quantile(np.asarray(saliency).reshape(n, -1), quantile, axis=1)[:, None, None]
        mask = (np.asarray(saliency) >= thr) & (np.asarray(saliency) > 0)
    out = np.zeros((n, k), dtype=bool)
    rows = np.broadcast_to(np.arange(n)[:, None, None], a.shape)
    out[rows[mask], a[mask]] = True
    return out


def saliency_density(assignments: np.ndarray, saliency: np.ndarray, k: int) -> np.ndarray:
    """(k,) mean saliency per cell of each prototype over all samples, relative to the mean
    saliency per cell of the whole map (1 = average; 0 = carries none; NaN = no cell)."""
    a, s = np.asarray(assignments).ravel(), np.asarray(saliency, dtype=np.float64).ravel()
    cells = np.bincount(a, minlength=k)
    per_cell = np.bincount(a, weights=s, minlength=k) / np.maximum(cells, 1)
    mean = s.mean() if s.size and s.mean() > 0 else 1.0
    return np.where(cells > 0, per_cell / mean, np.nan)


@uses_settings(threshold="background_saliency")
def background_prototypes(density: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(k,) bool: prototypes whose cells carry less than ``threshold`` of the average saliency per
    cell (or have no cell): the model does not look there, whatever their area."""
    return ~(np.nan_to_num(density, nan=0.0) >= threshold)
