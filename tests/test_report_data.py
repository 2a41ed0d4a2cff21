"""What the report's figures plot, read back from the matplotlib objects (issue 17): the pair
figure's contribution direction (a − b), class confidence over the class's own samples, the
gallery's typical positions (nearest the centroid), on a RunData built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from i2x.analysis.prototypes import typical_positions
from i2x.report import figures as F
from i2x.report import page as P
from i2x.report.load import RunData, finetune_summary

CLASSES = ["zero", "one", "two"]


def _row(k: int, **kw) -> dict:
    """A row of explanations.json's pair lists (uncertain / reliable)."""
    row = {"prototype": k, "p_value": None, "score": 0.0, "sign_flips": 0, "sign_changes_at": [], "favours": 0}
    return {**row, "significant_steps": [], "total_contribution": 0.0, "contain_a": 1.0, "contain_b": 1.0, **kw}


def _data(tmp_path: Path | None = None) -> RunData:
    """T = 3 steps (4 checkpoints), N = 6 samples (2 per class), K = 3 prototypes, 2x2 maps."""
    rng = np.random.default_rng(0)
    T, N, C, K = 3, 6, 3, 3
    labels = np.array([0, 0, 1, 1, 2, 2])
    conf = np.full((T + 1, N, C), 0.9)  # every sample of another class: 0.9 (must not enter the mean)
    conf[:, 0, 0], conf[:, 1, 0] = [0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.5, 0.8]
    conf[:, 2, 1], conf[:, 3, 1] = [0.2, 0.2, 0.6, 0.7], [0.4, 0.6, 0.6, 0.9]
    conf[:, 4, 2], conf[:, 5, 2] = [0.3, 0.3, 0.3, 0.3], [0.5, 0.5, 0.5, 0.5]
    W = np.zeros((T, K, C))
    W[:, 0, 0], W[:, 0, 1] = [0.5, -0.2, 0.1], [0.1, 0.3, -0.4]  # d(0,1) = [0.4, −0.5, 0.5]
    W[:, 1, 0], W[:, 1, 1] = [0.2, 0.2, 0.2], [-0.1, -0.1, -0.1]  # d(0,1) = 0.3: favours "zero"
    W[:, 2, 2] = [0.7, 0.0, -0.7]
    inten = rng.random((T + 1, N, K))
    assign = np.array([[[0, 1], [2, 0]]] * N, dtype=np.int32)
    typical = np.full((K, 4, 3), -1, dtype=np.int32)
    typical[0, :3] = [[4, 0, 0], [1, 1, 1], [2, 0, 0]]
    typical[1, :1] = [[5, 0, 1]]
    typical[2, :2] = [[3, 1, 0], [0, 1, 0]]
    return RunData(
        path=tmp_path or Path("run"),
        manifest={"data": {"dataset": "digits"}, "config": {}, "model": {}, "metrics": {}},
        classes=CLASSES,
        iterations=np.array([0, 5, 10, 12]),
        labels=labels,
        images=(np.arange(N)[:, None, None, None] * 40 + np.zeros((N, 1, 8, 8))).astype(np.uint8),
        confidences=conf,
        saliency=rng.random((N, 2, 2)),
        assignments=assign,
        typical=typical,
        intensity=inten,
        contain=np.ones((N, K), bool),
        W=W,
        n_clusters=np.array([2, 2, 1]),
        flagged=np.array([False, False, False]),
        class_delta=np.zeros((T, C)),
        confusion=np.array([[9, 3, 0], [1, 8, 0], [0, 0, 10]]),
        explanations={
            "config": {"min_pair_contain": 0.05},
            "significance": {"calibrated": False},
            "background": [],
            "classes": {},
            "pairs": [
                {
                    "a": 0,
                    "b": 1,
                    "names": ["zero", "one"],
                    "confusions": {"a_to_b": 3, "b_to_a": 1},
                    "uncertain": [_row(0, sign_flips=2, sign_changes_at=[1, 2], total_contribution=0.4)],
                    "reliable": [_row(1, favours=0, total_contribution=0.9)],
                }
            ],
        },
        finetune=None,
        finetune_table=None,
    )


def test_class_conf_averages_over_the_class_samples_only():
    d = _data()
    np.testing.assert_allclose(d.class_conf(0), [0.2, 0.3, 0.4, 0.6])
    np.testing.assert_allclose(d.class_conf(1), [0.3, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(d.class_conf(2), [0.4, 0.4, 0.4, 0.4])
    d.labels = np.array([0, 0, 1, 1, 1, 1])  # no sample of class 2 left: NaN, not a mean over others
    assert np.isnan(d.class_conf(2)).all() and len(d.class_conf(2)) == 4


def test_class_curves_plot_class_confidence_and_class_intensity():
    d = _data()
    fig = F.class_curves_figure(d, 1, [0, 2], [1], F.proto_colors(3))
    ax1, ax2 = fig.axes[:2]
    np.testing.assert_allclose(ax1.lines[0].get_xdata(), [0, 5, 10, 12])
    np.testing.assert_allclose(ax1.lines[0].get_ydata(), [0.3, 0.4, 0.6, 0.8])
    assert [ln.get_label() for ln in ax2.lines] == ["P-0", "P-2"]
    for ln, k in zip(ax2.lines, [0, 2], strict=True):
        np.testing.assert_allclose(ln.get_ydata(), d.intensity[:, 2:4, k].mean(1))  # class 1 = samples 2, 3
    # the key step t = 1 shades iterations 5..10 on both panels
    spans = [p.get_x() for p in ax1.patches]
    assert 5 in spans


def test_pair_figure_plots_a_minus_b():
    d = _data()
    fig = F.pair_contribution_figure(d, 0, 1, [0], [1], F.proto_colors(3))
    ax1, ax2 = fig.axes[:2]
    D = d.W[:, :, 0] - d.W[:, :, 1]  # (T, K), + favours "zero"
    np.testing.assert_allclose(np.asarray(ax1.images[0].get_array()), D.T)
    lines = {ln.get_label(): ln for ln in ax2.lines if not ln.get_label().startswith("_")}
    assert set(lines) == {"P-0 (uncertain)", "P-1 (reliable → zero)"}
    np.testing.assert_allclose(lines["P-0 (uncertain)"].get_ydata(), [0.4, -0.5, 0.5])
    np.testing.assert_allclose(lines["P-1 (reliable → zero)"].get_ydata(), [0.3, 0.3, 0.3])
    np.testing.assert_allclose(lines["P-0 (uncertain)"].get_xdata(), [5, 10, 12])  # x = end of each step
    assert ax2.get_ylabel() == "d_t = W[k,zero] − W[k,one]"
    # the other order: the figure of (1, 0) is the negative, and the reliable one favours "zero" = b
    fig = F.pair_contribution_figure(d, 1, 0, [0], [1], F.proto_colors(3))
    np.testing.assert_allclose(np.asarray(fig.axes[0].images[0].get_array()), -D.T)
    labels = [ln.get_label() for ln in fig.axes[1].lines]
    assert "P-1 (reliable → zero)" in labels


def test_w_heatmap_shows_each_class_column():
    d = _data()
    fig = F.w_heatmap_figure(d, F.proto_colors(3))
    for c in range(3):
        np.testing.assert_allclose(np.asarray(fig.axes[c].images[0].get_array()), d.W[:, :, c].T)
        assert fig.axes[c].get_title() == CLASSES[c]


def test_confusion_figure_rows_are_true_classes():
    d = _data()
    fig = F.confusion_figure(d)
    ax = fig.axes[0]
    off = np.asarray(ax.images[0].get_array(), dtype=float)
    assert off[0, 1] == pytest.approx(3 / 12) and off[1, 0] == pytest.approx(1 / 9)  # share of the true class
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(0, 1)] == "3" and texts[(1, 0)] == "1"  # (row = true, column = predicted)
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class"


def test_typical_positions_are_nearest_the_centroid_one_per_sample():
    # N = 3 samples of 1x3 maps; prototype 0's positions at distances 5, 1, 3 | 0.5, 4, x | 2, x, 9
    h, w = 1, 3
    labels = np.array([0, 0, 0, 0, 0, 1, 0, 1, 0])
    dist = np.array([5.0, 1.0, 3.0, 0.5, 4.0, 0.0, 2.0, 0.0, 9.0])
    centers = np.array([[0.0], [10.0]])
    z = np.where(labels == 0, dist, 10.0)[:, None]
    typ = typical_positions(z, labels, centers, (3, h, w), n=3)
    # per sample its nearest position, samples ordered by that distance: (1, 0, 0) 0.5, (0, 0, 1) 1, (2, 0, 0) 2
    assert typ[0].tolist() == [[1, 0, 0], [0, 0, 1], [2, 0, 0]]
    assert typ[1].tolist() == [[1, 0, 2], [2, 0, 1], [-1, -1, -1]]  # both at distance 0: stable order
    assert typical_positions(z, labels, centers, (3, h, w), n=2)[0].tolist() == [[1, 0, 0], [0, 0, 1]]


def test_gallery_tiles_are_the_typical_positions_in_order(monkeypatch):
    d = _data()
    calls = []

    def spy(img, cells=None, color=(1, 0, 0), sal=None, vmax=1.0, scale=3):
        calls.append((int(img[0, 0, 0]) // 40, None if cells is None else tuple(np.argwhere(cells)[0])))
        return np.zeros((8 * scale, 8 * scale, 3))

    monkeypatch.setattr(F, "tile", spy)
    _, labels = F.gallery_image(d, F.proto_colors(3), n=4)
    # row by row: sample (from its image) and the outlined cell (u, v) of each typical position
    assert calls == [(4, (0, 0)), (1, (1, 1)), (2, (0, 0)), (5, (0, 1)), (3, (1, 0)), (0, (1, 0))]
    assert [lab[0] for lab in labels] == ["P-0", "P-1", "P-2"]


def test_examples_show_the_samples_with_the_largest_final_intensity(monkeypatch):
    d = _data()
    d.intensity[-1, :, 2] = [0.1, 0.9, 0.5, 0.7, 0.3, 0.0]
    d.contain[5, 2] = False
    calls = []
    monkeypatch.setattr(F, "tile", lambda img, *a, **k: calls.append(int(img[0, 0, 0]) // 40) or np.zeros((8, 8, 3)))
    F.examples_image(d, [2], [np.arange(6)], F.proto_colors(3), 3, False, 1.0)
    assert calls == [1, 3, 2]


def test_page_draws_each_pair_in_its_own_order_with_its_counts(monkeypatch, tmp_path):
    d = _data(tmp_path)
    seen = []
    real = F.pair_contribution_figure

    def spy(dd, a, b, unc, rel, colors, favours=None):
        seen.append((a, b, list(unc), list(rel)))
        assert favours == {1: 0}  # the reliable prototype's listed class reaches the legend
        return real(dd, a, b, unc, rel, colors, favours)

    monkeypatch.setattr(F, "pair_contribution_figure", spy)
    html = P.Page(d, F.FigureWriter(tmp_path / "fig", svg=False)).pairs()
    assert seen == [(0, 1, [0], [1])]
    assert "zero→one: 3" in html and "one→zero: 1" in html


def test_page_class_section_plots_the_class_and_its_key_steps(monkeypatch, tmp_path):
    d = _data(tmp_path)
    seen = []
    monkeypatch.setattr(F, "class_curves_figure", lambda dd, c, protos, steps, colors: seen.append((c, protos, steps)))
    monkeypatch.setattr(P.Page, "figure", lambda self, fig, name, caption, alt: "")
    e = {
        "index": 1,
        "n_samples": 2,
        "shared": [2],
        "specialized": [],
        "key_checkpoints": [
            {"step": 2, "delta_confidence": 0.4, "prototypes": [{"prototype": 0, "weight": 0.5, "against": []}]}
        ],
    }
    html = P.Page(d, F.FigureWriter(tmp_path / "fig", svg=False)).one_class(1, e)
    assert seen == [(1, [0], [2])]
    assert "T2→T3 (it. 10→12)" in html and "raises" in html


def test_report_finetune_summary_uses_the_sample_std():
    res = {
        "pair": [0, 1],
        "baseline": {"accuracy": 0.9, "confusion": [[5, 2], [1, 5]]},
        "schedules": {
            "full": {
                "repeats": [
                    {"accuracy": 0.9, "confusion": [[5, 1], [0, 5]]},
                    {"accuracy": 0.8, "confusion": [[5, 3], [2, 5]]},
                    {"accuracy": 0.7, "confusion": [[5, 8], [1, 5]]},
                ]
            }
        },
    }
    s = finetune_summary(res)["schedules"]["full"]
    assert s["accuracy"] == pytest.approx((80.0, 10.0))
    assert s["a_to_b"] == pytest.approx((4.0, np.std([1, 3, 8], ddof=1)))
    assert s["both"] == pytest.approx((5.0, np.std([1, 5, 9], ddof=1)))
