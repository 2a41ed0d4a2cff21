"""Data sources: CIFAR-10 (pickle and ImageFolder layouts), ImageFolder trees, torch Datasets, subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_fake_cifar, write_imagefolder

from i2x.data import (
    CIFAR10_MEAN,
    Dataset,
    from_torch,
    load_cifar10_split,
    load_splits,
    stratified_split,
)
from i2x.errors import I2XError


def test_cifar10_pickle_layout(tmp_path):
    batches = write_fake_cifar(tmp_path)
    tr = load_cifar10_split(tmp_path, train=True)
    te = load_cifar10_split(tmp_path, train=False)
    assert tr.images.shape == (20, 3, 32, 32) and tr.images.dtype == np.uint8
    assert te.images.shape == (10, 3, 32, 32)
    # row-major 3072 = 3 x 32 x 32 (torchvision's reshape), batches in order
    np.testing.assert_array_equal(tr.images[0], batches["data_batch_1"][0][0].reshape(3, 32, 32))
    np.testing.assert_array_equal(tr.images[4], batches["data_batch_2"][0][0].reshape(3, 32, 32))
    assert tr.classes[3] == "cat" and tr.mean == CIFAR10_MEAN
    sp = load_splits("cifar10", tmp_path)
    assert len(sp.train) == 20 and len(sp.test) == 10


def test_cifar10_missing_names_data_dir(tmp_path):
    from i2x.cli import cli_message

    with pytest.raises(I2XError, match="^data_dir=.*point data_dir= at .*download=True") as e:
        load_splits("cifar10", tmp_path)
    assert cli_message(e.value).startswith(f"--data-dir {tmp_path}: ")  # the command line names the flags
    assert "point --data-dir at" in cli_message(e.value) and "pass --download" in cli_message(e.value)
    with pytest.raises(I2XError, match="data_dir=") as e:
        load_splits("cifar10", None)
    assert "--data-dir" in cli_message(e.value)


def test_imagefolder_tree_and_cache(tmp_path):
    write_imagefolder(tmp_path)
    sp = load_splits(f"imagefolder:{tmp_path}")
    assert sp.train.images.shape == (12, 3, 10, 12) and sp.train.images.dtype == np.uint8
    assert sp.train.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(sp.train.labels, np.repeat([0, 1, 2], 4))
    assert (tmp_path / ".i2x-cache-train.npz").exists()
    sp2 = load_splits(f"imagefolder:{tmp_path}")  # from the cache, identical
    np.testing.assert_array_equal(sp.train.images, sp2.train.images)
    assert sp.test.mean == sp.train.mean  # test normalised with training statistics
    x, _ = sp.train.tensors()
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    # the cache follows the files: a changed image is re-read
    from PIL import Image

    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "train" / "a" / "0.png")
    sp3 = load_splits(f"imagefolder:{tmp_path}")
    assert sp3.train.images[0].max() == 0


def test_imagefolder_grayscale_and_cifar_tree(tmp_path):
    write_imagefolder(tmp_path, mode="L", size=(8, 8))
    sp = load_splits(f"imagefolder:{tmp_path}")
    assert sp.train.shape == (1, 8, 8)
    # cifar10 also reads the ImageFolder copy (train/ test/) with CIFAR-10's statistics
    tr = load_cifar10_split(tmp_path, train=True)
    assert tr.mean == CIFAR10_MEAN and len(tr) == 12


def test_imagefolder_errors(tmp_path):
    with pytest.raises(I2XError, match="imagefolder"):
        load_splits(f"imagefolder:{tmp_path / 'nope'}")
    from PIL import Image

    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(I2XError, match="no test/"):
        load_splits(f"imagefolder:{tmp_path}")
    write_imagefolder(tmp_path / "mixed", size=(8, 8))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "mixed" / "train" / "a" / "9.png")
    with pytest.raises(I2XError, match="resize"):
        load_splits(f"imagefolder:{tmp_path / 'mixed'}")


def test_stratified_split():
    from i2x.data import _subset

    y = np.repeat(np.arange(5), 20)
    idx = _subset(y, 25, 42, "--train-subset")
    assert len(idx) == 25 and np.all(np.bincount(y[idx]) == 5)
    np.testing.assert_array_equal(idx, _subset(y, 25, 42, "--train-subset"))
    assert not np.array_equal(idx, _subset(y, 25, 1, "--train-subset"))
    np.testing.assert_array_equal(_subset(y, None, 0, "--train-subset"), np.arange(100))
    with pytest.raises(I2XError, match="--train-subset"):
        _subset(y, 3, 0, "--train-subset")
    # one splitter: a subset is the kept part of a split; a share holds out that share of every class
    np.testing.assert_array_equal(idx, stratified_split(y, 75, 42)[0])
    keep, held = stratified_split(y, 0.2, 0)
    assert np.all(np.bincount(y[held]) == 4) and len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 100


def test_load_splits_subsets():
    sp = load_splits("digits", train_subset=200, test_subset=50)
    assert len(sp.train) == 200 and len(sp.test) == 50
    assert np.bincount(sp.train.labels).min() >= 19
    assert "subset of 50" in sp.test_source


def test_from_torch_tensors_and_uint8():
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(12, 3, 6, 6, generator=g)
    ds = torch.utils.data.TensorDataset(xf, torch.arange(12) % 3)
    d = from_torch(ds)
    assert d.lazy and d.mean == (0.0,) * 3 and d.classes == ["0", "1", "2"] and d.shape == (3, 6, 6)
    x, y = d.tensors()
    torch.testing.assert_close(x[:], xf)  # already normalised: unchanged, read when indexed
    torch.testing.assert_close(x[np.array([3, 1])], xf[[3, 1]])
    torch.testing.assert_close(d.subset(np.array([5, 2])).tensors()[0][:], xf[[5, 2]])
    xu = torch.randint(0, 256, (6, 1, 5, 5), generator=g, dtype=torch.uint8)
    du = from_torch(torch.utils.data.TensorDataset(xu, torch.tensor([0, 1, 0, 1, 0, 1])), classes=["x", "y"])
    assert du.images.uint8 and du.classes == ["x", "y"]
    assert du.mean[0] == pytest.approx(float(xu.float().mean() / 255), rel=1e-6)
    xn = du.tensors()[0][:]  # normalised with the measured statistics
    torch.testing.assert_close(xn, (xu.float() / 255 - du.mean[0]) / du.std[0])
    plain = Dataset(np.zeros((2, 1, 4, 4), np.uint8), np.array([0, 1]), ["a", "b"])
    assert from_torch(plain) is plain
    with pytest.raises(I2XError, match="empty"):
        from_torch(torch.utils.data.TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0)))


class CountingDataset(torch.utils.data.Dataset):
    """Images drawn anew at every read (a random transform), reads counted, labels in ``targets``."""

    def __init__(self, n: int = 60, size: int = 8):
        self.n, self.size, self.reads = n, size, 0
        self.targets = [i % 3 for i in range(n)]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        x = torch.rand(3, self.size, self.size) * 0.5  # a random draw: what RandomCrop etc. do
        x[self.targets[i]] += 0.5
        return x, self.targets[i]


def test_a_random_transform_draws_anew_every_epoch_and_nothing_is_materialised(tmp_path):
    import i2x
    from i2x.nn.models import SmallCNN

    ds = CountingDataset()
    torch.manual_seed(0)
    kw = dict(batch_size=20, every=3, prototypes=4, min_cluster_size=3, explain_fraction=0.25, device="cpu",
              progress=False, report=False, stability_resamples=2, prototype_fit="explain")  # fmt: skip
    i2x.run(out=tmp_path / "e1", model=SmallCNN(3, 3), train=ds, test=CountingDataset(30), epochs=1, **kw)
    one = ds.reads
    ds.reads = 0
    i2x.run(out=tmp_path / "e3", model=SmallCNN(3, 3), train=ds, test=CountingDataset(30), epochs=3, **kw)
    assert ds.reads - one == 2 * 60  # two more epochs: every training image read again (a new draw each time)
    assert one < 3 * 60  # labels from .targets: one epoch's reads, the explanation set, a few checks


def test_explanation_set_is_stratified_and_seeded():
    from i2x.data import explanation_indices

    labels = np.repeat(np.arange(10), [500, 300, 120, 80, 400, 260, 90, 150, 60, 40])  # unbalanced, 2,000
    e = explanation_indices(labels, 0.1, seed=42)
    assert len(e) == 200 and np.all(np.diff(e) > 0)
    want = np.bincount(labels) * 0.1  # every class its share, within one image
    assert np.all(np.abs(np.bincount(labels[e], minlength=10) - want) <= 1)
    np.testing.assert_array_equal(e, explanation_indices(labels, 0.1, seed=42))
    assert not np.array_equal(e, explanation_indices(labels, 0.1, seed=7))
    # too few to stratify (3 samples for 10 classes): a seeded random sample, not an error
    few = explanation_indices(labels, 3 / 2000, seed=1)
    assert len(few) == 3 and np.array_equal(few, explanation_indices(labels, 3 / 2000, seed=1))
    np.testing.assert_array_equal(explanation_indices(labels[:5], 1.0), np.arange(5))
    # a number of images (> 1, scikit-learn's test_size convention): that many, stratified, at most all
    n = explanation_indices(labels, 500.0, seed=42)
    assert len(n) == 500 and np.all(np.abs(np.bincount(labels[n], minlength=10) - np.bincount(labels) / 4) <= 1)
    np.testing.assert_array_equal(explanation_indices(labels, 5000, seed=42), np.arange(2000))
    with pytest.raises(I2XError, match="whole number"):
        explanation_indices(labels, 2.5)


class PidDataset(torch.utils.data.Dataset):
    """Item i: a random image (a random transform) whose first pixel says which process read it (pid % 1000 / 100)."""

    targets = [0, 1] * 6

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import os

        x = torch.rand(1, 2, 2)
        x[0, 0, 0] = os.getpid() % 1000 / 100
        return x, self.targets[i]


def test_read_batches_uses_the_loaders_workers_and_seeds_each_batch():
    import os

    from i2x.data import read_batches

    rows = [np.array([3, 1, 4]), np.array([0, 5]), np.array([9, 2, 6])]
    plain = from_torch(PidDataset()).images
    here = torch.tensor(os.getpid() % 1000 / 100)
    assert all(torch.equal(x[:, 0, 0, 0].unique(), here[None]) for x in read_batches(plain, rows))  # no loader: here
    two = from_torch(torch.utils.data.DataLoader(PidDataset(), num_workers=2)).images
    assert two.loader["num_workers"] == 2 and two.take(np.arange(6)).loader == two.loader
    a = list(read_batches(two, rows, seeds=[7, 8, 9]))
    assert [x.shape[0] for x in a] == [3, 2, 3]
    assert all(not torch.isin(x[:, 0, 0, 0], here[None]).any() for x in a)  # read in worker processes
    one = from_torch(torch.utils.data.DataLoader(PidDataset(), num_workers=1)).images
    b = list(read_batches(one, rows, seeds=[7, 8, 9]))  # a batch's draws depend on its seed, not on the workers
    assert all(torch.equal(x[:, :, 1:], y[:, :, 1:]) for x, y in zip(a, b, strict=True))
    c = list(read_batches(one, rows[1:], seeds=[8, 9]))  # nor on where the reading starts (a resumed epoch)
    assert all(torch.equal(x[:, :, 1:], y[:, :, 1:]) for x, y in zip(a[1:], c, strict=True))
    d = list(read_batches(one, rows, seeds=[1, 2, 3]))
    assert not torch.equal(a[0][:, :, 1:], d[0][:, :, 1:])


def test_a_dataloaders_workers_read_the_training_batches(tmp_path):
    import i2x
    from i2x.nn.models import SmallCNN

    ds = CountingDataset()
    kw = dict(batch_size=20, every=3, prototypes=4, min_cluster_size=3, explain_fraction=0.25, device="cpu",
              progress=False, report=False, stability_resamples=2, prototype_fit="explain")  # fmt: skip
    loader = torch.utils.data.DataLoader(ds, batch_size=20, num_workers=2)
    i2x.run(out=tmp_path / "e1", model=SmallCNN(3, 3), train=loader, test=CountingDataset(30), epochs=1, **kw)
    one = ds.reads
    ds.reads = 0
    run = i2x.run(out=tmp_path / "e3", model=SmallCNN(3, 3), train=loader, test=CountingDataset(30), epochs=3, **kw)
    assert ds.reads == one  # this process read only E and the checks: every epoch's batches were read by the workers
    assert run.manifest["metrics"]["test_accuracy"] is not None


def test_split_seed_keeps_the_training_data_while_the_explanation_set_changes():
    """Another explanation set of the same trained model on a subset run: --explain-seed alone also redraws
    the training subset (so the model), --explain-seed N --split-seed 42 keeps it and changes E only."""
    from i2x.config import RunConfig
    from i2x.data import explanation_indices, splits_for

    def data(**kw):
        cfg = RunConfig(dataset="digits", train_subset=600, test_subset=200, **kw)
        tr = splits_for(cfg).train
        return tr.tensors()[0].numpy(), tr.labels, explanation_indices(tr.labels, 0.2, cfg.explain_seed)

    x42, y42, e42 = data()
    x1, _, _ = data(explain_seed=1)
    xs, ys, es = data(explain_seed=1, split_seed=42)
    assert not np.array_equal(x1, x42)  # without it the subset follows --explain-seed (existing runs unchanged)
    np.testing.assert_array_equal(xs, x42)  # the same training images and labels ...
    np.testing.assert_array_equal(ys, y42)
    assert len(es) == len(e42) and len(np.intersect1d(es, e42)) < len(e42)  # ... another explanation set
    assert RunConfig(explain_seed=3).subset_seed == 3 and RunConfig(explain_seed=3, split_seed=5).subset_seed == 5
