"""Stage 2 (Eq. 3): abstract prototypes = K-Means centroids of the final model's PCA-reduced
spatial features, and the per-sample assignment maps A(x). Pure numpy / scikit-learn."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from ..config import uses_settings
from ..errors import ConfigError, I2XError


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


@dataclass(frozen=True)
class FeatureStream:
    """The final model's features of ``n`` images (the training set), computed a batch at a time so
    they are never held whole: ``batches(indices)`` yields (B, H', W', D) arrays of the images at the
    sorted ``indices``, in order. :func:`i2x.nn.saliency.feature_stream` makes one from a model."""

    n: int
    batches: Callable[[np.ndarray], Iterable[np.ndarray]]

    @classmethod
    def of_array(cls, features: np.ndarray, batch: int = 256) -> FeatureStream:
        """A stream over features already in memory (tests, small data)."""
        return cls(len(features), lambda idx: (features[idx[i : i + batch]] for i in range(0, len(idx), batch)))


# PCA of a streamed fit sees at most this many vectors (a seeded sample of whole images): 64k × 2,048
# channels = 512 MB, 32× more vectors than dimensions; the K-Means sees every vector, projected.
PCA_SAMPLE_VECTORS = 65_536


@uses_settings(k="prototypes", variance="pca_variance", max_components="pca_max_components", random_state="seed")
def prototypes(
    features: np.ndarray,
    k: int = 32,
    variance: float = 0.95,
    max_components: int = 64,
    n_init: int = 3,
    random_state: int = 0,
    n_typical: int = 8,
    fit_features: np.ndarray | FeatureStream | None = None,
    pca_sample: int = PCA_SAMPLE_VECTORS,
) -> Prototypes:
    """Cluster the H'·W' feature vectors into ``k`` prototypes; assign every position of ``features``.

    features: (N, H', W', D) activations of the target layer of the final model on the
    explanation set. ``fit_features`` (M, H', W', D): fit PCA and K-Means on these instead (the
    paper fits on all training samples, §2.2) and assign ``features`` to the nearest centroid; a
    :class:`FeatureStream` is never held whole: PCA is fitted on a seeded sample of its images
    (at most ``pca_sample`` vectors; all of them when it has fewer), every vector is projected as it
    streams, and K-Means runs on the projected vectors. PCA keeps the fewest components that
    explain ``variance`` of the variance, at most ``max_components`` (spec: "95 % variance or 64
    components", whichever is smaller).
    """
    x, (n, h, w, _) = _vectors(features), np.shape(features)
    if fit_features is None:
        pca, p, cum = _pca(x, k, variance, max_components, random_state)
        z_fit = z = _project(x, pca, p)  # (N*H*W, P)
    else:
        stream = fit_features if isinstance(fit_features, FeatureStream) else FeatureStream.of_array(fit_features)
        sample = _pca_sample(stream, h * w, pca_sample, random_state)  # a fresh array: centred in place
        whole = pca_sample_images(stream.n, h * w, pca_sample) == stream.n  # the sample is every vector
        pca, p, cum = _pca(sample, k, variance, max_components, random_state, copy=whole)
        batches = [sample] if whole else (_vectors(b) for b in stream.batches(np.arange(stream.n)))
        z_fit = np.concatenate([_project(b, pca, p) for b in batches])  # one pass over a small training set
        del sample, batches
        _check_k(k, len(z_fit))
        z = _project(x, pca, p)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(z_fit)
    labels = km.labels_ if fit_features is None else km.predict(z.astype(km.cluster_centers_.dtype))
    rank, centers = by_size(km.labels_, km.cluster_centers_)
    labels = rank[labels]
    return Prototypes(
        typical=typical_positions(z, labels, centers, (n, h, w), n_typical),
        centroids=centers.astype(np.float32),
        assignments=labels.reshape(n, h, w).astype(np.int32),
        pca_components=pca.components_[:p].astype(np.float32),
        pca_mean=pca.mean_.astype(np.float32),
        explained_variance=float(cum[p - 1]),
    )


def by_size(fit_labels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prototype numbers that do not depend on K-Means' arbitrary cluster order (issue 24): P-0 is
    the prototype with the most fitted feature vectors, then by decreasing size (ties: the order
    K-Means gave). Returns (new number of each K-Means cluster (K,), centroids in the new order)."""
    k = len(centers)
    order = np.argsort(-np.bincount(fit_labels, minlength=k), kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank, centers[order]


def _check_k(k: int, vectors: int) -> None:
    if not (1 <= k <= vectors):
        raise ConfigError(
            "prototypes", k, f"must be between 1 and the number of feature vectors ({vectors} = N·H'·W'); lower it"
        )


def _pca(x: np.ndarray, k: int, variance: float, max_components: int, random_state: int, copy: bool = True):
    """PCA of the vectors ``x``; (fitted PCA, P = components kept, cumulative variance ratios).
    ``copy=False`` lets scikit-learn centre ``x`` in place (the caller's array is then overwritten)."""
    _check_k(k, x.shape[0])
    q = max(1, min(max_components, x.shape[1], x.shape[0]))
    pca = PCA(n_components=q, random_state=random_state, copy=copy).fit(x)
    cum = np.nan_to_num(np.cumsum(pca.explained_variance_ratio_), nan=1.0)  # NaN when all features are equal
    return pca, int(min(q, np.searchsorted(cum, variance - 1e-12) + 1)), cum


def _project(x: np.ndarray, pca: PCA, p: int, rows: int = 16_384) -> np.ndarray:
    """(x - mean) @ components[:P].T as float32, a block of rows at a time (no copy of all of x)."""
    c = pca.components_[:p].T
    out = np.empty((x.shape[0], p), np.float32)
    for i in range(0, x.shape[0], rows):
        out[i : i + rows] = (x[i : i + rows] - pca.mean_) @ c
    return out


def pca_sample_images(n: int, cells: int, vectors: int = PCA_SAMPLE_VECTORS) -> int:
    """How many of ``n`` images (``cells`` vectors each) a streamed fit's PCA sees: at most ``vectors``."""
    return min(n, max(1, vectors // max(cells, 1)))


def _pca_sample(stream: FeatureStream, cells: int, vectors: int, seed: int) -> np.ndarray:
    """The vectors of a seeded sample of the stream's images, at most ``vectors`` of them (whole images)."""
    m = pca_sample_images(stream.n, cells, vectors)
    idx = np.arange(stream.n) if m == stream.n else np.sort(np.random.default_rng(seed).choice(stream.n, m, False))
    return np.concatenate([_vectors(b) for b in stream.batches(idx)])


def _vectors(features: np.ndarray) -> np.ndarray:
    """(N, H', W', D) -> (N·H'·W', D) float32, checked."""
    features = np.asarray(features)
    if features.ndim != 4:
        raise I2XError(f"features must be (N, H', W', D), got shape {features.shape}")
    x = features.reshape(-1, features.shape[-1]).astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise I2XError("features contain NaN or inf: the final model diverged; lower the learning rate")
    return x


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
