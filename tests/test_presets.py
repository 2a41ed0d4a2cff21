"""The paper's presets: precedence of flags, and each preset run at a tiny scale through the CLI.

Every preset test goes through the real code path (``i2x.cli.main`` -> data loader -> model ->
training with recording -> stages 2-7) on a tiny fake dataset written into tmp_path in the
format the preset reads (MNIST IDX files, CIFAR-10 pickles); nothing is downloaded.
"""

from __future__ import annotations

import gzip
import inspect
import json

import numpy as np
import pytest
from helpers import write_fake_cifar  # tests/ is on sys.path (pytest rootdir conftest)

import i2x
from i2x.cli import main
from i2x.config import RunConfig, resolve
from i2x.errors import I2XError
from i2x.presets import PRESETS


def write_fake_mnist(root, n_train=20, n_test=10, seed=0):
    """MNIST/raw/{train,t10k}-{images,labels}-idx*-ubyte.gz with random digits (torchvision's layout)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as fh:
            fh.write((0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in x.shape) + x.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as fh:
            fh.write((0x0801).to_bytes(4, "big") + n.to_bytes(4, "big") + y.tobytes())
    return root


TINY_FLAGS = "--prototypes 4 --min-cluster-size 2 --explain-fraction 0.2 --device cpu --quiet --no-report".split()


def _run_preset(name, data_dir, out, flags: str) -> int:
    return main(["run", "--preset", name, "--data-dir", str(data_dir), "--out", str(out), *flags.split(), *TINY_FLAGS])


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_preset_precedence():
    c = resolve(preset="paper-cifar10-resnet50")
    assert (c.dataset, c.model, c.prototypes, c.epochs, c.every_epoch) == ("cifar10", "resnet50", 128, 50, True)
    assert (c.explain_fraction, c.explain_seed, c.batch_size) == (0.1, 42, 128)
    # a given value overrides the preset; None means "not given"; the rest are RunConfig defaults
    c = resolve({"epochs": 1, "train_subset": 5000, "lr": None}, "paper-mnist-resnet50")
    assert (c.epochs, c.train_subset, c.lr, c.every, c.prototypes) == (1, 5000, RunConfig().lr, 40, 32)
    assert resolve({"epochs": 3}) == RunConfig(epochs=3)
    with pytest.raises(I2XError, match="--preset 'paper-x'"):
        resolve(preset="paper-x")
    with pytest.raises(I2XError, match="train_subset=0"):  # Python names the field, the CLI the flag
        resolve({"train_subset": 0}, "paper-mnist-resnet50")
    assert set(PRESETS) == {"paper-mnist-resnet50", "paper-cifar10-resnet50", "paper-mnist-inceptionv3"}


def test_cli_flag_conflicts(tmp_path, capsys):
    rc = main(["run", "--out", str(tmp_path / "r"), "--every", "5", "--every-epoch"])
    assert rc == 2 and "--every-epoch" in capsys.readouterr().err
    rc = main(["run", "--out", str(tmp_path / "r"), "--preset", "paper-mnist-resnet50", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--data-dir" in err and len(err.strip().splitlines()) == 1


def test_preset_mnist_resnet50(tmp_path):
    data = write_fake_mnist(tmp_path / "data")
    out = tmp_path / "run"
    rc = _run_preset("paper-mnist-resnet50", str(data), out, "--epochs 1 --batch-size 10 --every 1")
    assert rc == 0
    m = _manifest(out)
    assert (
        m["config"]["model"] == "resnet50" and m["config"]["dataset"] == "mnist" and m["config"]["explain_seed"] == 42
    )
    assert m["model"]["layer"] == "layer4" and m["model"]["feature_shape"] == [4, 4, 2048]
    assert m["checkpoints"] == [0, 1, 2] and m["data"]["train_size"] == 20 and m["data"]["test_size"] == 10
    assert all(m["stages"][s]["complete"] for s in ("record", "prototypes", "intensity", "dynamics", "explain"))


def test_preset_cifar10_resnet50_once_per_epoch(tmp_path):
    write_fake_cifar(tmp_path / "data", n_train=20, n_test=10)
    out = tmp_path / "run"
    rc = _run_preset("paper-cifar10-resnet50", str(tmp_path / "data"), out, "--epochs 2 --batch-size 10")
    assert rc == 0
    m = _manifest(out)
    assert m["config"]["every_epoch"] and m["config"]["model"] == "resnet50"
    # 20 images / batch 10 = 2 iterations per epoch: once per epoch would give 3 checkpoints, so this
    # 4-iteration run checkpoints every iteration (min_checkpoints 8) ...
    assert m["checkpoints"] == [0, 1, 2, 3, 4] and m["schedule"] == {"every": 1, "iterations": 4}
    # ... unless the schedule is given: --every-epoch keeps once per epoch
    rc = _run_preset(
        "paper-cifar10-resnet50", str(tmp_path / "data"), tmp_path / "r2", "--epochs 2 --batch-size 10 --every-epoch"
    )
    assert rc == 0 and _manifest(tmp_path / "r2")["checkpoints"] == [0, 2, 4]
    assert m["data"]["classes"][3] == "cat" and m["data"]["image_shape"] == [3, 32, 32]
    assert m["model"]["feature_shape"] == [4, 4, 2048]


def test_preset_mnist_inceptionv3(tmp_path):
    data = write_fake_mnist(tmp_path / "data")
    out = tmp_path / "run"
    rc = _run_preset("paper-mnist-inceptionv3", str(data), out, "--epochs 1 --batch-size 10")
    assert rc == 0
    m = _manifest(out)
    assert m["config"]["model"] == "inceptionv3" and m["config"]["every"] == 40
    assert m["model"]["layer"] == "Mixed_7c" and m["model"]["feature_shape"] == [4, 4, 2048]
    assert m["checkpoints"] == [0, 1, 2]  # 2 iterations < every=40: every iteration (min_checkpoints)
    rec = np.load(out / "record" / "ckpt_it0000002.npz")
    assert rec["saliency"].shape == (4, 4, 4) and rec["confidences"].shape == (4, 10)


def test_resume_without_flags_keeps_the_runs_settings(tmp_path, capsys):
    out = tmp_path / "r"
    args = [
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--every",
        "5",
        "--prototypes",
        "4",
        "--min-cluster-size",
        "3",
        "--train-subset",
        "300",
        "--device",
        "cpu",
        "--quiet",
        "--no-report",
    ]
    assert main(["run", "--out", str(out), *args]) == 0
    before = _manifest(out)["config"]
    assert before["train_subset"] == 300 and before["every"] == 5
    # no flags: the run's own config (not the defaults, which would differ and be refused)
    assert main(["run", "--resume", str(out), "--quiet", "--no-report"]) == 0
    assert _manifest(out)["config"] == before
    # a changed setting is still refused, in one line naming --resume
    assert main(["run", "--resume", str(out), "--epochs", "3", "--quiet", "--no-report"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_short_run_checkpoints_more_often_unless_the_schedule_was_given():
    from i2x.nn.pipeline import _n_checkpoints, _schedule

    # the README's CPU-sized command: 1,000 images, batch 128, 1 epoch = 8 iterations; every 40 gave 2 checkpoints
    cfg = resolve({"dataset": "mnist5k", "epochs": 1, "train_subset": 1000}, "paper-mnist-resnet50")
    assert cfg.every == 40 and cfg.min_checkpoints == 8
    assert _schedule(cfg, 1000)[0] == 1 and _n_checkpoints(8, 1) == 9
    # long enough: the schedule as configured (the demo: 8 epochs of 79 iterations, every 40 = 17 checkpoints)
    demo = resolve({})
    assert _schedule(demo, 5000)[0] == 40 and _n_checkpoints(8 * 79, 40) == 17
    # a once-per-epoch preset cut to 3 epochs (4 checkpoints) gets 8: every 3 * 79 // 7 iterations
    cifar = resolve({"epochs": 3, "batch_size": 64}, "paper-cifar10-resnet50")
    assert _schedule(cifar, 5000)[0] == 3 * 79 // 7 and _n_checkpoints(3 * 79, _schedule(cifar, 5000)[0]) >= 8
    # given explicitly, a schedule is kept as given (min_checkpoints 0), and both can be given
    for given in ({"every": 40}, {"every_epoch": True}):
        c = resolve({"epochs": 1, "train_subset": 1000, **given}, "paper-mnist-resnet50")
        assert c.min_checkpoints == 0 and _schedule(c, 1000)[0] == (40 if "every" in given else 8)
    assert resolve({"every": 40, "min_checkpoints": 8}).min_checkpoints == 8


def test_a_schedule_set_in_a_runconfig_is_kept_like_a_given_flag():
    """i2x.run(config=RunConfig(every=5)) and run(config=..., every=5) keep the schedule as given
    (min_checkpoints 0), as --every does; a RunConfig with the default schedule still scales it,
    and a min_checkpoints set to other than its default is kept."""
    from i2x.config import RunConfig, resolve
    from i2x.errors import I2XError
    from i2x.nn.pipeline import _schedule

    assert resolve(config=RunConfig(every=5)).min_checkpoints == 0
    assert _schedule(resolve(config=RunConfig(every=5, epochs=1)), 500) == (5, 8)  # 8 iterations, every 5
    assert resolve({"every": 5}, config=RunConfig()).min_checkpoints == 0
    assert resolve(config=RunConfig(every_epoch=True)).min_checkpoints == 0
    assert resolve({"every_epoch": True}, config=RunConfig()).every_epoch is True
    assert resolve({"every": 7}, config=RunConfig(every_epoch=True)).every_epoch is False  # every switches it off
    assert resolve(config=RunConfig()).min_checkpoints == 8  # the default schedule scales with a short run
    assert resolve({"epochs": 1, "every": None}, config=RunConfig()).min_checkpoints == 8  # None = not given
    assert resolve(config=RunConfig(every=5, min_checkpoints=3)).min_checkpoints == 3
    assert resolve({"min_checkpoints": 8}, config=RunConfig(every=5)).min_checkpoints == 8
    with pytest.raises(I2XError, match="exclude each other"):
        resolve({"every": 5, "every_epoch": True}, config=RunConfig())
    # i2x.run's own path: config= goes through the same rule
    from pathlib import Path

    from i2x.nn.pipeline import _run_config

    assert _run_config(RunConfig(every=5), None, {}, None, Path("unused")).min_checkpoints == 0
    assert _run_config(RunConfig(), None, {"every": 5}, None, Path("unused")).min_checkpoints == 0


def test_python_run_with_a_preset(tmp_path):
    data = write_fake_mnist(tmp_path / "data")
    extra = {"report": False} if "report" in inspect.signature(i2x.run).parameters else {}
    given = dict(
        model="smallcnn", epochs=1, batch_size=10, every=1, prototypes=4, min_cluster_size=2, explain_fraction=0.2
    )
    r = i2x.run(
        preset="paper-mnist-resnet50",
        out=tmp_path / "run",
        data_dir=str(data),
        device="cpu",
        progress=False,
        **given,
        **extra,
    )
    c = r.manifest["config"]
    # the preset's values (MNIST, E seeded 42, gradcam) under the explicit ones
    assert (c["dataset"], c["explain_seed"], c["method"], c["every_epoch"]) == ("mnist", 42, "gradcam", False)
    assert (c["model"], c["epochs"], c["batch_size"], c["prototypes"]) == ("smallcnn", 1, 10, 4)
    assert r.manifest["seeds"]["explain_seed"] == 42
    assert r.manifest["checkpoints"] == [0, 1, 2] and r.manifest["data"]["train_size"] == 20
    assert all(r.manifest["stages"][s]["complete"] for s in ("record", "evaluate", "explain"))
    with pytest.raises(i2x.I2XError, match="not both"):
        i2x.run(RunConfig(), preset="paper-mnist-resnet50", out=tmp_path / "x")
