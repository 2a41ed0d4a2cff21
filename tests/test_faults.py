"""Faults a real user meets (issue 15): two processes on one run, lost or half-written files, a full
disk, data too small or odd for the method. Each ends in exit 2 and one line that names the file or
the data and the fix, never a traceback; a full disk leaves the run resumable."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import write_imagefolder

from i2x.cli import main


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _hold_lock(run_dir):
    """Another process that holds the run directory's lock until killed."""
    code = (
        f"from i2x.rundir import run_lock\nimport time\nwith run_lock({str(run_dir)!r}):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_is_refused_and_a_dead_holder_never_blocks(cli_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    holder = _hold_lock(run)
    try:
        err = _one_line_error(capsys, ["run", "--resume", str(run), "--quiet", "--no-report"])
        assert f"pid {holder.pid}" in err and "in use" in err
        err = _one_line_error(capsys, ["report", str(run)])
        assert f"pid {holder.pid}" in err
        err = _one_line_error(capsys, ["finetune", str(run), "--pair", "3", "8", "--prototype", "0", "--quiet"])
        assert f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no clean-up runs in the holder
        holder.wait()
    assert main(["report", str(run), "--no-svg"]) == 0  # the OS released the dead holder's lock


def test_a_lost_checkpoint_record_names_the_file_and_how_to_start_over(cli_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    lost = sorted((run / "record").glob("ckpt_it*.npz"))[1]
    lost.unlink()
    err = _one_line_error(capsys, ["report", str(run)])
    assert lost.name in err and "--overwrite" in err
    (run / "arrays" / "intensity.npz").unlink()  # --resume would have to re-read the records: it says why not
    err = _one_line_error(capsys, ["run", "--resume", str(run), "--quiet", "--no-report"])
    assert lost.name in err and "cannot be re-recorded" in err


def test_a_lost_array_file_is_rebuilt_on_resume(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    before = (run / "explanations.json").read_text()
    (run / "arrays" / "dynamics.npz").unlink()
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 0
    assert (run / "explanations.json").read_text() == before  # the same stages, the same numbers


def test_a_full_disk_is_one_line_and_the_run_resumes(cli_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    before = (run / "explanations.json").read_text()
    for stage in ("dynamics", "explain"):  # make the run redo two stages
        m = json.loads((run / "manifest.json").read_text())
        del m["stages"][stage]
        (run / "manifest.json").write_text(json.dumps(m))
    real_savez = np.savez

    def full(fh, **arrays):  # the disk fills while the dynamics stage writes its arrays
        if "W" in arrays:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(fh, **arrays)

    monkeypatch.setattr(np, "savez", full)
    err = _one_line_error(capsys, ["run", "--resume", str(run), "--quiet", "--no-report"])
    assert "No space left" in err and "dynamics.npz" in err and "--resume" in err
    assert not list(run.rglob(".*.tmp"))  # nothing half-written left behind
    monkeypatch.setattr(np, "savez", real_savez)  # space is back
    assert main(["run", "--resume", str(run), "--quiet", "--no-report"]) == 0
    assert (run / "explanations.json").read_text() == before


def test_torch_save_failing_mid_write_is_a_storage_error(tmp_path, monkeypatch):
    import torch

    from i2x.errors import StorageError
    from i2x.nn.train import save_state

    def full_disk_save(obj, fh, *a, **k):  # what torch.save raises when the disk fills mid-write
        fh.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(StorageError, match="cannot write .*state.pt"):
        save_state(tmp_path / "state.pt", {"w": torch.zeros(3)})
    assert not list(tmp_path.iterdir())  # no half file, no temporary file


def test_tiny_image_folder_runs_twice_without_dtype_errors(tmp_path):
    data = tmp_path / "imgs"
    write_imagefolder(data, classes=("a", "b", "c"), per_class=1, size=(8, 8))
    args = [
        "--dataset",
        f"imagefolder:{data}",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--explain-fraction",
        "1.0",
        "--prototypes",
        "2",
        "--min-cluster-size",
        "5",
        "--device",
        "cpu",
        "--quiet",
        "--no-report",
    ]
    assert main(["run", "--out", str(tmp_path / "r1"), *args]) == 0  # decodes the images, writes the cache
    assert main(["run", "--out", str(tmp_path / "r2"), *args]) == 0  # reads the cache: float32, not float64
    m = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    assert any("min_cluster_size" in w for w in m["warnings"])  # 3 images: said, not hidden


def test_a_class_without_training_images_is_an_error(tmp_path, capsys):
    data = tmp_path / "imgs"
    write_imagefolder(data, classes=("a", "b", "c"), per_class=2, size=(8, 8))
    for f in (data / "train" / "c").iterdir():
        f.unlink()  # c has test images but no training image
    err = _one_line_error(
        capsys,
        [
            "run",
            "--out",
            str(tmp_path / "r"),
            "--dataset",
            f"imagefolder:{data}",
            "--device",
            "cpu",
            "--quiet",
            "--no-report",
        ],
    )
    assert "class c has no training image" in err


def test_a_failed_start_does_not_block_a_retry(tmp_path, capsys, tiny_args):
    out = tmp_path / "r"
    bad = [*tiny_args, "--layer", "features.99"]
    _one_line_error(capsys, ["run", "--out", str(out), *bad])
    assert main(["run", "--out", str(out), *tiny_args]) == 0  # no --overwrite needed: nothing was complete


def test_near_chance_model_is_flagged(tmp_path, tiny_args):
    args = [*tiny_args]
    args[args.index("--epochs") + 1] = "1"
    assert main(["run", "--out", str(tmp_path / "r"), *args, "--lr", "1e-9"]) == 0  # learns nothing
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["metrics"]["test_accuracy"] < 0.3
    assert any("near chance" in w or "predicts" in w for w in m["warnings"])


def _tree(d):
    return sorted((str(p.relative_to(d)), p.stat().st_size) for p in d.rglob("*"))


def test_resume_on_a_folder_that_is_no_run_writes_nothing(tmp_path, capsys, tiny_args, monkeypatch):
    """A user's own folder given to --resume (an image folder, say) is refused in one line before any data
    is loaded, and left exactly as it was: no manifest, record, arrays or lock file appear in it."""
    import i2x.nn.pipeline as pipeline

    photos = tmp_path / "photos"
    (photos / "cats").mkdir(parents=True)
    (photos / "cats" / "a.png").write_bytes(b"not really a png")
    before = _tree(photos)
    monkeypatch.setattr(pipeline, "_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    err = _one_line_error(capsys, ["run", "--resume", str(photos), *tiny_args])
    assert "not an i2x run" in err and "nothing was written" in err and "--out NEW_DIR" in err
    assert _tree(photos) == before


def test_an_out_that_cannot_hold_a_run_is_refused_before_any_work(tmp_path, capsys, tiny_args, monkeypatch):
    import os

    import i2x.nn.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    err = _one_line_error(capsys, ["run", "--out", str(a_file), *tiny_args])
    assert "is a file, not a folder" in err and a_file.read_text() == "mine"
    real = os.access  # no permission (root ignores file modes, so the answer of access(2) is simulated)
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    err = _one_line_error(capsys, ["run", "--out", str(tmp_path / "new" / "run"), *tiny_args])
    assert "cannot be written" in err and str(tmp_path) in err and not (tmp_path / "new").exists()


def test_a_held_run_is_refused_before_its_data_is_loaded(cli_run, tmp_path, capsys, monkeypatch):
    import i2x.nn.pipeline as pipeline

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    holder = _hold_lock(run)
    monkeypatch.setattr(pipeline, "_splits", lambda *a, **k: pytest.fail("data loaded before the check"))
    try:
        err = _one_line_error(capsys, ["run", "--out", str(run), "--overwrite", "--quiet", "--no-report"])
        assert f"pid {holder.pid}" in err and "in use" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
