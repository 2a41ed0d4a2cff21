"""Every bad input gets the right diagnosis (issue 39): one table, one row per mistake a user makes with
their own model or data, each refused with an I2XError whose words name the real cause and its fix, before
any training. docs/TESTING.md lists the rows."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import i2x
from i2x.errors import I2XError

KW = dict(epochs=1, batch_size=20, every=1, prototypes=4, min_cluster_size=3, explain_fraction=0.5, device="cpu",
          progress=False, report=False, stability_resamples=0, permutations=19)  # fmt: skip


def net(channels: int = 3, outputs: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, outputs),
    )  # fmt: skip


def data(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3-channel 16x16 images whose class (of 3) is the brightest channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.5
    x[torch.arange(n), y] += 0.5
    return x, y


X, Y = data()
XT, YT = data(30, seed=1)


class Files(torch.utils.data.Dataset):
    """PIL images through ToTensor, as an ImageFolder gives them; ``odd`` = {index: 'rgba' | 'corrupt'}."""

    def __init__(self, odd=None, n: int = 30):
        from torchvision.transforms import ToTensor

        self.x, self.y = data(n)
        self.odd, self.tf = odd or {}, ToTensor()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        arr = (self.x[i].permute(1, 2, 0).numpy() * 255).astype("uint8")
        kind = self.odd.get(i)
        if kind == "corrupt":
            img = Image.open(io.BytesIO(b"not a png"))
        elif kind == "rgba":
            img = Image.fromarray(np.concatenate([arr, np.full((*arr.shape[:2], 1), 255, np.uint8)], 2), "RGBA")
        else:
            img = Image.fromarray(arr, "RGB")
        return self.tf(img), int(self.y[i])


def _with(x=X, y=Y, i=None, value=None):
    x, y = x.clone(), y.clone()
    if i is not None:
        x[i, 0, 2, 2] = value
    return x, y


def _label(y, i, value):
    y = y.clone()
    y[i] = value
    return y


def _meta_net():
    with torch.device("meta"):
        return net()


class NaNAt(torch.utils.data.Dataset):
    """A torch Dataset (read item by item) whose item 7 has a NaN pixel."""

    def __len__(self):
        return len(Y)

    def __getitem__(self, i):
        x = X[i].clone()
        if i == 7:
            x[0, 0, 0] = float("nan")
        return x, int(Y[i])


class Sizes(torch.utils.data.Dataset):
    """Item 5 is 12x12 among 16x16 images."""

    def __len__(self):
        return len(Y)

    def __getitem__(self, i):
        return (X[i, :, :12, :12] if i == 5 else X[i]), int(Y[i])


# (id, keywords of i2x.run, words the message must contain); a torch Dataset's item is checked when it is read
# (the run does not read a dataset larger than memory twice), so LAZY rows may fail during the first epoch
LAZY = {"nan item of a torch Dataset", "an RGBA file among RGB"}
CASES = [
    ("nan pixel in train", dict(train=_with(i=3, value=float("nan")), test=(XT, YT)), ["train=", "image 3", "NaN"]),
    ("nan pixel in test", dict(train=(X, Y), test=_with(XT, YT, 3, float("nan"))), ["test=", "image 3", "NaN"]),
    ("inf pixel in train", dict(train=_with(i=1, value=float("inf")), test=(XT, YT)), ["image 1", "infinite"]),
    ("nan item of a torch Dataset", dict(train=NaNAt(), test=(XT, YT)), ["item 7", "NaN"]),
    ("a stray label = classes in train", dict(train=(X, _label(Y, 5, 3)), test=(XT, YT)), ["image 5", "labels 0..2"]),
    ("label out of range in test", dict(train=(X, Y), test=(XT, _label(YT, 5, 3))), ["test=", "label 3 (image 5)"]),
    ("labels 1..C", dict(train=(X, Y + 1), test=(XT, YT + 1)), ["start at 1", "labels - 1"]),
    ("one class", dict(model=net(outputs=1), train=(X, Y * 0), test=(XT, YT * 0)), ["one class", "two classes"]),
    ("negative label", dict(train=(X, _label(Y, 0, -1)), test=(XT, YT)), [">= 0, got -1"]),
    ("fractional labels", dict(train=(X, Y.float() + 0.5), test=(XT, YT)), ["integer class indices, got 0.5"]),
    ("multi-hot labels", dict(train=(X, torch.ones(60, 3)), test=(XT, YT)), ["not one-hot"]),
    ("labels beyond classes=", dict(train=(X, Y), test=(XT, YT), classes=["a", "b"]), ["label 2", "0..1"]),
    ("fewer labels than images", dict(train=(X, Y[:-1]), test=(XT, YT)), ["60 images but 59 labels"]),
    ("empty train", dict(train=(X[:0], Y[:0]), test=(XT, YT)), ["train= is empty"]),
    ("empty test", dict(train=(X, Y), test=(XT[:0], YT[:0])), ["test= is empty"]),
    ("not a dataset", dict(train=[1, 2, 3], test=(XT, YT)), ["list of 3", "torch Dataset"]),
    ("channels-last images", dict(train=(X.permute(0, 2, 3, 1), Y), test=(XT, YT)), ["channels-last", "permute(0, 3"]),
    ("no channel axis", dict(train=(X[:, 0], Y), test=(XT, YT)), ["x[:, None]"]),
    ("0-255 float pixels", dict(train=(X * 255, Y), test=(XT, YT)), ["0-255", "uint8"]),
    ("1-channel data, 3-channel model", dict(train=(X[:, :1], Y), test=(XT[:, :1], YT)), ["1 channel", "in_chans=1"]),
    ("3-channel data, 1-channel model", dict(model=net(channels=1), train=(X, Y), test=(XT, YT)), ["in_chans=3"]),
    ("test of another size", dict(train=(X, Y), test=(XT[:, :, :8, :8], YT)), ["test= images are (3, 8, 8)"]),
    ("an RGBA file among RGB", dict(train=Files({4: "rgba"}), test=Files()), ["item 4", "convert('RGB')"]),
    ("a corrupt file", dict(train=Files({4: "corrupt"}), test=Files()), ["item 4", "could not be read"]),
    ("an item of another size", dict(train=Sizes(), test=(XT, YT)), ["item 5", "Resize"]),
    ("model outputs != classes", dict(model=net(outputs=5), train=(X, Y), test=(XT, YT)), ["(2, 5)", "3 classes"]),
    # a third of the images labelled beyond the outputs is a model too small, not a stray label
    ("fewer outputs than classes", dict(model=net(outputs=2), train=(X, Y), test=(XT, YT)), ["(2, 2)", "3 classes"]),
    ("model on the meta device", dict(model=_meta_net(), train=(X, Y), test=(XT, YT)), ["meta", "to_empty"]),
    ("unknown built-in model", dict(model="notamodel", train=(X, Y), test=(XT, YT)), ["not a built-in", "smallcnn"]),
    ("a layer that does not exist", dict(train=(X, Y), test=(XT, YT), layer="nope"), ["nope", "layer"]),
    ("more prototypes than features", dict(train=(X, Y), test=(XT, YT), prototypes=10**6), ["prototypes", "lower"]),
]


@pytest.mark.parametrize("name,kw,words", [pytest.param(*case, id=case[0]) for case in CASES])
def test_a_bad_input_is_refused_with_its_cause_and_fix(tmp_path, name, kw, words):
    kw = {"model": net(), **kw}
    with pytest.raises(I2XError) as e:
        i2x.run(out=tmp_path / "r", **{**KW, **kw})
    msg = str(e.value)
    assert all(w in msg for w in words), msg
    assert "\n" not in msg
    assert name in LAZY or not (tmp_path / "r" / "record").exists()  # refused before any training


def test_the_table_covers_the_mistakes_users_make():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)
