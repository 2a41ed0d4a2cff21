"""The words of an explanation (:mod:`i2x.words`): where a prototype sits and which way it pulls."""

from __future__ import annotations

import numpy as np

from i2x.words import leaning, pair_item, places


def test_places_name_the_third_of_the_image_a_prototype_sits_in():
    a = np.full((2, 6, 6), 4)  # prototype 4 everywhere else: all over
    a[:, 0, 0] = 0  # top left
    a[:, 5, 2:4] = 1  # bottom centre
    a[:, 2:4, 5] = 2  # middle right
    a[:, 2:4, 2:4] = 3  # centre
    assert places(a, 6) == ["top left", "bottom", "right", "centre", "all over", "nowhere"]


def test_leaning_follows_the_direction_of_the_significant_steps():
    names = ["cat", "dog"]
    one = {"significant_steps": [{"step": 2, "favours": 1}, {"step": 5, "favours": 1}]}
    assert leaning(one, names) == "towards dog"
    flips = {"significant_steps": [{"step": 0, "favours": 0}, {"step": 4, "favours": 1}, {"step": 9, "favours": 0}]}
    assert leaning(flips, names) == "towards cat, then dog, cat (from steps 4, 9)"


def test_a_pair_item_reads_as_a_sentence():
    row = {"prototype": 23, "contain_a": 0.94, "contain_b": 0.0, "effect": 0.54, "effect_ci": [0.49, 0.59],
           "frequency": 1.0, "significant_steps": [{"step": 0, "favours": 4}, {"step": 4, "favours": 9}]}  # fmt: skip
    names = [str(c) for c in range(10)]
    assert pair_item(row, names, 4, 9, "top") == (
        "P-23 (top; in 94 % of the 4s, 0 % of the 9s): when it grows in an image, the model leans towards 4, "
        "then 9 (from step 4); effect 0.54 [0.49, 0.59], listed in 100 % of random halves"
    )


def _shape(line: str) -> str:
    """A printed line with its numbers, class names (digits) and place words masked."""
    import re

    line = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", line)
    return re.sub(
        r"\((top|middle|bottom|left|right|centre|all over|nowhere)( (left|centre|right))?[;)]", "(PLACE", line
    )


def test_the_readme_quotes_lines_the_summary_prints(cli_run):
    """Every line of the README's quoted demo output has the shape of a line of a run's summary (the tiny run's
    numbers differ; the words must not have drifted)."""
    import inspect
    import re
    from pathlib import Path

    import i2x
    from i2x.cli import run as summary_module

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    quoted = re.search(r"It ends with:\n\n```\n(.*?)```", readme, re.S).group(1).splitlines()
    printed = [_shape(p).split(":")[0] for p in i2x.explain_text(i2x.Run(cli_run)).splitlines()]
    source = inspect.getsource(summary_module)  # a line the tiny run has no cause to print (background prototypes)
    for line in quoted:
        head = _shape(line).split(":")[0]
        assert head in printed or head.strip() in source, line


def test_explanations_name_no_symbols_and_place_every_prototype(cli_run):
    import re

    import i2x

    r = i2x.Run(cli_run)
    a, b = (
        (r.explanations()["pairs"][0]["a"], r.explanations()["pairs"][0]["b"]) if r.explanations()["pairs"] else (0, 1)
    )
    for text in (i2x.explain_text(r), i2x.explain_text(r, pair=(a, b)), i2x.explain_text(r, cls=0)):
        assert not re.search(r"W_t|d_t|Eq\.|ΔI", text), text
        assert all(m.group(1) == " (" for m in re.finditer(r"P-\d+(?!\d)(.{2})", text)), text  # P-3 (top) ...


def test_the_report_says_each_pairs_first_items_in_words(cli_run, tmp_path):
    import i2x
    from i2x.report import report

    html = report(cli_run, out=tmp_path / "rep", svg=False).read_text()
    listed = [p for p in i2x.Run(cli_run).explanations()["pairs"] if p["uncertain"] or p["reliable"]]
    assert html.count("<ul class=words>") == len(listed) and "when it grows in an image" in html
    assert 'title="P-0: ' in html  # every prototype chip says where it sits
