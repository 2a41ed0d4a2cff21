"""Bad input: exit code 2, one line naming the argument and the fix, no traceback (unless --debug)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import i2x
from i2x.cli import main
from i2x.errors import DivergedError, I2XError

TINY = "--dataset digits --epochs 1 --every 10 --prototypes 4 --min-cluster-size 5 --device cpu --quiet --no-report"
TINY = TINY.split()


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "flag,value,expect",
    [
        ("--dataset", "imagenet", "mnist5k"),
        ("--model", "vgg", "smallcnn"),
        ("--explain-fraction", "0", "(0, 1]"),
        ("--explain-fraction", "1.5", "(0, 1]"),
        ("--layer", "features.99", "features.7"),  # lists the candidate layers
        ("--prototypes", "100000", "--prototypes"),
        ("--min-cluster-size", "1", "≥ 2"),  # HDBSCAN's smallest cluster: one line, not scikit-learn's traceback
    ],
)
def test_bad_run_arguments(capsys, tmp_path, flag, value, expect):
    argv = ["run", "--out", str(tmp_path / "r"), *TINY]
    i = argv.index(flag) if flag in argv else None
    if i is None:
        argv += [flag, value]
    else:
        argv[i + 1] = value
    err = _err(capsys, argv)
    assert expect in err
    assert flag in err or flag.lstrip("-") in err


def test_missing_data_dir_and_missing_files(capsys, tmp_path):
    err = _err(
        capsys, ["run", "--out", str(tmp_path / "r"), "--dataset", "mnist", "--data-dir", str(tmp_path / "nope")]
    )
    assert "--data-dir" in err and "does not exist" in err
    (tmp_path / "empty").mkdir()
    err = _err(
        capsys, ["run", "--out", str(tmp_path / "r"), "--dataset", "mnist", "--data-dir", str(tmp_path / "empty")]
    )
    assert "MNIST/raw" in err and "--download" in err


def test_truncated_mnist_file(capsys, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    header = (2051).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + bytes(100))  # 10 images promised, 100 bytes
    (raw / "t10k-labels-idx1-ubyte").write_bytes((2049).to_bytes(4, "big") + (10).to_bytes(4, "big") + bytes(10))
    err = _err(
        capsys, ["run", "--out", str(tmp_path / "r"), "--dataset", "mnist5k", "--data-dir", str(tmp_path), "--quiet"]
    )
    assert "truncated" in err


def test_images_that_do_not_fit_the_model(tmp_path):
    with pytest.raises(I2XError, match="takes 3-channel images, the data has 1 channel: repeat the channel"):
        i2x.run(out=tmp_path / "r", dataset="digits", model=i2x.models.SmallCNN(in_channels=3), progress=False)


def test_existing_run_needs_resume_or_overwrite(capsys, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "something").write_text("x")
    err = _err(capsys, ["run", "--out", str(tmp_path / "r"), *TINY])
    assert "--resume" in err and "--overwrite" in err
    err = _err(capsys, ["run", "--resume", str(tmp_path / "absent"), *TINY])
    assert "no such run directory" in err


def test_diverged_model_says_so(tmp_path):
    model = i2x.models.SmallCNN()
    with torch.no_grad():
        model.head[-1].weight[0, 0] = float("nan")  # what a blown-up training leaves behind
    with pytest.raises(DivergedError, match="diverged.*lr="):
        i2x.run(out=tmp_path / "r", dataset="digits", model=model, epochs=1, every=10, prototypes=4, progress=False)


def test_nan_in_confidences_or_saliency_is_a_diverged_model():
    conf = np.full((2, 20, 3), 1 / 3)
    conf[1, 4, 0] = np.nan
    with pytest.raises(DivergedError, match="diverged"):
        i2x.dynamics(conf, np.zeros((2, 20, 4)))
    with pytest.raises(DivergedError, match="saliency"):
        i2x.dynamics(np.zeros((2, 20, 3)), np.full((2, 20, 4), np.inf))


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(I2XError):
        main(["run", "--out", str(tmp_path / "r"), "--dataset", "imagenet", "--debug"])


def _copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_corrupt_array_and_checkpoint(capsys, cli_run, tmp_path):
    run = _copy(cli_run, tmp_path)
    (run / "arrays" / "intensity.npz").write_bytes(b"not a zip")
    err = _err(capsys, ["explain", str(run), "--pair", "1", "8"])
    assert "corrupt" in err and "--resume" in err
    final = run / "weights" / "final.pt"
    final.write_bytes(final.read_bytes()[:100])
    with pytest.raises(I2XError, match="corrupt or truncated"):
        i2x.load_model(run)


def test_incompatible_schema_version(capsys, cli_run, tmp_path):
    run = _copy(cli_run, tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    m["schema_version"] = 999
    (run / "manifest.json").write_text(json.dumps(m))
    err = _err(capsys, ["explain", str(run), "--class", "3"])
    assert "schema version 999" in err and "--overwrite" in err


def test_class_absent_from_explanation_set(capsys, cli_run, tmp_path):
    run = _copy(cli_run, tmp_path)
    ex = json.loads((run / "explanations.json").read_text())
    del ex["classes"]["5"]
    (run / "explanations.json").write_text(json.dumps(ex))
    err = _err(capsys, ["explain", str(run), "--class", "5"])
    assert "--class" in err and "no sample in the explanation set" in err
    err = _err(capsys, ["explain", str(run), "--class", "11"])
    assert "classes: 0, 1" in err


def test_only_noise_steps_are_flagged_and_analysis_continues(capsys, tmp_path):
    argv = ["run", "--out", str(tmp_path / "r"), *TINY, "--no-cluster-fallback"]  # the spec's rule: W_t = 0
    argv[argv.index("--min-cluster-size") + 1] = "100000"
    assert main(argv) == 0
    out = capsys.readouterr().out
    ex = json.loads((tmp_path / "r" / "explanations.json").read_text())
    with np.load(tmp_path / "r" / "arrays" / "dynamics.npz") as d:
        assert d["flagged"].all() and not d["W"].any()
    assert ex["flagged_steps"] == list(range(len(ex["checkpoints"]) - 1))
    assert "flagged" in out


def test_steps_without_clusters_fall_back_by_default(capsys, tmp_path):
    argv = ["run", "--out", str(tmp_path / "r"), *TINY]
    argv[argv.index("--min-cluster-size") + 1] = "100000"
    assert main(argv) == 0
    out = capsys.readouterr().out
    with np.load(tmp_path / "r" / "arrays" / "dynamics.npz") as d:
        assert not d["flagged"].any() and d["W"].any(axis=(1, 2)).all() and (d["fallback"] > 0).all()
    assert "fallback" in out and "leave out" not in out  # every step has a fitted W_t
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["metrics"]["explained_coverage"] == 1.0


def test_saliency_rejects_bad_targets():
    m = i2x.models.SmallCNN()
    with pytest.raises(I2XError, match="targets"):
        i2x.saliency(m, torch.zeros(2, 1, 28, 28), [1, 2, 3])
