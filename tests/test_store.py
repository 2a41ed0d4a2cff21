"""The run directory's torch-free loaders: records keyed by (checkpoint, sample index)."""

import numpy as np
import pytest

from i2x.errors import RunDirError
from i2x.store import checkpoint_iterations, load_records, save_npz


def _write(run, it, idx, shard=None):
    idx = np.asarray(idx)
    name = f"ckpt_it{it:07d}" + ("" if shard is None else f"-shard{shard}") + ".npz"
    save_npz(
        run / "record" / name,
        iteration=np.int64(it),
        sample_index=idx,
        confidences=np.stack([idx, -idx], 1).astype(np.float32) + it,  # (n, 2)
        saliency=np.ones((len(idx), 2, 2), np.float32) * idx[:, None, None] + it,
    )


def test_shards_are_merged_by_sample_index_and_saliency_modes(tmp_path):
    for it in (0, 40):
        _write(tmp_path, it, [30, 10], shard=1)  # shards hold slices of E in any order
        _write(tmp_path, it, [20], shard=0)
    assert checkpoint_iterations(tmp_path) == [0, 40]
    r = load_records(tmp_path)
    np.testing.assert_array_equal(r["sample_index"], [10, 20, 30])
    np.testing.assert_array_equal(r["confidences"][1, :, 0], [50, 60, 70])
    assert r["saliency"].shape == (2, 3, 2, 2) and r["saliency"][0, 2, 0, 0] == 30
    last = load_records(tmp_path, saliency="last")
    assert last["saliency"].shape == (1, 3, 2, 2) and last["saliency"][0, 0, 0, 0] == 50
    np.testing.assert_array_equal(last["confidences"], r["confidences"])
    assert "saliency" not in load_records(tmp_path, saliency="none")


def test_a_missing_shard_is_detected(tmp_path):
    _write(tmp_path, 0, [1, 2])
    _write(tmp_path, 40, [1])
    with pytest.raises(RunDirError, match="shard is missing"):
        load_records(tmp_path)
    with pytest.raises(RunDirError, match="no checkpoint records"):
        load_records(tmp_path / "empty")
