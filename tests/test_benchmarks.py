"""The measuring scripts of benchmarks/ whose numbers docs/RESULTS.md reports for issue 24: pooled_steps.py
(the one-test-over-all-steps rule: planted truth and null) and explanation_sets.py (its counting)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from helpers import A, B, planted


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pooled_steps, explanation_sets = _load("pooled_steps"), _load("explanation_sets")


def _pooled(seed: int, signal: bool, permutations: int = 199):
    conf, inten, labels = planted(seed, T=6, n_group=40, K=6, signal=signal)
    return pooled_steps.pooled_pvalues(conf, inten, labels, 0.05, 10.0, "relative", permutations, seed)


def test_finds_the_planted_one_sided_link():
    """Prototype 1 goes with A's confidence within class at every step: found, favouring A. (Prototype 0,
    the generator's alternating one, shares prototype 1's rows at the even steps, so the ridge gives it a
    net direction too: a net test over training has no uncertain role to give it, which is one reason the
    rule is measured, not adopted.)"""
    j = list(zip(*np.triu_indices(3, 1), strict=True)).index((A, B))
    for seed in range(3):
        S, p = _pooled(seed, signal=True)
        assert p[1, j] <= 0.01 and S[1, j] > 0
        assert (p[2:, j] > 0.01).all()  # the noise prototypes


def test_null_lists_about_alpha():
    """No link (the planted generator without signal): over 20 seeds the share of p < 0.05 stays near 5 %."""
    hits = [(_pooled(seed, signal=False)[1] < 0.05).mean() for seed in range(20)]
    assert np.mean(hits) <= 0.08


def test_explanation_sets_counts_in_the_first_runs_numbers():
    """Items renumbered into the first run's prototypes agree where they name the same prototype; the
    Jaccard of two sets is |A ∩ B| / |A ∪ B| beside random matchings far below it; none listed: None."""
    first = {(4, 9, "uncertain", 3), (4, 9, "reliable->9", 5), (0, 6, "reliable->6", 1)}
    other = {(4, 9, "uncertain", 0), (4, 9, "reliable->9", 5), (3, 5, "reliable->3", 2)}
    to_first = np.array([3, 1, 2, 0, 4, 5])  # the other run's P-0 is the first run's P-3 and vice versa
    ren = explanation_sets.renumbered(other, to_first)
    assert ren == {(4, 9, "uncertain", 3), (4, 9, "reliable->9", 5), (3, 5, "reliable->3", 2)}
    jac, rnd = explanation_sets.pairwise([first, ren, first], k=6)
    assert jac == {"0-1": 0.5, "0-2": 1.0, "1-2": 0.5}
    assert rnd["0-2"] < 1.0
    assert explanation_sets.pairwise([set(), set()], k=6)[0] == {"0-1": None}


def test_explanation_sets_top_item_is_the_first_uncertain_else_the_first_reliable():
    rel = [{"prototype": 5, "favours": 9, "frequency": 0.7}, {"prototype": 2, "favours": 4, "frequency": 0.9}]
    unc = [{"prototype": 3, "favours": 4, "frequency": 0.6}]
    assert explanation_sets.top_item({"uncertain": unc, "reliable": rel}) == ("uncertain", 3)
    assert explanation_sets.top_item({"uncertain": [], "reliable": rel}) == ("reliable->9", 5)
    assert explanation_sets.top_item({"uncertain": [], "reliable": rel}, by_frequency=True) == ("reliable->4", 2)
    assert explanation_sets.top_item({"uncertain": [], "reliable": []}) is None
