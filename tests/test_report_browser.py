"""The report in a real browser: headless Chromium opens DIR/report/index.html from disk and
we check what a reader would see (every image loaded, no console error, every section there).

Chromium is driven by tests/chromium.py. The screenshot lands in ``test-artifacts/report.png``
(gitignored).
"""

from __future__ import annotations

import shutil

import pytest
from chromium import ARTIFACTS, open_report
from helpers import SECTIONS, write_finetune

from i2x.report import report

pytestmark = pytest.mark.browser


def test_report_opens_from_disk_in_chromium(report_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report_run, run, ignore=shutil.ignore_patterns("report"))
    write_finetune(run)  # so every section, fine-tuning included, is drawn
    index = report(run)
    facts, errors = open_report(index, tmp_path / "profile", ARTIFACTS / "report.png", full_height=6000)
    assert facts["protocol"] == "file:"
    assert facts["title"].startswith("I2X report")
    assert facts["images"] >= 5
    assert facts["broken"] == [], f"images that did not load: {facts['broken']}"
    assert errors == [], f"console errors: {errors}"
    for sec in (*SECTIONS, "finetune"):
        assert sec in facts["ids"], f"section {sec} missing"
    assert any(i.startswith("class-") for i in facts["ids"])
    assert any(i.startswith("pair-") for i in facts["ids"])
    assert (ARTIFACTS / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_browser_check_catches_a_broken_image(report_run, tmp_path):
    # the check above must be able to fail: a page with one missing figure is caught
    index = report(report_run, tmp_path / "report", svg=False)
    (index.parent / "fig" / "confusion.png").unlink()
    facts, errors = open_report(index, tmp_path / "profile")
    assert facts["broken"] == ["fig/confusion.png"]
    assert any("confusion.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
