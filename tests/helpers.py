"""Plain helpers shared by several test modules (no fixtures: those are in conftest.py; no tests).

Imported as ``from helpers import ...`` (tests/ is on sys.path: pytest's rootdir conftest)."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from i2x.analysis.explain import pair_explanation
from i2x.config import ExplainConfig, RunConfig

# scikit-learn's 8x8 digits, 2 epochs: a complete real run in a few seconds on 2 CPU cores (10 half-subsamples
# for the stability stage instead of 50: the stage's own tests are in test_stability.py and test_rundir.py)
TINY_RUN_ARGS = (
    "--dataset digits --epochs 2 --every 5 --prototypes 6 --min-cluster-size 5 --device cpu --quiet --no-report "
    "--stability-resamples 10 --explain-fraction 0.1"
).split()


# --------------------------------------------------------------------------- data on disk


def write_fake_cifar(root, n_train=20, n_test=10, seed=0):
    """A tiny cifar-10-batches-py folder: 2 training pickles (as torchvision's, fewer rows) and a test one."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches, start = {}, 0
    for name, n in [*[(f"data_batch_{i}", n_train // 5) for i in range(1, 6)], ("test_batch", n_test)]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        start = 0 if name == "test_batch" else start
        y = [int(v) for v in (start + np.arange(n)) % 10]  # the training batches together hold every class
        start += n
        batches[name] = (x, y)
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": x, b"labels": y}, fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump(
            {
                b"label_names": [
                    c.encode()
                    for c in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
                ]
            },
            fh,
        )
    return batches


def write_imagefolder(root, classes=("a", "b", "c"), per_class=4, size=(12, 10), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / split / c / f"{i}.png")


# --------------------------------------------------------------------------- the report of a run


SECTIONS = ("summary", "prototypes", "classes", "pairs", "dynamics")


def write_finetune(run: Path) -> None:
    """A small ``DIR/finetune`` as ``i2x finetune`` writes it (two schedules, pair 2↔7)."""
    cm = np.zeros((10, 10), int)
    reps = []
    for i, (acc, ab, ba) in enumerate([(0.9, 3, 1), (0.92, 1, 1)]):
        c = cm.copy()
        c[2, 7], c[7, 2] = ab, ba
        reps.append({"seed": i, "accuracy": acc, "confusion": c.tolist()})
    (run / "finetune").mkdir()
    res = {
        "pair": [2, 7],
        "schedules": {"full": {"repeats": reps}, "curated": {"repeats": reps[:1]}},
        "baseline": {"accuracy": 0.91, "confusion": cm.tolist()},
    }
    (run / "finetune" / "results.json").write_text(json.dumps(res))
    (run / "finetune" / "table.md").write_text(
        "# Fine-tuning 2↔7\n\n| schedule | acc % |\n|---|---|\n| full | 91.00 ± 1.41 |\n"
    )


# --------------------------------------------------------------------------- planted significance
# the calibrated explanation on planted truth and on null data (test_explain.py, benchmarks/null_calibration.py)


A, B = 0, 1  # the pair


def planted(seed: int, T: int = 6, n_group: int = 40, K: int = 6, signal: bool = True):
    """Confidences (T+1, N, 3) and intensities (T+1, N, K) of three groups of samples whose
    confidence changes form clear clusters. G1 and G2 move classes A and B in opposite
    directions (which one goes up alternates with the step); G3 does not move. With ``signal``:
    prototype 0 brightens in G1 at every step (so it favours A at even steps and B at odd steps:
    uncertain) and prototype 1 brightens in whichever group raises A (reliable for A).
    Other prototypes (and everything without ``signal``) are noise."""
    rng = np.random.default_rng(seed)
    n = 3 * n_group
    g = np.repeat([0, 1, 2], n_group)
    conf = np.zeros((T + 1, n, 3))
    inten = np.zeros((T + 1, n, K))
    for t in range(T):
        up = 1.0 if t % 2 == 0 else -1.0  # +: G1 raises A; -: G1 raises B
        dp = np.zeros((n, 3))
        dp[g == 0, A], dp[g == 0, B] = 0.2 * up, -0.2 * up
        dp[g == 1, A], dp[g == 1, B] = -0.2 * up, 0.2 * up
        dp += rng.normal(0, 0.005, size=dp.shape)
        di = rng.normal(0, 0.3, size=(n, K))
        if signal:
            di[g == 0, 0] += 1.0
            di[g == (0 if up > 0 else 1), 1] += 1.0
        conf[t + 1] = conf[t] + dp
        inten[t + 1] = inten[t] + di
    labels = np.tile([A, B, 2], n)[:n]  # every group holds samples of every class
    return conf, inten, labels


def pairs_listed(dyn, labels, K):
    contain = np.ones((len(labels), K), dtype=bool)
    listed = 0
    for a, b in itertools.combinations(range(3), 2):
        pe = pair_explanation(dyn.W, contain, labels, a, b, ExplainConfig(top=K), p_pair=dyn.p_pair)
        listed += len(pe["uncertain"]) + len(pe["reliable"])
    return listed


# --------------------------------------------------------------------------- arrays


def equal_arrays(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------- a real run, read back without i2x


class Saved:
    """Everything the run wrote, read with numpy and json only (no i2x loader in between)."""

    def __init__(self, d: Path):
        self.dir = d
        self.manifest = json.loads((d / "manifest.json").read_text())
        self.cfg = RunConfig.from_dict(self.manifest["config"])
        files = sorted((d / "record").glob("ckpt_it*.npz"))
        recs = [_npz(f) for f in files]
        self.iterations = [int(r["iteration"]) for r in recs]
        self.sample_index = recs[0]["sample_index"]
        self.conf = np.stack([r["confidences"] for r in recs]).astype(np.float64)  # (T+1, N, C)
        self.sal = np.stack([r["saliency"] for r in recs]).astype(np.float64)  # (T+1, N, H, W)
        self.es = _npz(d / "record" / "explain_set.npz")
        self.labels = self.es["labels"].astype(np.int64)
        self.ev = _npz(d / "arrays" / "evaluate.npz")
        self.pr = _npz(d / "arrays" / "prototypes.npz")
        self.ia = _npz(d / "arrays" / "intensity.npz")
        self.dy = _npz(d / "arrays" / "dynamics.npz")
        self.ex = json.loads((d / "explanations.json").read_text())
        self.classes = [str(c) for c in self.manifest["data"]["classes"]]
        self.K = int(self.pr["centroids"].shape[0])

    def x_exp(self) -> torch.Tensor:
        """E as the model saw it (stored normalised, float32)."""
        return torch.from_numpy(self.es["images"])


def nearest_prototype(features: np.ndarray, protos) -> np.ndarray:
    """Assignment maps (N, H', W') of ``features`` to the nearest of ``protos``' centroids in its PCA
    space, computed by hand: the reference the prototype stage's assignments are checked against."""
    n, h, w, d = features.shape
    z = (features.reshape(-1, d) - protos.pca_mean) @ protos.pca_components.T
    d2 = ((z[:, None, :] - protos.centroids[None]) ** 2).sum(-1)
    return d2.argmin(1).reshape(n, h, w).astype(np.int32)


# --- the caller's own model through every command (tests/test_own_models.py, tests/test_transformers.py)

CLASSES = ["red", "green", "blue"]


def own_data(n: int = 60, seed: int = 0):
    """3-channel 32x32 images whose class is the brightest colour channel, wrapped in Subsets."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.5
    x[torch.arange(n), y] += 0.5
    ds = torch.utils.data.TensorDataset(x, y)
    ds.classes = CLASSES  # a dataset's own class names travel through Subset
    return torch.utils.data.Subset(ds, range(n))


def round_trip(r, model, test, capsys):
    """explain -> report -> finetune(model=) -> faithfulness(model=) on a finished run."""
    import i2x
    from i2x.cli import main
    from i2x.report import report

    assert main(["explain", str(r.path)]) == 0 and "test accuracy" in capsys.readouterr().out
    assert main(["explain", str(r.path), "--class", "red"]) == 0 and "Class red" in capsys.readouterr().out

    html = report(r.path, svg=False).read_text()
    assert "Class red" in html
    contain, labels = r.arrays("intensity")["contain"], r.explain_set()["labels"]
    k = int(np.argmax(contain[np.isin(labels, (0, 1))].sum(0)))
    res = i2x.finetune(
        r.path,
        model=model,
        test=test,
        pair=("red", "green"),
        prototype=k,
        schedules="curated+full",
        repeats=1,
        controls="random-pair",
        progress=False,
    )
    assert res.names == ("red", "green") and res.test_size == len(test)
    f = i2x.faithfulness(r.path, model=model, random_draws=2, progress=False)
    assert (
        f["summary"]["deletions"] > 0 and json.loads((r.path / "faithfulness.json").read_text())["classes"] == CLASSES
    )
