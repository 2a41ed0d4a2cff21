"""The page of `i2x compare` in a real browser: headless Chromium opens DIR/index.html from disk
(every image loads, no console error, every section there). Screenshot: test-artifacts/compare.png."""

from __future__ import annotations

import pytest
from chromium import ARTIFACTS, open_report

import i2x

pytestmark = pytest.mark.browser

SECTIONS = ("summary", "matching", "confusion", "pairs", "classes", "examples")


def test_compare_page_opens_from_disk_in_chromium(cli_run, ds7_run, tmp_path):
    res = i2x.compare(cli_run, ds7_run, out=tmp_path / "cmp")
    facts, errors = open_report(
        res.path / "index.html", tmp_path / "profile", ARTIFACTS / "compare.png", full_height=5000
    )
    assert facts["protocol"] == "file:"
    assert facts["title"].startswith("I2X comparison")
    assert facts["images"] >= 4  # matching, confusion, a pair, matched examples
    assert facts["broken"] == [], f"images that did not load: {facts['broken']}"
    assert errors == [], f"console errors: {errors}"
    for sec in SECTIONS:
        assert sec in facts["ids"], f"section {sec} missing"
    assert any(i.startswith("pair-") for i in facts["ids"])
    assert (ARTIFACTS / "compare.png").read_bytes()[:4] == b"\x89PNG"
