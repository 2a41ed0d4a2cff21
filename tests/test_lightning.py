"""i2x.lightning.I2XCallback: recording inside Lightning's Trainer.fit (one process and DDP on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import i2x
from i2x import store
from i2x.data import load_splits

pl = pytest.importorskip("lightning.pytorch")


def _example():
    """examples/lightning_callback.py, imported by name (ddp_spawn pickles its LightningModule)."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))  # spawned ranks inherit sys.path
    return importlib.import_module("lightning_callback")


def Digits():  # noqa: N802 (a LightningModule of the example around a tiny seeded CNN)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),  # running statistics: what DDP ranks disagree on after a step
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    return _example().Classifier(net)


def _data():
    sp = load_splits("digits", train_subset=300, test_subset=100)
    return sp, *sp.train.tensors(), *sp.test.tensors()


def _fit(out, x, y, xe, ye, **trainer):
    from i2x.lightning import I2XCallback

    module = Digits()
    cb = I2XCallback(out, xe, ye, every=4, layer="net.2")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=30)
    t = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        **trainer,
    )
    t.fit(module, loader)
    return module


def test_callback_records_the_fit_and_analyze_reads_it(tmp_path):
    sp, x, y, xt, yt = _data()
    xe, ye = x[:60], y[:60]
    module = _fit(tmp_path, x, y, xe, ye)
    its = store.checkpoint_iterations(tmp_path)
    assert its == [0, 4, 8, 12, 16, 20]  # 2 epochs of 10 batches: step 0, every 4, the end
    # the last record is the label saliency of the final model
    rec = store.load_records(tmp_path)
    conf, maps = i2x.nn.saliency.saliency_and_confidence(module.net, xe, ye.numpy(), "2")
    np.testing.assert_allclose(rec["saliency"][-1], maps, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rec["confidences"][-1], conf, rtol=1e-5, atol=1e-7)
    r = i2x.analyze(
        tmp_path, module.net, classes=sp.train.classes, train=(x, y), test=(xt, yt), prototypes=5, min_cluster_size=4
    )
    assert r.manifest["checkpoints"] == its and r.manifest["model"]["prototype_fit"]["on"] == "train"
    assert r.arrays("dynamics")["W"].shape == (5, 5, 10)
    assert set(r.explanations()["classes"]) <= set(sp.train.classes)


def test_callback_under_ddp_records_a_shard_per_rank(tmp_path):
    sp, x, y, xt, yt = _data()
    xe, ye = x[:60], y[:60]
    module = _fit(tmp_path, x, y, xe, ye, strategy="ddp_spawn", devices=2)
    shards = sorted(p.name for p in (tmp_path / "record").glob("ckpt_it0000000*.npz"))
    assert shards == ["ckpt_it0000000-shard0.npz", "ckpt_it0000000-shard1.npz"]
    rec = store.load_records(tmp_path)
    np.testing.assert_array_equal(rec["sample_index"], np.arange(60))  # the shards cover E once
    # step 0 is the untrained model on every rank: merged = one process recording it
    conf, maps = i2x.nn.saliency.saliency_and_confidence(Digits().net, xe, ye.numpy(), "2")
    np.testing.assert_allclose(rec["saliency"][0], maps, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rec["confidences"][0], conf, rtol=1e-5, atol=1e-7)
    # the final checkpoint: both shards recorded rank 0's model (ddp_spawn hands its weights back),
    # BatchNorm statistics included, not each rank's own
    conf, maps = i2x.nn.saliency.saliency_and_confidence(module.net, xe, ye.numpy(), "2")
    np.testing.assert_allclose(rec["confidences"][-1], conf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec["saliency"][-1], maps, rtol=1e-4, atol=1e-6)
    r = i2x.analyze(tmp_path, Digits().net, classes=sp.train.classes, prototypes=5, min_cluster_size=4)
    assert r.manifest["checkpoints"] == rec["iterations"].tolist() and len(r.manifest["checkpoints"]) >= 3


def test_the_lightning_example_runs_as_written(tmp_path, capsys):
    mod = _example()
    r = mod.main(["--out", str(tmp_path / "run"), "--epochs", "3", "--train-subset", "500"])
    assert r.manifest["checkpoints"] == [0, 20, 24] and r.manifest["model"]["prototype_fit"]["on"] == "train"
    assert "test accuracy" in capsys.readouterr().out
