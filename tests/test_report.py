"""i2x.report: the HTML report of a run directory, without a browser (see test_report_browser.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SECTIONS, write_finetune

from i2x import store
from i2x.errors import I2XError, RunDirError
from i2x.report import report
from i2x.report.figures import grid, proto_colors, proto_hex, tile, upsample
from i2x.report.load import finetune_summary
from i2x.report.page import md_tables


@pytest.fixture(scope="session")
def report_index(report_run) -> Path:
    return report(report_run)


def _srcs(html: str) -> list[str]:
    return re.findall(r'<img[^>]* src="([^"]+)"', html)


def test_report_writes_page_and_every_figure_as_png_and_svg(report_run, report_index):
    assert report_index == report_run / "report" / "index.html"
    html = report_index.read_text()
    srcs = _srcs(html)
    assert len(srcs) >= 5
    for s in srcs:
        assert not s.startswith(("http:", "https:", "//", "/")), s  # relative: opens from disk
        png = report_index.parent / s
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", s
        assert png.with_suffix(".svg").read_text().lstrip().startswith(("<?xml", "<svg")), s
    for sec in SECTIONS:
        assert f'id="{sec}"' in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_report_names_classes_pairs_and_links_them(report_run, report_index):
    html = report_index.read_text()
    m = store.read_manifest(report_run)
    ex = store.load_json(report_run / "explanations.json")
    for name, e in ex["classes"].items():
        assert f'id="class-{e["index"]}"' in html and f"Class {name}" in html
    assert ex["pairs"], "the tiny run makes errors, so it has confused pairs"
    for p in ex["pairs"]:
        pid = f"pair-{p['a']}-{p['b']}"
        assert f'id="{pid}"' in html and f'href="#{pid}"' in html
        assert (report_index.parent / "fig" / f"{pid}-contribution.png").exists()
    assert f"{100 * m['metrics']['test_accuracy']:.2f} %" in html
    assert 'id="finetune"' not in html  # no DIR/finetune: the section is skipped


def test_prototype_chips_use_one_colour_per_prototype(report_run, report_index):
    html = report_index.read_text()
    k = store.load_npz(report_run / "arrays" / "prototypes.npz")["centroids"].shape[0]
    hexes = proto_hex(k)
    chips = re.findall(r'--c:(#[0-9a-f]{6});--t:#(?:000000|ffffff)">P-(\d+)<', html)
    assert chips
    for col, p in chips:
        assert col == hexes[int(p)]


def test_finetune_section_from_results_and_table(report_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report"))
    write_finetune(run)
    html = report(run, svg=False).read_text()
    assert 'id="finetune"' in html and "<td>91.00 ± 1.41</td>" in html
    assert (run / "report" / "fig" / "finetune.png").exists()


def test_finetune_summary_mean_and_sample_std():
    reps = [{"accuracy": a, "confusion": [[0, x], [y, 0]]} for a, x, y in [(0.98, 4, 2), (0.96, 2, 0), (0.97, 3, 4)]]
    base = {"accuracy": 0.95, "confusion": [[0, 5], [3, 0]]}
    s = finetune_summary({"pair": [0, 1], "schedules": {"full": {"repeats": reps}}, "baseline": base})
    row = s["schedules"]["full"]
    assert (s["a"], s["b"], row["n"]) == (0, 1, 3)
    assert row["accuracy"][0] == pytest.approx(97.0) and row["accuracy"][1] == pytest.approx(1.0)
    assert row["a_to_b"] == pytest.approx((3.0, 1.0)) and row["b_to_a"] == pytest.approx((2.0, 2.0))
    assert row["both"] == pytest.approx((5.0, np.std([6, 2, 7], ddof=1)))
    assert s["baseline"] == {"accuracy": pytest.approx(95.0), "both": 8}
    ctrl = {"random-pair": {"schedules": {"full": {"repeats": reps[:2]}}, "removed": [3, 3]}}
    s2 = finetune_summary(
        {"pair": [0, 1], "schedules": {"full": {"repeats": reps}}, "baseline": base, "controls": ctrl}
    )
    assert list(s2["schedules"]) == ["full", "full [random-pair]"] and s2["schedules"]["full [random-pair]"]["n"] == 2
    assert finetune_summary({"schedules": "?"}) is None
    # only the format `i2x finetune` writes: a list of schedules or class names as the pair are not it
    assert (
        finetune_summary({"pair": [0, 1], "schedules": [{"name": "full", "repeats": reps}], "baseline": base}) is None
    )
    assert finetune_summary({"pair": ["a", "b"], "schedules": {"full": {"repeats": reps}}, "baseline": base}) is None


def test_incomplete_run_is_a_one_line_error(report_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report", "arrays"))
    m = store.read_manifest(run)
    del m["stages"]["dynamics"]
    store.write_manifest(run, m)
    with pytest.raises(RunDirError, match="missing stages: dynamics.*--resume"):
        report(run)
    with pytest.raises(I2XError, match="does not exist"):
        report(tmp_path / "nope")


def test_cli_report_skips_malformed_finetune_and_reports_bad_dir(report_run, tmp_path, capsys):
    from i2x.cli import main

    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report"))
    (run / "finetune").mkdir()
    (run / "finetune" / "results.json").write_text("{not json")  # another stage's broken output
    out = tmp_path / "rep"
    (out / "fig").mkdir(parents=True)
    (out / "fig" / "pair-8-9-contribution.png").write_bytes(b"stale figure of an earlier report")
    (out / "fig" / "notes.txt").write_text("not ours")
    assert main(["report", str(run), "--out", str(out), "--no-svg"]) == 0
    assert not (out / "fig" / "pair-8-9-contribution.png").exists() or (
        out / "fig" / "pair-8-9-contribution.png"
    ).read_bytes().startswith(b"\x89PNG")
    assert (out / "fig" / "notes.txt").read_text() == "not ours"
    assert str(out / "index.html") in capsys.readouterr().out
    assert 'id="finetune"' not in (out / "index.html").read_text()
    assert not list((out / "fig").glob("*.svg"))
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("i2x report: error:") and "\n" not in err


def test_proto_colors_distinct_and_stable():
    for k in (4, 10, 32, 60, 128):
        c = proto_colors(k)
        assert c.shape == (k, 3)
        assert len({tuple(np.round(x, 4)) for x in c}) == k
        np.testing.assert_array_equal(c[: min(k, 10)], proto_colors(k)[: min(k, 10)])
    np.testing.assert_array_equal(proto_colors(32)[:20], proto_colors(40)[:20])


def test_upsample_bilinear_oracle():
    m = np.array([[0.0, 1.0], [2.0, 3.0]])
    u = upsample(m, 4, 4)
    # pixel centres at (i + 0.5) / 2 - 0.5 -> -0.25, 0.25, 0.75, 1.25 (clipped to 0..1)
    np.testing.assert_allclose(u[0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(u[:, 0], [0, 0.5, 1.5, 2])
    np.testing.assert_allclose(upsample(np.full((7, 7), 2.5), 28, 28), 2.5)


def test_tile_outlines_cell_in_prototype_colour_and_keeps_the_rest():
    img = np.full((1, 8, 8), 255, np.uint8)
    img[0, :4] = 0
    cells = np.zeros((2, 2), bool)
    cells[1, 0] = True
    t = tile(img, cells, (1, 0, 0), scale=2)  # (16, 16, 3); cell (1,0) = rows 8-15, cols 0-7
    assert t.shape == (16, 16, 3)
    np.testing.assert_array_equal(t[8, 0:8], [[1, 0, 0]] * 8)  # top edge of the cell
    np.testing.assert_array_equal(t[15, 3], [1, 0, 0])  # bottom edge
    np.testing.assert_array_equal(t[11, 4], [1, 1, 1])  # inside the cell: the image
    np.testing.assert_array_equal(t[2, 12], [0, 0, 0])  # other cells untouched
    g = grid([[t, None], [None, t]], pad=2)
    assert g.shape == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2, 3)
    np.testing.assert_array_equal(g[2:18, 2:18], t)
    assert (g[2:18, 20:36] == 1).all()


def test_md_tables_escapes_and_skips_separator():
    h = md_tables("# Title\n| a | <b> |\n|---|:--:|\n| 1 | 2 |\n")
    assert h == "<p>Title</p><table><tr><th>a</th><th>&lt;b&gt;</th></tr><tr><td>1</td><td>2</td></tr></table>"


def test_faithfulness_section_from_a_real_deletion_pass(report_run, tmp_path):
    from i2x.nn.faithfulness import faithfulness

    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report"))
    res = faithfulness(run, random_draws=2, device="cpu", progress=False)
    html = report(run, svg=False).read_text()
    assert 'id="faithfulness"' in html and 'href="#faithfulness"' in html
    assert f"{res['summary']['deletions']} deletions" in html
    assert (run / "report" / "fig" / "faithfulness.png").exists()


def test_every_prototype_chip_has_readable_text():
    from i2x.report import figures as F

    for k in (10, 32, 60, 128):  # every palette the report uses
        for rgb in F.proto_colors(k):
            assert F.contrast(rgb, F.text_on(rgb) == "#000000" and (0, 0, 0) or (1, 1, 1)) >= 4.5
    assert round(F.contrast((1, 1, 1), (0, 0, 0)), 6) == 21.0


def test_a_pair_with_nothing_listed_gets_words_not_an_empty_plot(report_run):
    from i2x.report import figures as F
    from i2x.report.load import load_run

    d = load_run(report_run)
    fig = F.pair_contribution_figure(d, 0, 1, [], [], proto_colors(d.k))
    right = fig.axes[1]
    assert not right.axison and "no uncertain or reliable prototype" in right.texts[0].get_text()


def test_pairs_have_in_page_links_and_overlays_are_large(report_index, report_run):
    from i2x.report import figures as F
    from i2x.report.load import load_run

    html = report_index.read_text()
    pairs = html[html.index('<section id="pairs">') :]
    assert re.search(r'<p class="classnav"><a href="#pair-\d+-\d+">', pairs)
    d = load_run(report_run)
    img, _ = F.examples_image(d, [0], [np.arange(len(d.labels))], proto_colors(d.k), 2, True, 1.0)
    assert img.shape[0] >= 112  # a saliency overlay tile is ~128 px, not 64


def test_a_run_re_analysed_with_samples_as_rows_says_so(report_run, tmp_path):
    """``i2x analyze DIR --aggregate samples --opposite-step adjusted`` on a finished run redoes the dynamics
    onwards (the settings are in the manifest), every step has one row per sample, and the report says
    there is no HDBSCAN."""
    from i2x.cli import main

    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report"))
    assert main(["analyze", str(run), "--aggregate", "samples", "--opposite-step", "adjusted"]) == 0
    m = store.load_json(run / "manifest.json")
    assert m["stages"]["dynamics"]["settings"]["aggregate"] == "samples"
    assert m["stages"]["explain"]["settings"]["explain"]["opposite_step"] == "adjusted"
    n = len(store.load_npz(run / "arrays" / "intensity.npz")["contain"])
    assert (store.load_npz(run / "arrays" / "dynamics.npz")["n_clusters"] == n).all()
    html = report(run).read_text()
    assert "aggregate = samples, no HDBSCAN" in html
    assert "every sample of E is its own row" in html and "Many flagged steps" not in html  # one caption, not both
