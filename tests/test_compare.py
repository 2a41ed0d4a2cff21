"""i2x compare: two runs side by side (paper §3.4), prototypes matched by the cells they cover."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import i2x
from i2x import store
from i2x.analysis.compare import MATCH_THRESHOLD, match_prototypes, overlap_matrix
from i2x.cli import main
from i2x.errors import I2XError

ROW_KEYS = {"a", "b", "overlap", "best_b", "best_overlap", "background_a"}


def test_a_run_compared_with_itself_matches_every_prototype_to_itself(cli_run):
    res = i2x.compare(cli_run, cli_run)  # no out: nothing is written
    d = res.data
    assert res.path is None
    assert [(r["a"], r["b"], r["overlap"], r["status"]) for r in d["matching"]] == [
        (k, k, 1.0, "matched") for k in range(len(d["matching"]))
    ]
    assert d["unmatched_b"] == [] and d["matching_summary"]["matched_share"] == 1.0
    assert d["pairs"] and all(p["difference"]["score"] == 0 for p in d["pairs"])
    assert res.top_pairs() == []
    assert all(c["same_first"] and c["same_order"] for c in d["key_prototypes"])
    assert not np.any(d["confusion"]["difference"]) and d["confusion"]["largest_changes"] == []
    bg = store.load_npz(cli_run / "arrays" / "intensity.npz")["background"]
    assert [r["background_a"] for r in d["matching"]] == bg.tolist()
    for g in d["agreement"].values():  # a run agrees with itself wherever it lists anything
        assert isinstance(g, str) or g["jaccard"] in (None, 1.0)


def test_role_agreement_against_random_matchings():
    from i2x.analysis.compare import role_agreement

    a = {(0, 1, "uncertain", 0), (0, 2, "reliable->0", 1), (1, 2, "reliable->2", 2), (0, 1, "uncertain", 3)}
    perm = {0: 4, 1: 3, 2: 2, 3: 1, 4: 0}  # B is A renumbered
    b = {(*i[:-1], perm[i[-1]]) for i in a}
    g = role_agreement(a, b, perm, 5)
    assert g["jaccard"] == 1.0 and g["shared"] == 4 and g["items"] == [4, 4]
    assert g["random_matching"]["mean"] < 0.5 and g["random_matching"]["draws"] == 200
    half = role_agreement(a, set(list(sorted(b))[:2]), perm, 5)
    assert half["jaccard"] == 0.5 and half["shared"] == 2
    unmatched = role_agreement(a, b, {0: 4}, 5)  # only P-0 matched: the others agree with nothing
    assert unmatched["shared"] == 1 and unmatched["jaccard"] == round(1 / 7, 4)
    assert role_agreement(set(), set(), {}, 5) == {
        "jaccard": None,
        "items": [0, 0],
        "shared": 0,
        "random_matching": None,
    }


def _planted(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (40, 3, 3) map of 6 prototypes; B = A with labels permuted and A's P-2 split in two
    (its positions in even samples become B's new P-6)."""
    A = rng.integers(0, 6, size=(40, 3, 3))
    perm = rng.permutation(6)
    B = perm[A]
    B[(A == 2) & (np.arange(40)[:, None, None] % 2 == 0)] = 6
    return A, B, perm


def test_matching_recovers_a_planted_permutation_and_a_split(rng):
    A, B, perm = _planted(rng)
    m = match_prototypes(A, B)
    rows = {r["a"]: r for r in m["rows"]}
    for i in (0, 1, 3, 4, 5):
        assert (rows[i]["b"], rows[i]["overlap"], rows[i]["status"]) == (int(perm[i]), 1.0, "matched")
    split = rows[2]
    parts = {int(perm[2]), 6}
    assert split["b"] in parts and split["status"] == "split" and 0.2 < split["overlap"] < 0.8
    (other,) = parts - {split["b"]}
    assert split["also_b"] == [other]
    assert m["unmatched_b"] == [
        {
            "b": other,
            "best_a": 2,
            "best_overlap": m["unmatched_b"][0]["best_overlap"],
            "background_b": False,
            "status": "split",
        }
    ]
    assert m["b_to_a"] == {int(perm[i]): i for i in (0, 1, 3, 4, 5)} | {split["b"]: 2}
    J, n = overlap_matrix(A, B, 6, 7)
    assert n.sum() == A.size and np.isclose(J[2, other] + J[2, split["b"]], 1.0)


def test_merged_and_unrelated_prototypes_are_reported_unmatched_with_their_best_partner(rng):
    A, _, _ = _planted(rng)
    merged = match_prototypes(A, np.where(A == 5, 4, A))  # B covers A's P-4 and P-5 with one prototype
    rows = {r["a"]: r for r in merged["rows"]}
    lost = 5 if rows[4]["b"] == 4 else 4
    assert rows[lost]["b"] is None and rows[lost]["status"] == "merged" and rows[lost]["best_b"] == 4
    # unrelated partitions: every overlap is near chance (1/19 for 10 equal prototypes), below the threshold
    B = rng.integers(0, 10, size=(200, 3, 3))
    m = match_prototypes(rng.integers(0, 10, size=(200, 3, 3)), B, 10, 10)
    assert all(r["b"] is None and r["overlap"] < MATCH_THRESHOLD for r in m["rows"])
    assert all(r["status"] == "unmatched" and 0 < r["best_overlap"] < MATCH_THRESHOLD for r in m["rows"])
    assert all(0.03 < r["chance"] < 0.08 for r in m["rows"])


def _one_line_error(a, b, match: str, capsys, tmp_path) -> None:
    with pytest.raises(I2XError, match=match) as e:
        i2x.compare(a, b)
    assert "\n" not in str(e.value) and "compare" in str(e.value)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("i2x compare: error: ") and re.search(match, err)


def test_another_explanation_set_of_the_same_model_is_compared_prototype_by_prototype(cli_run, tmp_path, capsys):
    """Issue 24: `--explain-seed 1` on the same trained model gives other images but the same prototypes; compare
    matches each prototype to itself (B's prototypes assign A's cells as A's do) and scores the listed items."""
    other = tmp_path / "other"
    shutil.copytree(cli_run, other, ignore=shutil.ignore_patterns("weights"))
    es = store.load_npz(other / "record" / "explain_set.npz")
    store.save_npz(other / "record" / "explain_set.npz", **{**es, "indices": es["indices"] + 1})
    d = i2x.compare(cli_run, other).data
    assert d["matching_basis"] == "identical prototypes"
    assert [(r["a"], r["b"], r["status"]) for r in d["matching"]] == [
        (k, k, "matched") for k in range(len(d["matching"]))
    ]
    assert all(isinstance(g, str) or g["jaccard"] in (None, 1.0) for g in d["agreement"].values())
    assert main(["compare", str(cli_run), str(other), "--out", str(tmp_path / "out")]) == 0
    assert "another explanation set of the same model and prototypes" in capsys.readouterr().out
    assert "another explanation set of the same model" in (tmp_path / "out" / "index.html").read_text()
    assert i2x.compare(cli_run, cli_run).data["matching_basis"] == "positions"
    # the same centroids in another order (a run numbered before prototypes were ordered by size): B's numbers
    from i2x.compare_runs import same_prototypes
    from i2x.rundir import Run

    protos = store.load_npz(other / "arrays" / "prototypes.npz")
    order = np.random.default_rng(0).permutation(len(protos["centroids"]))
    store.save_npz(other / "arrays" / "prototypes.npz", **{**protos, "centroids": protos["centroids"][order]})
    assert (order[same_prototypes(Run(cli_run), Run(other))] == np.arange(len(order))).all()


def test_incomparable_runs_give_a_one_line_error(cli_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(cli_run, other, ignore=shutil.ignore_patterns("weights"))
    protos = store.load_npz(other / "arrays" / "prototypes.npz")  # another model's prototypes on another E: refused
    store.save_npz(other / "arrays" / "prototypes.npz", **{**protos, "centroids": protos["centroids"] + 1e-3})
    es = store.load_npz(other / "record" / "explain_set.npz")
    store.save_npz(other / "record" / "explain_set.npz", **{**es, "indices": es["indices"] + 1})
    _one_line_error(cli_run, other, "explain different sets .*`indices`", capsys, tmp_path)
    store.save_npz(other / "record" / "explain_set.npz", **{**es, "labels": es["labels"][::-1].copy()})
    _one_line_error(cli_run, other, "explain different sets .*`labels`", capsys, tmp_path)
    store.save_npz(other / "record" / "explain_set.npz", **{**es, "images": 255 - es["images"]})
    _one_line_error(cli_run, other, "explain different sets .*`images`.* different prototypes", capsys, tmp_path)
    store.save_npz(other / "record" / "explain_set.npz", **es)
    m = store.read_manifest(other)
    store.write_manifest(other, {**m, "data": {**m["data"], "classes": [f"c{c}" for c in m["data"]["classes"]]}})
    _one_line_error(cli_run, other, "different classes", capsys, tmp_path)
    store.write_manifest(other, {**m, "config": {**m["config"], "model": "resnet18"}})
    _one_line_error(cli_run, other, "different models", capsys, tmp_path)
    assert not (tmp_path / "out" / "compare.json").exists()


def test_cli_compares_two_data_orders_end_to_end(cli_run, ds7_run, tmp_path, capsys):
    def ckpt(run, which):
        return store.load_npz(sorted((run / "record").glob("ckpt_it*.npz"))[which])["confidences"]

    np.testing.assert_array_equal(ckpt(cli_run, 0), ckpt(ds7_run, 0))  # --seed kept: the same initial weights
    assert (cli_run / "record" / "ckpt_it0000000.npz").exists()
    assert not np.allclose(ckpt(cli_run, -1), ckpt(ds7_run, -1))  # another data order: another model
    out = tmp_path / "cmp"
    assert main(["compare", str(cli_run), str(ds7_run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"matched \d+ of 6 prototypes of run A \(\d+ %", text)
    assert re.search(r"quartiles \d\.\d\d / \d\.\d\d / \d\.\d\d", text)
    assert f"to {out}" in text and "agreement of the listed pair roles:" in text
    d = json.loads((out / "compare.json").read_text())
    assert set(d["agreement"]) == {"pair_roles", "class_lists", "note"}
    assert d["threshold"] == MATCH_THRESHOLD and d["runs"]["b"]["seeds"]["data_seed"] == 7
    assert len(d["matching"]) == 6 and all(ROW_KEYS <= set(r) for r in d["matching"])
    for r in d["matching"]:  # null partner exactly when below the threshold
        assert (r["b"] is None) == (r["overlap"] < MATCH_THRESHOLD) and r["best_overlap"] >= r["overlap"]
    cm = [store.load_npz(r / "arrays" / "evaluate.npz")["confusion"] for r in (cli_run, ds7_run)]
    assert d["confusion"]["difference"] == (cm[1] - cm[0]).tolist()
    confused = {
        tuple(sorted((p["a"], p["b"])))
        for r in (cli_run, ds7_run)
        for p in store.load_json(r / "explanations.json")["pairs"]
    }
    assert {(p["a"], p["b"]) for p in d["pairs"]} | {tuple(s) for s in d["skipped_pairs"]} == confused
    scores = [p["difference"]["score"] for p in d["pairs"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 2 for s in scores)
    for p in [p for p in d["pairs"] if p["difference"]["score"] > 0][:3]:
        assert p["why"] in text
    html = (out / "index.html").read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert {"fig/matching.png", "fig/confusion.png"} <= set(srcs) and all((out / s).is_file() for s in srcs)
    assert "torch" not in html and 'id="pairs"' in html


def test_compare_reads_no_model_and_loads_no_torch(cli_run, ds7_run, tmp_path):
    import subprocess
    import sys

    runs = []
    for name, run in (("a", cli_run), ("b", ds7_run)):  # copies without weights/: no model to read
        shutil.copytree(run, tmp_path / name, ignore=shutil.ignore_patterns("weights"))
        runs.append(str(tmp_path / name))
    code = (
        "import sys, i2x\n"
        f"i2x.compare({runs[0]!r}, {runs[1]!r}, out={str(tmp_path / 'c')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('i2x.nn'))[:3])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    assert (tmp_path / "c" / "index.html").is_file()


def test_other_explanation_rules_on_the_same_evidence(cli_run):
    """Run.pair_explanation(explain=) / listed_roles(explain=): at stability threshold 0 (no cap per pair)
    every significant role is listed — the default's listed items plus exactly those it left out below
    the threshold — and above 1 none is (what benchmarks/explanation_sets.py --thresholds reads)."""
    from dataclasses import replace

    from i2x.compare_runs import listed_roles

    r = i2x.Run(cli_run)
    assert int(r._stability.get("resamples", 0)) > 0  # the tiny run measures stability
    # the samples test's roles carry their frequency and are not filtered by it
    assert listed_roles(r) == listed_roles(r, replace(r.config.explain, stability_threshold=1.01))
    cfg = replace(r.config.explain, pair_test="paper")  # the paper's test: the threshold filters
    all_sig = replace(cfg, stability_threshold=0.0, top=10**6)
    left_out = 0
    for a in range(len(r.classes)):
        for b in range(a + 1, len(r.classes)):
            default = r.pair_explanation(a, b, replace(cfg, top=10**6))
            every = r.pair_explanation(a, b, all_sig)
            for kind in ("uncertain", "reliable"):
                listed = {x["prototype"] for x in default[kind]}
                assert listed <= {x["prototype"] for x in every[kind]}
                assert len(every[kind]) == len(listed) + default["below_threshold"][kind]
                left_out += default["below_threshold"][kind]
    assert left_out > 0  # the check compares something
    assert listed_roles(r, cfg) <= listed_roles(r, all_sig)
    assert listed_roles(r, replace(cfg, stability_threshold=1.01)) == set()
