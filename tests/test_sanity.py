"""The saliency sanity check (Adebayo et al. 2018's model-parameter randomisation, Quantus' MPRT)."""

from __future__ import annotations

import torch
from torch import nn

from i2x.nn.sanity import SIMILAR, head_modules, randomisation_check


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3),
    )  # fmt: skip


def test_the_head_is_what_runs_after_the_target_layer():
    m = _net()
    assert head_modules(m, "2", torch.zeros(1, 3, 8, 8)) == [m[6], m[8]]
    assert head_modules(m, "0", torch.zeros(1, 3, 8, 8)) == [m[2], m[6], m[8]]


def test_gradcam_passes_and_a_map_that_ignores_the_model_fails():
    m = _net().eval()
    x, y = torch.randn(32, 3, 8, 8), torch.arange(32) % 3
    before = [p.detach().clone() for p in m.parameters()]
    ok = randomisation_check(m, x, y, "2")
    assert ok["passed"] and ok["rank_correlation"] < SIMILAR and ok["randomised"] == 2 and ok["images"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))  # the model is left alone

    def edges(model, images, targets):  # a "saliency" of the image alone: the same whatever the weights
        return images.abs().sum(1)

    bad = randomisation_check(m, x, y, "2", method=edges)
    assert not bad["passed"] and bad["rank_correlation"] > 0.99


def test_the_default_run_reports_the_check_in_its_manifest_summary_and_report(cli_run, tmp_path):
    import i2x

    r = i2x.Run(cli_run)
    check = r.manifest["metrics"]["saliency_randomisation"]
    assert check["images"] > 0 and check["randomised"] >= 1 and isinstance(check["passed"], bool)
    assert "saliency sanity check: with the layers above the target layer re-initialised" in i2x.explain_text(r)
    from i2x.report import report

    assert "saliency sanity check" in report(cli_run, out=tmp_path / "rep", svg=False).read_text()
