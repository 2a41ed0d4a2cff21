"""A new user's first hour (issue 26): commands that end in a line instead of a traceback, models
that return tuples or dicts, inputs checked in one line, and the caller's objects left as found."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import own_data
from torch import nn

import i2x
from i2x.data import as_dataset, class_labels
from i2x.errors import I2XError
from i2x.nn.pipeline import _check_fits

KW = dict(epochs=1, batch_size=20, every=1, prototypes=4, min_cluster_size=3, explain_fraction=0.5, device="cpu",
          progress=False, report=False, stability_resamples=2)  # fmt: skip


def test_explain_into_a_closed_pipe_ends_without_a_traceback(cli_run, tmp_path):
    err = tmp_path / "err.txt"
    cmd = f"{sys.executable} -m i2x explain {cli_run} 2> {err} | head -n 1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() and "Traceback" not in err.read_text() and "BrokenPipe" not in err.read_text()


def test_resuming_a_run_of_your_own_model_on_the_command_line_says_how(tmp_path, capsys):
    from i2x.cli import main

    d = tmp_path / "own"
    d.mkdir()
    (d / "manifest.json").write_text(
        json.dumps({"schema_version": 3, "config": {"model": ""}, "model": {"name": "Net"}})
    )
    assert main(["run", "--resume", str(d)]) == 2
    msg = capsys.readouterr().err
    assert "your own model (Net)" in msg and "resume=True" in msg and "built-in" not in msg


class TupleNet(nn.Module):
    """(logits, aux) always, or only in train mode (torchvision's InceptionV3 pattern), or a dict."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        z = self.head(self.features(x))
        if self.kind == "dict":
            return {"logits": z, "features": z.detach()}
        if self.kind == "tuple" or (self.kind == "train-tuple" and self.training):
            return z, z * 0
        if self.kind == "train-3d" and self.training:
            return z[:, None]
        return z


@pytest.mark.parametrize("kind", ["tuple", "train-tuple", "dict"])
def test_models_that_return_tuples_or_dicts_run_end_to_end(kind, tmp_path):
    torch.manual_seed(0)
    r = i2x.run(out=tmp_path / kind, model=TupleNet(kind), train=own_data(60), test=own_data(30, seed=1), **KW)
    assert r.manifest["model"]["layer"] == "features" and "test_accuracy" in r.manifest["metrics"]


def test_the_fit_check_leaves_batchnorm_statistics_and_the_rng_alone():
    m = TupleNet("train-tuple")
    before, x = [b.clone() for b in m.buffers()], torch.randn(2, 3, 8, 8) * 5
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    _check_fits(m, x, 3)  # a train-mode forward: dropout draws, BatchNorm updates
    assert torch.rand(1) == expected and all(torch.equal(a, b) for a, b in zip(before, m.buffers(), strict=True))
    with pytest.raises(I2XError, match=r"in train mode the model outputs shape \(2, 1, 3\)"):
        _check_fits(TupleNet("train-3d"), x, 3)  # caught before training, not in its first step


def test_a_model_on_the_meta_device_is_refused_with_the_fix():
    with torch.device("meta"):
        m = TupleNet("plain")
    with pytest.raises(I2XError, match="meta.*to_empty"):
        _check_fits(m, torch.randn(2, 3, 8, 8), 3)


def test_classes_names_tensor_data(tmp_path):
    torch.manual_seed(0)
    ds = own_data(60)
    x = torch.stack([ds[i][0] for i in range(60)])
    y = torch.stack([ds[i][1] for i in range(60)])
    r = i2x.run(out=tmp_path / "c", model=TupleNet("plain"), train=(x, y), classes=["r", "g", "b"], **KW)
    assert r.classes == ["r", "g", "b"]


def test_labels_are_checked_in_one_line():
    assert class_labels(np.eye(3)[[0, 2, 1]]).tolist() == [0, 2, 1]  # one-hot rows: accepted
    assert class_labels(np.array([0.0, 2.0])).tolist() == [0, 2]
    with pytest.raises(I2XError, match="integer class indices, got 0.5"):
        class_labels(np.array([0.5, 1.0]))
    with pytest.raises(I2XError, match="not one-hot"):
        class_labels(np.array([[0.5, 0.5], [1, 0]]))
    with pytest.raises(I2XError, match=">= 0"):
        class_labels(np.array([-1, 0]))
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(I2XError, match="integer class indices, got 0.5"):
        as_dataset((x, torch.tensor([0, 1, 2, 0]) + 0.5))
    with pytest.raises(I2XError, match="0-255 pixel values.*uint8"):
        as_dataset((x * 255, torch.tensor([0, 1, 2, 0])))
    ds = torch.utils.data.TensorDataset(x, torch.eye(3)[[0, 1, 2, 0]])  # a Dataset of one-hot labels
    assert as_dataset(ds).labels.tolist() == [0, 1, 2, 0]


def test_run_and_finetune_leave_the_callers_objects_as_they_found_them(tmp_path):
    torch.manual_seed(0)
    model = TupleNet("plain")
    warnings.simplefilter("default")
    filters, grad = list(warnings.filters), torch.is_grad_enabled()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    model.eval()  # the caller's mode and (no) gradients: i2x.run trains the weights and leaves the rest
    with torch.no_grad():
        r = i2x.run(out=tmp_path / "run", model=model, train=own_data(60), test=own_data(30, seed=1), **KW)
    assert torch.equal(torch.rand(3), expected)  # the global RNG was not reseeded
    assert list(warnings.filters) == filters and torch.is_grad_enabled() == grad
    assert not any(m.training for m in model.modules()) and all(p.grad is None for p in model.parameters())
    w = {k: v.clone() for k, v in model.state_dict().items()}
    i2x.finetune(r.path, model=model, test=own_data(30, seed=1), pair=(0, 1), prototype=0, repeats=1,
                 schedules="curated+full", controls="none", progress=False)  # fmt: skip
    assert not any(m.training for m in model.modules())  # still in eval mode
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in w.items())


def test_a_process_group_the_caller_created_stays_theirs():
    import torch.distributed as dist

    from i2x.nn.distributed import World

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        World(0, 2, "gloo", owned=False).close()  # i2x joined the caller's group: it must not destroy it
        assert dist.is_initialized()
        World(0, 2, "gloo", owned=True).close()  # one i2x created: closed
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_run_shows_a_summary_in_a_notebook_and_in_a_repl(cli_run):
    r = i2x.Run(cli_run)
    assert repr(r).startswith("i2x.Run(") and "checkpoints" in repr(r)
    html = r._repr_html_()
    assert "<table>" in html and "test accuracy" in html and "most confused" in html
    from i2x.cli.explain import explain_text

    text = explain_text(r)  # no class, no pair: the run's summary, as `i2x explain DIR` prints (was '')
    assert text.startswith("i2x run -> ") and "most confused pairs" in text


def test_progress_in_a_notebook_without_widgets_updates_rarely(monkeypatch):
    from i2x import progress

    monkeypatch.setattr(progress, "_notebook", lambda: True)
    monkeypatch.setattr(progress, "_has_widgets", lambda: False)
    b = progress.bar(range(3), file=io.StringIO())
    assert b.mininterval >= 5 and b.ascii
    monkeypatch.setattr(progress, "_notebook", lambda: False)
    assert progress.bar(range(3), file=io.StringIO()).mininterval == 1.0


def test_a_diverging_model_is_told_after_its_first_epoch_what_to_change():
    from i2x.nn.train import divergence_warning

    rising = list(np.linspace(2.3, 6.4, 40))  # EfficientNet-B0 from scratch at lr 3e-3
    msg = divergence_warning(rising, 10, 3e-3)
    assert "diverging" in msg and "e.g. lr=0.0003 (now 0.003)" in msg  # Python's name in Python
    from i2x.cli import to_flags

    assert "e.g. --lr 0.0003 (now 0.003)" in to_flags(msg)  # the flag on the command line
    assert divergence_warning(list(np.linspace(2.3, 0.4, 40)), 10, 3e-3) == ""  # learning
    assert divergence_warning([9.0] * 3 + list(np.linspace(9, 4, 37)), 10, 3e-3) == ""  # high but falling


class _Flips(torch.utils.data.Dataset):
    """The images of ``base`` flipped at random at each read (an augmenting training set), or as they are."""

    def __init__(self, base, augment: bool):
        self.base, self.augment = base, augment
        self.classes = base.dataset.classes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (x.flip(-1) if self.augment and torch.rand(()) < 0.5 else x), y


def test_an_augmenting_dataset_is_explained_through_its_evaluation_view(tmp_path):
    """train= augments; train_eval= (the same images, no augmentation) is what the explanation set and the
    prototypes read; without it the run says how to give it."""
    torch.manual_seed(0)
    base, test = own_data(60), own_data(30, seed=1)
    kw = {**KW, "stability_resamples": 0}
    r = i2x.run(out=tmp_path / "v", model=TupleNet("plain"), train=_Flips(base, True), train_eval=_Flips(base, False),
                test=test, **kw)  # fmt: skip
    e = r.explain_set()
    plain = torch.stack([base[int(i)][0] for i in e["indices"]]).numpy()
    np.testing.assert_allclose(e["images"], plain, atol=1e-6)  # the un-augmented images, normalised as given
    assert r.manifest["data"]["explain_view"].startswith("train_eval=")
    assert not any("train_eval" in w for w in r.manifest.get("warnings", []))
    r2 = i2x.run(out=tmp_path / "a", model=TupleNet("plain"), train=_Flips(base, True), test=test, **kw)
    assert any("pass train_eval=" in w for w in r2.manifest["warnings"])
    r3 = i2x.run(out=tmp_path / "p", model=TupleNet("plain"), train=_Flips(base, False), test=test, **kw)
    assert not any("train_eval" in w for w in r3.manifest.get("warnings", []))  # the same reads: no warning
    with pytest.raises(I2XError, match="train_eval= must hold train='s images in the same order"):
        i2x.run(out=tmp_path / "b", model=TupleNet("plain"), train=base, train_eval=own_data(30), test=test, **kw)
