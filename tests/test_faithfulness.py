"""Prototype deletion (``i2x faithfulness``): masks, ROAD's imputation, the statistics on
constructed numbers, a planted model that reads one quadrant, and a real tiny run end to end."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from i2x.analysis.faithfulness import (
    deletion_cells,
    faithfulness_summary,
    noisy_linear_impute,
    pair_flips,
    pixel_cells,
    pixel_masks,
    random_cells,
    rank_agreement,
)
from i2x.analysis.stats import holm, paired_test
from i2x.config import ConfigError
from i2x.errors import I2XError
from i2x.nn.faithfulness import deletion_record, faithfulness


# ---------------------------------------------------------------------------- masks
def test_cells_cover_floor_blocks():
    assert pixel_cells(7, 28).tolist() == np.repeat(np.arange(7), 4).tolist()
    assert pixel_cells(3, 10).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]  # floor(u * 10 / 3) = 0, 3, 6, 10
    cells = np.zeros((1, 3, 3), bool)
    cells[0, 1, 2] = True
    m = pixel_masks(cells, 10, 10)[0]
    assert m[3:6, 6:10].all() and m.sum() == 3 * 4


def test_random_cells_avoid_the_prototype_and_match_its_count():
    rng = np.random.default_rng(0)
    assign = rng.integers(0, 4, (50, 5, 5))
    protos = rng.integers(0, 4, 50)
    own = deletion_cells(assign, protos)
    rnd = random_cells(assign, protos, 6, rng)
    assert rnd.shape == (50, 6, 5, 5)
    assert not (rnd & own[:, None]).any()
    n_own, n_other = own.sum((1, 2)), (~own).sum((1, 2))
    np.testing.assert_array_equal(rnd.sum((2, 3)), np.minimum(n_own, n_other)[:, None].repeat(6, 1))
    full = np.zeros((1, 2, 2), int)
    full[0, 0] = 1  # prototype 1 holds 2 of 4 cells, prototype 0 the other 2; ask for 3 of prototype 0's kind
    assert random_cells(np.array([[[0, 0], [0, 1]]]), np.array([0]), 2, rng).sum() == 2  # only one other cell


# ---------------------------------------------------------------------------- ROAD imputation
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside pytorch_grad_cam's road.py (numpy 2)
def test_noisy_linear_matches_road_reference():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    rng = np.random.default_rng(1)
    img = rng.normal(size=(3, 12, 10)).astype(np.float32)
    mask = rng.random((12, 10)) < 0.4
    mask[0, :] = mask[:, -1] = True  # deleted pixels on the border too
    keep = torch.from_numpy((~mask).astype(np.float32))  # ROAD's mask: 1 = keep
    ref = road.NoisyLinearImputer(noise=0.0)(torch.from_numpy(img), keep).numpy()
    mine = noisy_linear_impute(img[None], mask[None], noise=0.0)[0]
    np.testing.assert_allclose(mine, ref, atol=1e-5)
    # a batch is solved as one block-diagonal system: the same as image by image
    imgs = rng.normal(size=(4, 1, 8, 8))
    masks = rng.random((4, 8, 8)) < 0.5
    batch = noisy_linear_impute(imgs, masks, noise=0.0)
    single = np.stack([noisy_linear_impute(imgs[i : i + 1], masks[i : i + 1], noise=0.0)[0] for i in range(4)])
    np.testing.assert_allclose(batch, single, atol=1e-10)


def test_noisy_linear_noise_and_edge_cases():
    rng = np.random.default_rng(2)
    imgs = rng.normal(size=(2, 1, 16, 16))
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 4:12, 4:12] = True
    masks[1] = True  # a whole image: nothing to impute from, filled with 0 (+ noise)
    clean = noisy_linear_impute(imgs, masks, noise=0.0)
    noisy = noisy_linear_impute(imgs, masks, noise=0.01, rng=rng)
    np.testing.assert_array_equal(clean[0][:, ~masks[0]], imgs[0][:, ~masks[0]])  # known pixels untouched
    assert np.all(clean[1] == 0)
    diff = (noisy - clean)[:, 0][masks]
    assert abs(diff.std() - 0.01) < 0.002 and abs(diff.mean()) < 0.002
    const = np.full((1, 1, 9, 9), 3.0)
    m = np.zeros((1, 9, 9), bool)
    m[0, 2:7, 3:8] = True
    np.testing.assert_allclose(noisy_linear_impute(const, m, noise=0.0), const)  # a constant image stays constant


# ---------------------------------------------------------------------------- statistics
def test_paired_test_against_scipy():
    rng = np.random.default_rng(3)
    d = rng.normal(0.2, 1.0, (12, 3))
    t = paired_test(d)
    for c in range(3):
        lo, hi = stats.t.interval(0.95, 11, loc=d[:, c].mean(), scale=stats.sem(d[:, c]))
        assert t["ci_low"][c] == pytest.approx(lo) and t["ci_high"][c] == pytest.approx(hi)
        assert t["p_value"][c] == pytest.approx(stats.ttest_1samp(d[:, c], 0).pvalue)
        assert t["mean"][c] == pytest.approx(d[:, c].mean())
    one = paired_test(np.array([0.5]))
    assert one["mean"] == 0.5 and math.isnan(one["p_value"]) and math.isnan(one["ci_low"])
    flat = paired_test(np.array([[0.0, 0.3]] * 5))
    assert flat["p_value"].tolist() == [1.0, 0.0] and flat["ci_low"].tolist() == [0.0, 0.3]


def test_rank_agreement_and_holm():
    rng = np.random.default_rng(4)
    s, e = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    valid = np.ones((6, 4), bool)
    valid[2] = False
    r = rank_agreement(s, e, valid)
    ref = stats.spearmanr(s[valid], -e[valid])
    assert r["rho"] == pytest.approx(ref.statistic) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["n_pairs"] == 20
    assert rank_agreement(s, -s, valid)["rho"] == pytest.approx(1.0)  # deleting k lowers what S says k supports
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, np.nan, 0.03])), [0.03, 0.06, np.nan, 0.06])


def test_pair_flips_on_constructed_record():
    # 4 images: labels a=0, a=0, b=1, b=1; prototype 5 in all; C = 2; 2 random draws
    p0, p1 = [0.9, 0.1], [0.1, 0.9]
    rec = {
        "image": np.arange(4),
        "prototype": np.full(4, 5),
        "cells": np.ones(4),
        "conf_before": np.array([p0, p0, p1, p0]),  # image 3 (true b) is predicted a before: not counted
        "conf_deleted": np.array([p1, p0, p0, p1]),  # image 0 flips a→b, image 2 flips b→a
        "conf_random": np.array([[p1, p0], [p0, p0], [p1, p1], [p0, p0]]),
    }
    f = pair_flips(rec, np.array([0, 0, 1, 1]), 0, 1, 5)
    assert (f["n_a"], f["n_b"]) == (2, 2)
    assert f["a_to_b"]["n_images"] == 2 and f["a_to_b"]["deleted_rate"] == 0.5 and f["a_to_b"]["random_rate"] == 0.25
    assert f["b_to_a"]["n_images"] == 1 and f["b_to_a"]["deleted_rate"] == 1.0 and f["b_to_a"]["p_value"] is None
    d = np.array([1.0, 0.0]) - np.array([0.5, 0.0])
    assert f["a_to_b"]["p_value"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)


# ---------------------------------------------------------------------------- planted truth
class QuadrantModel(nn.Module):
    """Class 1's logit is the sum of the top-left quadrant's bright pixels, Σ relu(x − 1) / 4 (a plain
    sum would not see a blur, which keeps it); classes 0 and 2 are constant 0."""

    def __init__(self, size: int = 16):
        super().__init__()
        mask = torch.zeros(size, size)
        mask[: size // 2, : size // 2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        s = (torch.relu(x[:, 0] - 1) * self.mask).sum((1, 2)) / 4
        z = torch.zeros_like(s)
        return torch.stack([z, s, z], 1)


def _planted(n: int = 20):
    """Group A (label 1): a blob in the top-left quadrant = prototype 0's cells; group B (label 0):
    a blob in the bottom-right quadrant = prototype 1's cells; every other cell is prototype 2."""
    x = np.zeros((2 * n, 1, 16, 16), np.float32)
    x[:n, 0, 2:6, 2:6] = 4.0  # class-1 logit 12
    x[n:, 0, 10:14, 10:14] = 4.0
    assign = np.full((2 * n, 4, 4), 2)
    assign[:n, :2, :2] = 0
    assign[n:, 2:, 2:] = 1
    jobs = np.zeros((2 * n, 3), bool)
    jobs[:n, 0] = jobs[n:, 1] = True
    labels = np.array([1] * n + [0] * n)
    return torch.from_numpy(x), assign, jobs, labels


@pytest.mark.parametrize("fill", ["noisy-linear", "mean", "blur"])
def test_planted_prototype_is_found_and_random_deletion_is_not(fill):
    x, assign, jobs, labels = _planted()
    rec = deletion_record(QuadrantModel(), x, assign, jobs, fill=fill, draws=5, seed=0, progress=False)
    a = rec["prototype"] == 0
    # random deletion of as many cells elsewhere leaves the read quadrant, hence every confidence, unchanged
    np.testing.assert_allclose(rec["conf_random"][a], np.repeat(rec["conf_before"][:20, None], 5, 1), atol=1e-6)
    score = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # S: prototype 0 supports class 1
    res = faithfulness_summary(rec, labels, score, np.zeros(3, bool), [])
    row = {r["prototype"]: r for r in res["prototypes"]}
    assert row[0]["n_images"] == 20 and row[0]["cells_mean"] == 4
    assert row[0]["effect"][1] < -0.5 and row[0]["p_value"][1] < 1e-6 and row[0]["ci_high"][1] < 0
    assert row[0]["own_class"]["effect"] < -0.5 and row[0]["beats_random"]
    unread = row[1]  # prototype 1 covers a region the model does not read
    assert unread["effect"] == [0.0, 0.0, 0.0] and unread["p_value"] == [1.0, 1.0, 1.0]
    assert not unread["beats_random"]
    assert res["summary"]["beats_random"]["prototypes"] == [0]
    assert res["summary"]["rank_correlation"]["rho"] > 0


def test_deletion_record_is_reproducible_and_seeded():
    x, assign, jobs, _ = _planted(6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 3))  # reads every pixel: sees the imputation noise
    kw = {"draws": 3, "progress": False, "batch_size": 7}
    r1 = deletion_record(model, x, assign, jobs, seed=1, **kw)
    r2 = deletion_record(model, x, assign, jobs, seed=1, **kw)
    r3 = deletion_record(model, x, assign, jobs, seed=2, **kw)
    np.testing.assert_array_equal(r1["conf_random"], r2["conf_random"])
    assert not np.array_equal(r1["conf_deleted"], r3["conf_deleted"])  # the imputation noise follows the seed


# ---------------------------------------------------------------------------- end to end
def _finite(v) -> bool:
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite(x) for x in v)
    return not isinstance(v, float) or math.isfinite(v)


def test_cli_on_a_real_tiny_run(cli_run, tmp_path, capsys):
    from i2x.cli import faithfulness as f

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    parser = argparse.ArgumentParser()
    f.add_parser(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["faithfulness", str(run), "--quiet", "--random-draws", "3", "--device", "cpu"])
    assert f.cmd(a) == 0
    out = capsys.readouterr().out
    assert "Spearman" in out and "beats random" in out and str(run / "faithfulness.json") in out
    doc = json.loads((run / "faithfulness.json").read_text())
    assert doc["config"]["random_draws"] == 3 and doc["fill"]["method"] == "noisy-linear"
    k = len(doc["n_images_per_prototype"])
    c = len(doc["classes"])
    assert {r["prototype"] for r in doc["prototypes"]} == set(range(k)) - set(doc["background"])
    for r in doc["prototypes"]:
        assert len(r["effect"]) == len(r["p_value"]) == len(r["explanation_S"]) == c
        if r["n_images"]:
            assert all(v is not None and math.isfinite(v) for v in r["effect"])
    s = doc["summary"]
    assert s["rank_correlation"]["n_pairs"] > 0 and -1 <= s["rank_correlation"]["rho"] <= 1
    assert 0 <= s["beats_random"]["share"] <= 1
    assert s["deletions"] > 0 and set(doc["timings"]) >= {"load", "masks", "fill", "forward", "statistics", "total"}
    for p in doc["pairs"]:
        assert set(p) >= {"a", "b", "names", "prototype", "a_to_b", "b_to_a"}
    assert _finite(doc)


def test_python_api_settings_and_custom_model(cli_run, tmp_path):
    from i2x.nn.models import load_model

    with pytest.raises(ConfigError, match="random_draws"):
        faithfulness(cli_run, random_draws=0, out=tmp_path / "x.json")
    with pytest.raises(I2XError, match="did you mean 'random_draws'"):
        faithfulness(cli_run, random_draw=3, out=tmp_path / "x.json")
    out = tmp_path / "f.json"
    res = faithfulness(cli_run, model=load_model(cli_run), fill="mean", random_draws=2, out=out, progress=False)
    assert res["path"] == out and json.loads(out.read_text())["fill"]["method"] == "mean"
    assert res["model"].startswith("given") and not (cli_run / "faithfulness.json").exists()
