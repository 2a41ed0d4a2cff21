"""kill -9 a real `i2x run` at several moments, resume it, and compare every array with an
uninterrupted run of the same seed (bit for bit on CPU: same threads, same batches)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN_ARGS

ARGS = [*TINY_RUN_ARGS, "--seed", "3"]  # tests/helpers.py
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "i2x", *args]


def _arrays(run: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(run.glob("record/*.npz")) + sorted(run.glob("arrays/*.npz")):
        with np.load(p) as z:
            for k in z.files:
                out[f"{p.relative_to(run)}:{k}"] = z[k]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(_cli("run", "--out", str(out), *ARGS), env=ENV, check=True, timeout=600)
    return out


def _kill_when(out: Path, ready, timeout: float = 300) -> bool:
    """Start a run, SIGKILL it as soon as ``ready(out)``; True if it was killed before finishing."""
    proc = subprocess.Popen(_cli("run", "--out", str(out), *ARGS), env=ENV)
    t0 = time.time()
    try:
        while proc.poll() is None and time.time() - t0 < timeout:
            if ready(out):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


def _n_ckpts(out: Path) -> int:
    return len(list((out / "record").glob("ckpt_it*.npz"))) if (out / "record").exists() else 0


KILL_POINTS = {
    "training": lambda out: _n_ckpts(out) >= 3,
    "recording": lambda out: (out / "record").exists() and any((out / "record").glob(".ckpt_it*.tmp")),
    "analysis": lambda out: (out / "weights" / "final.pt").exists(),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(KILL_POINTS))
def test_resume_after_kill_matches_uninterrupted_run(reference, tmp_path, moment):
    out = tmp_path / "run"
    killed = _kill_when(out, KILL_POINTS[moment])
    if not killed:
        pytest.skip(f"the run finished before the {moment} kill point was seen")
    manifest = out / "manifest.json"
    if manifest.exists():  # the kill left the run incomplete
        assert "explain" not in json.loads(manifest.read_text()).get("stages", {})
    # an interrupted run is not overwritten silently ...
    r = subprocess.run(_cli("run", "--out", str(out), *ARGS), env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr
    # ... and resumes to exactly the uninterrupted result
    subprocess.run(_cli("run", "--resume", str(out), *ARGS), env=ENV, check=True, timeout=600)
    ref, got = _arrays(reference), _arrays(out)
    assert sorted(ref) == sorted(got)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert json.loads((out / "explanations.json").read_text()) == json.loads(
        (reference / "explanations.json").read_text()
    )
    assert not (out / "weights" / "train_state.pt").exists()
    assert not list(out.rglob("*.tmp"))


def test_half_written_stage_is_redone_not_read(reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    dyn = out / "arrays" / "dynamics.npz"
    dyn.write_bytes(dyn.read_bytes()[: dyn.stat().st_size // 2])  # truncated by a crash
    r = subprocess.run(_cli("explain", str(out), "--pair", "1", "8"), env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "corrupt" in r.stderr and "Traceback" not in r.stderr
    subprocess.run(_cli("run", "--resume", str(out), *ARGS), env=ENV, check=True, timeout=600)
    with np.load(dyn) as z, np.load(reference / "arrays" / "dynamics.npz") as ref:
        np.testing.assert_array_equal(z["W"], ref["W"])


def test_same_seed_same_explanations_other_seed_other_trajectory(reference, tmp_path):
    other = tmp_path / "other"
    subprocess.run(
        _cli("run", "--out", str(other), *[a if a != "3" else "4" for a in ARGS]), env=ENV, check=True, timeout=600
    )
    with (
        np.load(reference / "record" / "ckpt_it0000010.npz") as a,
        np.load(other / "record" / "ckpt_it0000010.npz") as b,
    ):
        assert not np.array_equal(a["confidences"], b["confidences"])  # another data order, another path
        np.testing.assert_array_equal(a["sample_index"], b["sample_index"])  # the same explanation set ...
    with np.load(reference / "record" / "explain_set.npz") as a, np.load(other / "record" / "explain_set.npz") as b:
        np.testing.assert_array_equal(a["images"], b["images"])  # ... of the same images: the data do not move
