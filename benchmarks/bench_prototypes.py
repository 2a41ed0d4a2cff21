"""Prototype fitting at the paper's MNIST size: wall time and peak memory, K-Means libraries side by side.

The paper fits its prototypes on the final model's features of all 60,000 training images
(ResNet-50 ``layer4``: 4x4 cells x 2,048 channels = 983,040 vectors, 8 GB as float32). i2x streams
them (``i2x.prototypes(..., fit_features=FeatureStream)``): PCA on a seeded sample of 65,536
vectors, every vector projected to <= 64 components as it streams, K-Means on the projected
vectors, the explanation set (6,000 images) assigned to the centroids. Features here are
synthetic (32 planted patterns in a 16-dimensional subspace of the 2,048 channels, plus noise),
made batch by batch from a seed so that no pass holds them whole.

1. ``i2x`` — the whole streamed fit, in a fresh process: wall time and peak RSS (``ru_maxrss``).
2. K-Means alone on the same projected vectors, each candidate in turn: scikit-learn ``KMeans``
   (what i2x uses, n_init=3), ``MiniBatchKMeans`` (n_init=3, batch 4,096) and ``faiss.Kmeans``
   (nredo=3, 25 iterations; skipped when faiss-cpu is not installed): wall time, inertia, and the
   adjusted Rand index of each partition against scikit-learn's and against the planted patterns.

    .venv/bin/python benchmarks/bench_prototypes.py            # the paper's size (~5 min here)
    .venv/bin/python benchmarks/bench_prototypes.py --quick    # 6,000 training images (smoke run)
    .venv/bin/python benchmarks/bench_prototypes.py --no-kmeans   # the i2x fit only (1.)
    .venv/bin/python benchmarks/bench_prototypes.py --run runs/demo   # 2. on a run's real training features
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

CELLS, D, LATENT, K_TRUE = 16, 2048, 16, 32
BATCH = 512


def _basis():
    rng = np.random.default_rng(1234)
    mix = rng.normal(size=(LATENT, D)).astype(np.float32) / np.sqrt(LATENT)
    centers = rng.normal(0, 3.0, size=(K_TRUE, LATENT)).astype(np.float32)
    return mix, centers


def _batch(b: int, size: int, mix, centers, with_truth: bool = False):
    """Features (size, 4, 4, D) of batch ``b``, the same every time it is asked for."""
    rng = np.random.default_rng(b)
    which = rng.integers(0, K_TRUE, size=(size, 4, 4))
    z = centers[which] + rng.standard_normal((size, 4, 4, LATENT), dtype=np.float32)
    x = z @ mix + 0.3 * rng.standard_normal((size, 4, 4, D), dtype=np.float32)
    return (x, which) if with_truth else x


def stream(n: int):
    from i2x.analysis.prototypes import FeatureStream

    mix, centers = _basis()

    def batches(idx):
        # rows of the synthetic training set in order: batch b holds rows [b*BATCH, (b+1)*BATCH)
        for b in np.unique(idx // BATCH):
            rows = idx[(idx >= b * BATCH) & (idx < (b + 1) * BATCH)] - b * BATCH
            yield _batch(int(b), BATCH, mix, centers)[rows]

    return FeatureStream(n, batches)


def child(n: int, n_e: int, k: int) -> None:
    """The i2x fit in this (fresh) process; prints one JSON line."""
    from i2x.analysis.prototypes import prototypes

    mix, centers = _basis()
    e = np.empty((n_e, 4, 4, D), np.float32)  # E: other images of the same patterns, made a batch at a time
    for i in range(0, n_e, BATCH):
        e[i : i + BATCH] = _batch(10**6 + i, min(BATCH, n_e - i), mix, centers)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    t = time.perf_counter()
    p = prototypes(e, k=k, n_init=3, random_state=0, fit_features=stream(n))
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_gib": rss,
                "rss_before_gib": before,
                "components": int(p.pca_components.shape[0]),
            }
        )
    )


def synthetic_projected(n: int):
    """The benchmark's training vectors projected as i2x projects them, and their planted patterns."""
    from sklearn.decomposition import PCA

    mix, centers = _basis()
    s = stream(n)
    sample_idx = np.sort(np.random.default_rng(0).choice(n, min(n, 65_536 // CELLS), replace=False))
    pca = PCA(64, random_state=0).fit(np.concatenate([b.reshape(-1, D) for b in s.batches(sample_idx)]))
    zs, truth = [], []
    for b in range((n + BATCH - 1) // BATCH):
        x, w = _batch(b, min(BATCH, n - b * BATCH), mix, centers, with_truth=True)
        zs.append(pca.transform(x.reshape(-1, D)).astype(np.float32))
        truth.append(w.ravel())
    return np.concatenate(zs), np.concatenate(truth)


def run_projected(run_dir: str):
    """A real run's training-set features, projected with the run's own PCA (no planted truth)."""
    import i2x
    from i2x.data import splits_for
    from i2x.rundir import Run

    r = Run(run_dir)
    x, _ = splits_for(r.config).train.tensors()
    f = i2x.features(i2x.load_model(run_dir), x, layer=r.manifest["model"]["layer"])
    pr = r.arrays("prototypes")
    return ((f.reshape(-1, f.shape[-1]) - pr["pca_mean"]) @ pr["pca_components"].T).astype(np.float32), None


def kmeans_side_by_side(z: np.ndarray, truth: np.ndarray | None, k: int) -> list[dict]:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import adjusted_rand_score

    rows = []

    def timed(name, fit):
        t = time.perf_counter()
        labels, centroids = fit()
        wall = time.perf_counter() - t
        inertia = float(((z - centroids[labels]) ** 2).sum())
        rows.append({"name": name, "wall_s": wall, "inertia": inertia, "labels": labels})

    def sk():
        km = KMeans(k, n_init=3, random_state=0).fit(z)
        return km.labels_, km.cluster_centers_

    def mb():
        km = MiniBatchKMeans(k, n_init=3, random_state=0, batch_size=4096).fit(z)
        return km.predict(z), km.cluster_centers_

    timed("scikit-learn KMeans (i2x)", sk)
    timed("scikit-learn MiniBatchKMeans", mb)
    try:
        import faiss

        def fa():
            km = faiss.Kmeans(z.shape[1], k, niter=25, nredo=3, seed=0, max_points_per_centroid=10**9)
            km.train(z)
            return km.index.search(z, 1)[1].ravel(), km.centroids

        timed(f"faiss Kmeans {faiss.__version__}", fa)
    except ImportError:
        rows.append({"name": "faiss (not installed)"})
    ref = rows[0]["labels"]
    for r in rows:
        if "labels" in r:
            r["ari_vs_sklearn"] = adjusted_rand_score(ref, r["labels"])
            r["ari_vs_planted"] = np.nan if truth is None else adjusted_rand_score(truth, r["labels"])
            del r["labels"]
    return rows


def print_table(rows: list[dict]) -> None:
    print("| library | wall (s) | inertia | ARI vs scikit-learn KMeans | ARI vs planted |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "wall_s" not in r:
            print(f"| {r['name']} | | | | |")
            continue
        print(
            f"| {r['name']} | {r['wall_s']:.1f} | {r['inertia']:.4g} | {r['ari_vs_sklearn']:.3f} | "
            f"{r['ari_vs_planted']:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6,000 training images instead of 60,000")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--no-kmeans", action="store_true", help="the i2x fit only, not the K-Means comparison")
    ap.add_argument("--run", metavar="DIR", help="compare the K-Means libraries on a run's real training features")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.child // 10, a.k)
    if a.run:
        z, _ = run_projected(a.run)
        print(f"{a.run}: {z.shape[0]:,} training vectors projected to {z.shape[1]} components; K = {a.k}")
        return print_table(kmeans_side_by_side(z, None, a.k))
    n = 6000 if a.quick else 60000
    print(
        f"training images {n:,} x {CELLS} cells = {n * CELLS:,} vectors of {D:,} channels "
        f"({n * CELLS * D * 4 / 2**30:.1f} GiB as float32); E = {n // 10:,} images; K = {a.k}"
    )
    out = subprocess.run([sys.executable, __file__, "--child", str(n), "--k", str(a.k)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"\ni2x.prototypes streamed: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB "
        f"(of which {r['rss_before_gib']:.2f} GiB before the fit: E's features and the interpreter), "
        f"{r['components']} PCA components   (targets: <= 300 s, <= 4 GiB)"
    )
    if a.no_kmeans:
        return
    print("\nK-Means alone on the same projected vectors:")
    print_table(kmeans_side_by_side(*synthetic_projected(n), a.k))


if __name__ == "__main__":
    main()
