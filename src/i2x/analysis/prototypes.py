"""Stage 2 (Eq. 3): abstract prototypes = K-Means centroids of the final model's PCA-reduced
spatial features, and the per-sample assignment maps A(x). Pure numpy / scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from ..errors import I2XError


@dataclass(frozen=True)
class Prototypes:
    centroids: np.ndarray  # (K, P) in PCA space
    assignments: np.ndarray  # (N, H, W) int32, values in 0..K-1
    pca_components: np.ndarray  # (P, D)
    pca_mean: np.ndarray  # (D,)
    explained_variance: float  # fraction of variance the P components keep
    typical: np.ndarray | None = (
        None  # (K, n, 3) int32: (sample row, u, v) of the positions nearest each centroid; -1 pads
    )

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "centroids": self.centroids,
            "assignments": self.assignments,
            "pca_components": self.pca_components,
            "pca_mean": self.pca_mean,
            "explained_variance": np.float64(self.explained_variance),
            **({} if self.typical is None else {"typical": self.typical}),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Prototypes:
        return cls(
            a["centroids"],
            a["assignments"],
            a["pca_components"],
            a["pca_mean"],
            float(a["explained_variance"]),
            a.get("typical"),
        )


def prototypes(
    features: np.ndarray,
    k: int = 32,
    variance: float = 0.95,
    max_components: int = 64,
    n_init: int = 3,
    random_state: int = 0,
    n_typical: int = 8,
    fit_features: np.ndarray | None = None,
) -> Prototypes:
    """Cluster the H'·W' feature vectors into ``k`` prototypes; assign every position of ``features``.

    features: (N, H', W', D) activations of the target layer of the final model on the
    explanation set. ``fit_features`` (M, H', W', D): fit PCA and K-Means on these instead (the
    paper fits on all training samples, §2.2) and assign ``features`` to the nearest centroid.
    PCA keeps the fewest components that explain ``variance`` of the variance, at most
    ``max_components`` (spec: "95 % variance or 64 components", whichever is smaller).
    """
    x, (n, h, w, d) = _vectors(features), np.shape(features)
    x_fit = x if fit_features is None else _vectors(fit_features)
    if not (1 <= k <= x_fit.shape[0]):
        raise I2XError(
            f"prototypes k={k} must be between 1 and the number of feature vectors ({x_fit.shape[0]} = N·H'·W'); "
            "lower --prototypes"
        )
    q = max(1, min(max_components, d, x_fit.shape[0]))
    pca = PCA(n_components=q, random_state=random_state).fit(x_fit)
    cum = np.nan_to_num(np.cumsum(pca.explained_variance_ratio_), nan=1.0)  # NaN when all features are equal
    p = int(min(q, np.searchsorted(cum, variance - 1e-12) + 1))
    comps = pca.components_[:p]  # (P, D)
    z_fit = (x_fit - pca.mean_) @ comps.T  # (M*H*W, P)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(z_fit)
    z = z_fit if fit_features is None else (x - pca.mean_) @ comps.T  # (N*H*W, P)
    labels = km.labels_ if fit_features is None else km.predict(z.astype(km.cluster_centers_.dtype))
    return Prototypes(
        typical=typical_positions(z, labels, km.cluster_centers_, (n, h, w), n_typical),
        centroids=km.cluster_centers_.astype(np.float32),
        assignments=labels.reshape(n, h, w).astype(np.int32),
        pca_components=comps.astype(np.float32),
        pca_mean=pca.mean_.astype(np.float32),
        explained_variance=float(cum[p - 1]),
    )


def _vectors(features: np.ndarray) -> np.ndarray:
    """(N, H', W', D) -> (N·H'·W', D) float32, checked."""
    features = np.asarray(features)
    if features.ndim != 4:
        raise I2XError(f"features must be (N, H', W', D), got shape {features.shape}")
    x = features.reshape(-1, features.shape[-1]).astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise I2XError("features contain NaN or inf: the final model diverged; lower the learning rate")
    return x


def assign(features: np.ndarray, protos: Prototypes) -> np.ndarray:
    """Assignment maps (N, H', W') of new features to the nearest existing prototype."""
    n, h, w, d = features.shape
    z = (features.reshape(-1, d) - protos.pca_mean) @ protos.pca_components.T
    d2 = ((z[:, None, :] - protos.centroids[None]) ** 2).sum(-1)
    return d2.argmin(1).reshape(n, h, w).astype(np.int32)


def typical_positions(
    z: np.ndarray, labels: np.ndarray, centers: np.ndarray, shape: tuple[int, int, int], n: int = 8
) -> np.ndarray:
    """(K, n, 3) int32: for each prototype, the (sample, u, v) of its ``n`` assigned positions
    nearest the centroid, at most one per sample (so a gallery shows n different images)."""
    _, h, w = shape
    k = centers.shape[0]
    out = np.full((k, n, 3), -1, dtype=np.int32)
    d2 = ((z - centers[labels]) ** 2).sum(1)  # (N*H*W,) distance to own centroid
    for c in range(k):
        pos = np.flatnonzero(labels == c)
        pos = pos[np.argsort(d2[pos], kind="stable")]
        _, first = np.unique(pos // (h * w), return_index=True)  # nearest position of each sample
        pos = pos[np.sort(first)][:n]
        rows, rem = np.divmod(pos, h * w)
        out[c, : len(pos)] = np.stack([rows, rem // w, rem % w], 1)
    return out
