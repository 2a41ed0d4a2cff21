"""Stage 8: curated set selection (pure), seeded reproducibility, the run's weights untouched, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import i2x
from i2x.analysis.explain import pair_explanation
from i2x.analysis.finetune import (
    curated_indices,
    pair_counts,
    parse_schedules,
    resolve_prototype,
    summarize,
)
from i2x.analysis.stats import paired_comparison
from i2x.cli import cli_message, main
from i2x.errors import ConfigError
from i2x.nn.finetune import finetune


def test_curated_indices_constructed_example():
    # 6 samples, K = 3; pair (1, 2), prototype 0
    labels = np.array([0, 1, 1, 2, 2, 3])
    contain = np.array(
        [
            [1, 0, 0],  # class 0 with P-0: stays (not in the pair)
            [1, 1, 0],  # class 1 with P-0: removed
            [0, 1, 1],  # class 1 without P-0: stays
            [1, 0, 0],  # class 2 with P-0: removed
            [0, 0, 1],  # class 2 without P-0: stays
            [1, 1, 1],
        ],  # class 3 with P-0: stays
        dtype=bool,
    )
    before = contain.copy()
    np.testing.assert_array_equal(curated_indices(contain, labels, 1, 2, 0), [0, 2, 4, 5])
    np.testing.assert_array_equal(
        curated_indices(contain, labels, 2, 1, 0), [0, 2, 4, 5]
    )  # order of the pair is irrelevant
    np.testing.assert_array_equal(curated_indices(contain, labels, 1, 2, 2), [0, 1, 3, 5])
    np.testing.assert_array_equal(contain, before)  # input not mutated


def test_curated_indices_matches_definition_on_random_input():
    rng = np.random.default_rng(0)
    contain = rng.random((200, 7)) < 0.4
    labels = rng.integers(0, 5, 200)
    keep = curated_indices(contain, labels, 3, 1, 4)
    expected = [i for i in range(200) if not (labels[i] in (1, 3) and contain[i, 4])]
    assert keep.tolist() == expected


def test_parse_schedules_and_errors():
    assert parse_schedules("full, curated+full,curated→curated") == ["full", "curated+full", "curated+curated"]
    for bad in ("full,currated", "full,full"):
        with pytest.raises(ConfigError, match="^schedules=") as e:  # Python names the argument ...
            parse_schedules(bad)
        assert cli_message(e.value).startswith("--schedules ")  # ... the command line its flag


def test_pair_counts_and_paired_comparison():
    cm = np.array([[5, 2, 0], [3, 7, 1], [0, 4, 9]])
    assert pair_counts(cm, 1, 2) == {"a_to_b": 1, "b_to_a": 4, "ab": 5}
    c = paired_comparison([3, 4, 5, 2], [5, 4, 6, 3])
    assert c["mean_diff"] == pytest.approx(-1.0)
    assert (c["x_fewer"], c["x_more"], c["ties"]) == (3, 0, 1)
    assert c["sign_test_p"] == pytest.approx(0.25)  # 3 of 3 non-tied pairs: 2 * 0.5**3


class _FakeRun:
    classes = ["0", "1", "2"]

    def pair_explanation(self, a, b):
        return {"a": a, "b": b, "uncertain": [], "reliable": []}


def test_pair_without_uncertain_prototype_names_prototype():
    with pytest.raises(ConfigError, match="^prototype='auto'") as e:
        resolve_prototype(_FakeRun(), "auto", 2, 1, 8)
    assert cli_message(e.value).startswith("--prototype auto")
    assert resolve_prototype(_FakeRun(), "3", 1, 2, 8) == 3
    with pytest.raises(ConfigError, match="^prototype=8") as e:
        resolve_prototype(_FakeRun(), 8, 1, 2, 8)
    assert cli_message(e.value).startswith("--prototype 8")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import i2x

    out = tmp_path_factory.mktemp("ft") / "run"
    i2x.run(
        out=out, dataset="digits", epochs=1, every=5, prototypes=8, batch_size=64, seed=0, device="cpu", progress=False
    )
    return out


def _pair_and_prototype(run_dir):
    from i2x.rundir import Run

    r = Run(run_dir)
    contain = r.arrays("intensity")["contain"]
    labels = r.explain_set()["labels"]
    a, b = 3, 8
    # a prototype that some (not all) samples of the pair contain, so the curated set is a strict subset
    inpair = contain[np.isin(labels, (a, b))]
    k = int(np.argmax(inpair.sum(0)))
    return a, b, k, contain, labels


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_finetune_curated_set_reproducible_weights_untouched(tiny_run):
    a, b, k, contain, labels = _pair_and_prototype(tiny_run)
    final = tiny_run / "weights" / "final.pt"
    h0 = _sha(final)
    res = finetune(
        tiny_run, pair=(a, b), prototype=k, schedules="curated+full,full", repeats=2, seed=10, progress=False
    )
    # the curated set is exactly E minus the {a,b}-samples containing k
    removed = np.setdiff1d(np.arange(len(labels)), res.curated_indices)
    assert len(removed) > 0
    assert np.isin(labels[removed], (a, b)).all() and contain[removed, k].all()
    kept_pair = res.curated_indices[np.isin(labels[res.curated_indices], (a, b))]
    assert not contain[kept_pair, k].any()
    saved = json.loads((tiny_run / "finetune" / "results.json").read_text())
    assert saved["curated_indices"] == res.curated_indices.tolist()
    assert saved["curated_size"] == len(res.curated_indices) and saved["explain_size"] == len(labels)
    assert saved["pair"] == [a, b] and saved["prototype"] == k
    assert [r["seed"] for r in saved["schedules"]["full"]["repeats"]] == [10, 11]
    assert "curated→full" in (tiny_run / "finetune" / "table.md").read_text()
    # each repeat is reproducible from its seed alone (here: seed 11 run on its own, into another folder)
    again = finetune(
        tiny_run,
        pair=(a, b),
        prototype=k,
        schedules="curated+full",
        repeats=1,
        seed=11,
        out=tiny_run / "ft2",
        progress=False,
    )
    r1 = res.schedules["curated+full"]["repeats"][1]
    r2 = again.schedules["curated+full"]["repeats"][0]
    assert r2["seed"] == r1["seed"] == 11
    assert r2["accuracy"] == r1["accuracy"] and r2["confusion"] == r1["confusion"]
    # fine-tuning changed the model (otherwise reproducibility would be trivial) ...
    accs = {r["accuracy"] for s in res.schedules.values() for r in s["repeats"]} | {res.baseline["accuracy"]}
    confs = {json.dumps(r["confusion"]) for s in res.schedules.values() for r in s["repeats"]}
    assert len(confs) > 1 or len(accs) > 1
    # ... but never the run's final weights
    assert _sha(final) == h0


def test_cli_finetune(tiny_run, capsys):
    from i2x.cli import main

    a, b, k, _, _ = _pair_and_prototype(tiny_run)
    final = tiny_run / "weights" / "final.pt"
    h0 = _sha(final)
    out = tiny_run / "ft_cli"
    rc = main(
        [
            "finetune",
            str(tiny_run),
            "--pair",
            str(a),
            str(b),
            "--prototype",
            str(k),
            "--schedules",
            "full",
            "--repeats",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    assert "| full |" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["schedules"]["full"]["repeats"][0]["seed"] == 0
    assert main(["finetune", str(tiny_run), "--pair", str(a), str(b), "--prototype", "99", "--quiet"]) == 2
    assert "--prototype 99" in capsys.readouterr().err
    assert main(["finetune", str(tiny_run), "--pair", "3", "--quiet"]) == 2
    assert "--pair" in capsys.readouterr().err
    assert _sha(final) == h0


def test_control_removals_draw_what_they_promise():
    from i2x.analysis.finetune import control_removals

    labels = np.repeat([0, 1, 2], 20)  # pair (0, 1): rows 0-39
    contain = np.zeros((60, 5), dtype=bool)
    contain[:12, 0] = True  # the I2X prototype: 12 pair samples
    contain[20:31, 2] = True  # 11 pair samples: closest in count
    contain[:30, 3] = True  # 30 pair samples
    contain[40:, 4] = True  # class 2 only: not a prototype of the pair
    contain[:12, 1] = True  # as close as it gets, but background
    bg = np.array([False, True, False, False, False])
    args = (contain, labels, 0, 1, 0, 12)
    r1, _ = control_removals("random-pair", *args, seed=3, background=bg)
    assert len(r1) == 12 and np.isin(labels[r1], (0, 1)).all()
    np.testing.assert_array_equal(r1, control_removals("random-pair", *args, seed=3, background=bg)[0])  # per seed
    assert not np.array_equal(r1, control_removals("random-pair", *args, seed=4, background=bg)[0])  # fresh draw
    r2, info = control_removals("other-prototype", *args, seed=3, background=bg)
    assert info["prototype"] == 2 and r2.tolist() == list(range(20, 31))
    r3, _ = control_removals("random-any", *args, seed=3, background=bg)
    assert len(r3) == 12 and len(set(r3.tolist())) == 12 and r3.min() >= 0 and r3.max() < 60
    draws = np.concatenate([control_removals("random-any", *args, seed=s, background=bg)[0] for s in range(10)])
    assert (labels[draws] == 2).any()  # any class, not only the pair


def test_random_matched_keeps_the_i2x_class_mix_with_other_samples():
    """I2X removes 3 of class 0 and 9 of class 1 (prototype 0): the control removes 3 random 0s and
    9 random 1s, reproducibly per seed, and over seeds not the I2X rows."""
    from i2x.analysis.finetune import control_removals, curated_indices

    labels = np.repeat([0, 1, 2], 20)
    contain = np.zeros((60, 2), dtype=bool)
    contain[[0, 1, 2] + list(range(20, 29)) + [45, 50], 0] = True  # 3 zeros, 9 ones (and class 2, not the pair)
    args = (contain, labels, 0, 1, 0, 12)
    i2x = np.setdiff1d(np.arange(60), curated_indices(contain, labels, 0, 1, 0))
    draws = [control_removals("random-matched", *args, seed=s)[0] for s in range(20)]
    for r in draws:
        assert len(r) == 12 and len(set(r.tolist())) == 12
        assert (labels[r] == 0).sum() == (labels[i2x] == 0).sum() == 3
        assert (labels[r] == 1).sum() == (labels[i2x] == 1).sum() == 9
    np.testing.assert_array_equal(draws[0], control_removals("random-matched", *args, seed=0)[0])
    assert len({tuple(r) for r in draws}) > 1  # a fresh draw per seed
    assert np.isin(np.concatenate(draws), i2x).mean() < 0.8  # other samples, not the I2X ones
    # a draw of random-pair with the same seed has its own RNG stream (and no class matching)
    rp = [control_removals("random-pair", *args, seed=s)[0] for s in range(20)]
    assert any((labels[r] == 0).sum() != 3 for r in rp)


def test_finetune_controls_are_paired_and_reported(tiny_run):
    a, b, k, contain, labels = _pair_and_prototype(tiny_run)
    res = finetune(
        tiny_run,
        pair=(a, b),
        prototype=k,
        schedules="full,curated+full",
        repeats=2,
        seed=5,
        out=tiny_run / "ft_ctrl",
        progress=False,
    )
    n_removed = len(labels) - len(res.curated_indices)
    saved = json.loads((tiny_run / "ft_ctrl" / "results.json").read_text())
    assert set(saved["controls"]) <= {"random-pair", "random-matched", "other-prototype", "random-any"}
    assert {"random-pair", "random-matched", "random-any"} <= set(saved["controls"])
    for name in ("random-pair", "random-matched", "random-any"):
        c = saved["controls"][name]
        assert c["removed"] == [n_removed, n_removed]
        assert list(c["schedules"]) == ["curated+full"]  # only the schedules that use the curated set
        assert [r["seed"] for r in c["schedules"]["curated+full"]["repeats"]] == [5, 6]  # the I2X arm's seeds
    comps = saved["control_comparisons"]
    assert {(c["control"], c["schedule"]) for c in comps} == {(n, "curated+full") for n in saved["controls"]}
    assert all(c["seeds"] == [5, 6] for c in comps)
    assert "control: random-pair" in (tiny_run / "ft_ctrl" / "table.md").read_text()
    # a saved result loads back into the same result: same table, same verdict, same dict
    from i2x.analysis.finetune import FinetuneResult

    back = FinetuneResult.load(tiny_run / "ft_ctrl")
    assert back.table() == (tiny_run / "ft_ctrl" / "table.md").read_text() == res.table()
    assert json.loads(json.dumps(back.to_dict())) == saved


def _result_with(i2x_errors, controls: dict, sched="curated+full"):
    """A FinetuneResult whose I2X arm and control arms have the given a↔b counts per seed."""
    from i2x.analysis.finetune import FinetuneResult, summarize

    def arm(errors):
        reps = [
            {"seed": s, "accuracy": 0.98, "a_to_b": int(e) // 2, "b_to_a": int(e) - int(e) // 2, "ab": int(e)}
            for s, e in enumerate(errors)
        ]
        return {"repeats": reps, **summarize(reps)}

    n = len(i2x_errors)
    return FinetuneResult(
        pair=(4, 9),
        names=("4", "9"),
        prototype=3,
        explain_size=100,
        curated_indices=np.arange(90),
        lr=1e-4,
        batch_size=16,
        seeds=tuple(range(n)),
        schedules={sched: arm(i2x_errors)},
        baseline={"accuracy": 0.98, "a_to_b": 5, "b_to_a": 5, "ab": 10},
        test_size=1000,
        controls={
            name: {"schedules": {sched: arm(e)}, "removed": [10] * n, "prototype": None} for name, e in controls.items()
        },
    )


def test_verdict_finds_a_planted_effect_and_nothing_in_a_null():
    """Planted: the I2X arm leaves 5 fewer errors than both controls in every one of 12 seeds (noise
    ±2) -> it beats both after Holm and is supported; null: every arm from one distribution -> no
    comparison survives Holm; reversed: it loses to both."""
    rng = np.random.default_rng(0)
    n = 12
    base = rng.integers(18, 24, n)

    def noisy():
        return base + rng.integers(-2, 3, n)

    planted = _result_with(noisy() - 5, {"random-pair": noisy(), "random-any": noisy()})
    v = planted.verdict()
    assert v["comparisons"] == 2
    assert sorted(v["beats"]) == [["random-any", "curated+full"], ["random-pair", "curated+full"]]
    assert v["loses_to"] == [] and v["supported_on"] == ["curated+full"]
    assert "beats random removal there" in planted.table()

    nulls = [_result_with(noisy(), {"random-pair": noisy(), "random-any": noisy()}).verdict() for _ in range(20)]
    assert sum(bool(v["beats"] or v["loses_to"]) for v in nulls) <= 3  # ≈ α per result, 20 tries
    assert all(v["supported_on"] == [] for v in nulls)

    worse = _result_with(noisy() + 5, {"random-pair": noisy(), "random-any": noisy()})
    v = worse.verdict()
    assert len(v["loses_to"]) == 2 and v["beats"] == [] and v["supported_on"] == []
    assert "not shown to help" in worse.table()


def test_holm_p_is_over_all_control_comparisons_and_support_needs_every_control():
    """One control beaten clearly, the other not: Holm p ≥ the raw t p (×2 for the smaller), and the
    schedule is not supported because one control on it was not beaten."""
    rng = np.random.default_rng(1)
    base = rng.integers(18, 24, 12)
    res = _result_with(
        base - 6 + rng.integers(-1, 2, 12),
        {"random-pair": base + rng.integers(-1, 2, 12), "other-prototype": base - 6 + rng.integers(-3, 4, 12)},
    )
    comps = {c["control"]: c for c in res.control_comparisons()}
    small, large = sorted(comps.values(), key=lambda c: c["paired_t_p"])
    assert small["holm_p"] == pytest.approx(min(1.0, 2 * small["paired_t_p"]))
    assert large["holm_p"] >= large["paired_t_p"]
    v = res.verdict()
    assert v["beats"] == [["random-pair", "curated+full"]] and v["supported_on"] == []
    assert json.loads(json.dumps(res.to_dict()))["verdict"] == v


def test_verdict_uses_the_holm_p_not_the_raw_one():
    """Three controls each beaten with a raw t p between 0.01 and 0.05 (each would 'beat' alone);
    Holm over the three lifts all above 0.05: the verdict beats none."""
    i2x = np.array([20, 21, 19, 22, 20, 18, 21, 20, 19, 22])
    ctrl = {
        name: i2x + np.array(d)
        for name, d in zip(
            ("random-pair", "random-matched", "random-any"),
            ([1, 0, 2, 1, -1, 1, 2, 0, 1, 1], [2, 1, 0, 1, 1, -1, 1, 2, 0, 1], [1, 1, 1, 0, 2, -1, 1, 0, 2, 1]),
            strict=True,
        )
    }
    res = _result_with(i2x, ctrl)
    comps = res.control_comparisons()
    assert all(0.005 < c["paired_t_p"] < 0.05 for c in comps), [c["paired_t_p"] for c in comps]
    assert all(c["holm_p"] > 0.05 for c in comps)
    assert res.verdict()["beats"] == [] and "not shown to help" in res.table()


def test_verdict_with_the_same_difference_in_every_seed_or_one_seed():
    """t is undefined when every seed differs by the same amount: the sign test decides (10 seeds:
    p = 2 · 0.5¹⁰, beaten; 2 seeds: p = 0.5, not); every seed tied: p = 1; one seed: no test."""
    base = np.arange(18, 28)
    v = _result_with(base - 2, {"random-pair": base}).verdict()
    assert v["beats"] == [["random-pair", "curated+full"]] and v["untested"] == 0
    assert _result_with(base[:2] - 2, {"random-pair": base[:2]}).verdict()["beats"] == []
    tied = _result_with(base, {"random-pair": base})
    assert tied.control_comparisons()[0]["holm_p"] == 1.0 and tied.verdict()["loses_to"] == []
    one = _result_with(base[:1] - 5, {"random-pair": base[:1]})
    assert one.verdict()["untested"] == 1 and one.verdict()["beats"] == []
    assert "1 without a p-value (one seed)" in one.table()


def test_control_draws_are_pinned_per_seed():
    """A control's draw depends only on its name and the seed (its index in CONTROLS seeds its RNG:
    new controls are appended, so an old run's controls draw the same rows again)."""
    from i2x.analysis.finetune import control_removals
    from i2x.config import CONTROLS

    assert CONTROLS[:3] == ("random-pair", "other-prototype", "random-any")
    labels = np.repeat([0, 1, 2], 20)
    contain = np.zeros((60, 2), dtype=bool)
    contain[:12, 0] = True
    args = (contain, labels, 0, 1, 0, 12)
    want = np.sort(np.random.default_rng([0, 0]).choice(np.arange(40), size=12, replace=False))
    np.testing.assert_array_equal(control_removals("random-pair", *args, seed=0)[0], want)
    assert (
        control_removals("random-pair", *args, seed=0)[0].tolist()
        != control_removals("random-matched", *args, seed=0)[0].tolist()
    )


def test_random_matched_is_left_out_when_it_could_only_repeat_the_i2x_removal():
    from i2x.analysis.finetune import control_removals

    labels = np.repeat([0, 1, 2], 5)
    contain = np.zeros((15, 1), dtype=bool)
    contain[:10, 0] = True  # every sample of the pair (0, 1) contains the prototype
    rows, _ = control_removals("random-matched", contain, labels, 0, 1, 0, 10, seed=0)
    assert len(rows) == 0  # finetune leaves a control with nothing to remove out


def test_a_control_with_nothing_to_remove_is_named_as_left_out(tiny_run, monkeypatch):
    """A control that can draw nothing (here random-any, forced empty) is not run, and the result
    says so (results.json, table) instead of dropping it silently; a saved result loads it back."""
    import i2x.nn.finetune as nf
    from i2x.analysis.finetune import FinetuneResult, control_removals

    def removals(name, *args):
        return (np.zeros(0, dtype=np.int64), {}) if name == "random-any" else control_removals(name, *args)

    monkeypatch.setattr(nf, "control_removals", removals)
    a, b, k, _, _ = _pair_and_prototype(tiny_run)
    out = tiny_run / "ft_left_out"
    res = finetune(
        tiny_run,
        pair=(a, b),
        prototype=k,
        schedules="curated+full",
        repeats=2,
        controls="random-pair,random-any",
        out=out,
        progress=False,
    )
    assert list(res.controls) == ["random-pair"] and res.controls_left_out == ("random-any",)
    assert json.loads((out / "results.json").read_text())["controls_left_out"] == ["random-any"]
    assert "Left out (nothing to remove, or only the I2X removal itself): random-any." in res.table()
    assert FinetuneResult.load(out).controls_left_out == ("random-any",)


# --------------------------------------------------------------------------- fine-tuning statistics


def test_summarize_uses_the_sample_std():
    reps = [
        {"accuracy": 0.9, "a_to_b": 1, "b_to_a": 4, "ab": 5},
        {"accuracy": 0.8, "a_to_b": 2, "b_to_a": 4, "ab": 6},
        {"accuracy": 0.7, "a_to_b": 6, "b_to_a": 4, "ab": 10},
    ]
    s = summarize(reps)
    assert s["accuracy_mean"] == pytest.approx(0.8) and s["accuracy_std"] == pytest.approx(0.1)  # ddof=1
    assert s["a_to_b_mean"] == pytest.approx(3.0) and s["a_to_b_std"] == pytest.approx(np.sqrt(7.0))
    assert s["b_to_a_std"] == 0.0 and s["ab_std"] == pytest.approx(np.sqrt(7.0))
    assert summarize(reps[:1])["accuracy_std"] == 0.0


# --------------------------------------------------------------------------- fine-tuning the session's tiny run


def test_curated_arm_trains_on_exactly_the_curated_rows(saved, run_dir, monkeypatch):
    from i2x.nn import finetune as ft

    a, b = saved.ex["pairs"][0]["a"], saved.ex["pairs"][0]["b"]
    contain, y = saved.ia["contain"], saved.labels
    in_pair = np.isin(y, (a, b))
    k = int(np.argmax(contain[in_pair].sum(0)))
    keep = np.flatnonzero(~(in_pair & contain[:, k]))  # E minus the a/b samples containing k
    assert 0 < len(keep) < len(y)
    seen: dict[str, torch.Tensor] = {}
    real = ft._train_schedule

    def spy(model, sched, seed, sets, x_e, y_e, *rest):
        rows = []
        hook = model.register_forward_pre_hook(
            lambda m, args: rows.append(args[0].detach().clone()) if m.training else None
        )
        try:
            real(model, sched, seed, sets, x_e, y_e, *rest)
        finally:
            hook.remove()
        seen[sched] = torch.cat(rows)

    monkeypatch.setattr(ft, "_train_schedule", spy)
    res = i2x.finetune(
        run_dir,
        pair=(a, b),
        prototype=k,
        schedules="curated,full",
        repeats=1,
        controls="none",
        out=run_dir / "ft-rows",
        progress=False,
    )
    np.testing.assert_array_equal(res.curated_indices, keep)
    x = saved.x_exp()

    def rows(t: torch.Tensor) -> list[bytes]:
        return sorted(r.numpy().tobytes() for r in t)

    assert len(seen["curated"]) == len(keep) and rows(seen["curated"]) == rows(x[keep])  # each curated row once
    assert len(seen["full"]) == len(y) and rows(seen["full"]) == rows(x)


def test_finetune_prototype_auto_on_a_real_run(saved, run_dir, capsys):
    """`--pair auto --prototype auto`: the most confused test pair with a significant uncertain
    prototype, and its top one; when a pair has none, one line that says what to give instead."""
    pes = {(p["a"], p["b"]): p for p in saved.ex["pairs"]}
    labels = set(saved.labels.tolist())
    cm = saved.ev["confusion"]
    C = len(cm)
    order = sorted(
        ((a, b) for a in range(C) for b in range(a + 1, C) if cm[a, b] + cm[b, a] and {a, b} <= labels),
        key=lambda p: (-(cm[p] + cm[p[::-1]]), p),
    )
    cfg, bg, links = saved.cfg.explain, saved.ia["background"], i2x.Run(run_dir).links()
    expect = None
    for a, b in order:
        st = np.load(run_dir / "arrays" / "stability.npz")
        pe = pair_explanation(
            saved.dy["W"], saved.ia["contain"], saved.labels, a, b, cfg, p_pair=saved.dy["p_pair"], background=bg,
            frequency=st["roles"][a, b] if int(st["resamples"]) else None, links=links,
        )  # fmt: skip
        if (a, b) in pes:
            assert [r["prototype"] for r in pe["uncertain"]] == [r["prototype"] for r in pes[(a, b)]["uncertain"]]
        if pe["uncertain"] and expect is None:
            expect = (a, b, pe["uncertain"][0]["prototype"])
    args = ["--schedules", "curated", "--repeats", "1", "--controls", "none", "--quiet"]
    out = run_dir / "ft-auto"
    rc = main(["finetune", str(run_dir), "--pair", "auto", "--prototype", "auto", "--out", str(out), *args])
    captured = capsys.readouterr()
    if expect is None:
        assert rc == 2 and len(captured.err.strip().splitlines()) == 1
        assert "no significant uncertain prototype" in captured.err or "none of the" in captured.err
    else:
        assert rc == 0, captured.err
        res = json.loads((out / "results.json").read_text())
        assert (res["pair"][0], res["pair"][1], res["prototype"]) == expect
    # a confused pair without a significant uncertain prototype: one line naming --prototype
    empty = [p for p in saved.ex["pairs"] if not p["uncertain"]]
    if empty:
        a, b = empty[0]["a"], empty[0]["b"]
        rc = main(["finetune", str(run_dir), "--pair", str(a), str(b), "--prototype", "auto", *args])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "--prototype auto" in err
        assert "no significant uncertain prototype" in err
    assert expect is not None or empty
