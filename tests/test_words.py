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
