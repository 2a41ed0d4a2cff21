"""`torchrun --nproc_per_node=2 -m i2x run` on CPU (gloo): sharded recording, rank-0 analysis, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN_ARGS

import i2x
from i2x import store
from i2x.nn.saliency import saliency_and_confidence
from i2x.rundir import STAGE_NAMES

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ARGS = [*TINY_RUN_ARGS, "--seed", "3"]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "i2x", *args]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    r = subprocess.run(_torchrun("run", "--out", str(out), *ARGS), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("i2x run ->") == 1  # rank 0 alone prints the summary
    return out


def _explain_set(run: Path):
    es = store.load_explain_set(run)  # as the model saw it
    return torch.from_numpy(es["images"]), torch.from_numpy(es["labels"])


def test_merged_shards_equal_one_process_recording_the_same_weights(ddp_run):
    m = store.read_manifest(ddp_run)
    assert m["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert all(m["stages"][s]["complete"] for s in STAGE_NAMES)
    assert (ddp_run / "explanations.json").exists() and m["metrics"]["test_accuracy"] > 0.5
    shards = sorted(p.name for p in (ddp_run / "record").glob("ckpt_it0000000*"))
    assert shards == ["ckpt_it0000000-shard0.npz", "ckpt_it0000000-shard1.npz"]
    rec = store.load_records(ddp_run)
    x, y = _explain_set(ddp_run)
    np.testing.assert_array_equal(
        rec["sample_index"], store.load_npz(ddp_run / "record" / "explain_set.npz")["indices"]
    )
    # the final checkpoint: one process recording weights/final.pt gives the merged shards
    model = i2x.load_model(ddp_run)
    conf, maps = saliency_and_confidence(model, x, y.numpy(), m["model"]["layer"])
    np.testing.assert_allclose(rec["confidences"][-1], conf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec["saliency"][-1], maps, rtol=1e-4, atol=1e-6)
    # checkpoint 0: the untrained model of the seed, the same on both ranks
    torch.manual_seed(3)
    model0 = i2x.models.build_model("smallcnn", in_channels=1, num_classes=10)
    conf0, maps0 = saliency_and_confidence(model0, x, y.numpy(), m["model"]["layer"])
    np.testing.assert_allclose(rec["confidences"][0], conf0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec["saliency"][0], maps0, rtol=1e-4, atol=1e-6)


def test_resume_under_torchrun_after_kill(ddp_run, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_torchrun("run", "--out", str(out), *ARGS), env=ENV, start_new_session=True)
    t0, killed = time.time(), False
    try:
        while proc.poll() is None and time.time() - t0 < 300:
            if (out / "record").exists() and len(list((out / "record").glob("ckpt_it*-shard1.npz"))) >= 3:
                os.killpg(proc.pid, signal.SIGKILL)  # torchrun, no clean-up ...
                # ... and both ranks: torch's launcher starts each in its own session, so the group kill
                # misses them, and a surviving rank would finish the run and hold its lock meanwhile
                subprocess.run(["pkill", "-9", "-f", f"i2x run --out {out} "], check=False)
                killed = True
                break
            time.sleep(0.005)
    finally:
        proc.wait()
    if not killed:
        pytest.skip("the run finished before the kill point was seen")
    assert "explain" not in store.read_manifest(out).get("stages", {})
    # the kill can fall between one rank's shard of a checkpoint and the other's: planted here (rank 1's shard
    # of iteration 5 kept, rank 0's gone, training from the start), in a copy; the ranks must re-record it
    # together (before, rank 0 recorded alone and its broadcast met rank 1's all-reduce: SIGABRT in CI)
    uneven = tmp_path / "uneven"
    shutil.copytree(out, uneven)
    (uneven / "weights" / "train_state.pt").unlink(missing_ok=True)
    (uneven / "record" / "ckpt_it0000005-shard0.npz").unlink()
    assert (uneven / "record" / "ckpt_it0000005-shard1.npz").exists()
    ref = store.load_records(ddp_run)
    for run in (out, uneven):
        r = subprocess.run(_torchrun("run", "--resume", str(run), *ARGS), env=ENV, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        got = store.load_records(run)
        np.testing.assert_array_equal(got["iterations"], ref["iterations"])
        np.testing.assert_allclose(got["confidences"], ref["confidences"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["saliency"], ref["saliency"], rtol=1e-3, atol=1e-5)
        assert json.loads((run / "manifest.json").read_text())["distributed"]["world_size"] == 2
        assert not (run / "weights" / "train_state.pt").exists()


@pytest.mark.parametrize(
    "n, batch, message",
    [
        (100, 3, "a batch has 3 images"),  # 1 row for one of the 2 ranks
        (102, 20, "the last batch of each epoch has 2 images"),  # 1 row each
        (2, 32, "a batch has 2 images"),  # fewer images than the batch size
    ],
)
def test_a_batch_too_small_to_split_over_the_ranks_is_a_config_error(n, batch, message):
    """Under torchrun every rank gets ≥ 2 rows of every batch, or the run stops before training."""
    from i2x.cli import cli_message
    from i2x.config import RunConfig
    from i2x.errors import ConfigError
    from i2x.nn.distributed import World
    from i2x.nn.train import check_split, iterations_per_epoch, train

    ipe = iterations_per_epoch(n, batch)
    check_split(n, batch, ipe, World())  # one process: nothing to split, the same data trains
    with pytest.raises(ConfigError, match=message) as err:
        check_split(n, batch, ipe, World(0, 2))
    assert cli_message(err.value).startswith(f"--batch-size {batch}: ")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="torchrun processes"):  # on every rank, before any collective call
        train(
            model,
            torch.zeros(n, 1, 2, 2),
            torch.zeros(n, dtype=torch.long),
            RunConfig(batch_size=batch, epochs=1),
            world=World(1, 2),
            progress=False,
        )


@pytest.mark.parametrize("n, batch", [(100, 4), (101, 20), (104, 20), (100, 20)])
def test_batches_of_two_or_more_rows_per_rank_pass(n, batch):
    """4 rows over 2 ranks is 2 each; 101 = 5 × 20 + 1, the last sample joins the fifth batch (21)."""
    from i2x.nn.distributed import World
    from i2x.nn.train import check_split, iterations_per_epoch

    check_split(n, batch, iterations_per_epoch(n, batch), World(0, 2))
