"""End to end: the CLI on a tiny dataset, then the run directory and `i2x explain`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from i2x.cli import main
from i2x.store import SCHEMA_VERSION, load_npz


def test_run_directory_is_complete(cli_run, capsys):
    m = json.loads((cli_run / "manifest.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["config"]["dataset"] == "digits" and m["config"]["prototypes"] == 6
    assert 0.0 <= m["metrics"]["test_accuracy"] <= 1.0
    assert {"torch", "numpy", "scikit-learn"} <= set(m["versions"])
    assert all(
        m["stages"][s]["complete"] for s in ("record", "evaluate", "prototypes", "intensity", "dynamics", "explain")
    )
    its = m["checkpoints"]
    ipe = int(np.ceil(m["data"]["train_size"] / 64))
    assert its[0] == 0 and its[-1] == 2 * ipe and all(i % 5 == 0 for i in its[:-1])
    n = m["data"]["explain_size"]
    assert n == round(0.1 * m["data"]["train_size"])  # the tiny run's share
    protos = load_npz(cli_run / "arrays" / "prototypes.npz")
    h, w = protos["assignments"].shape[1:]
    assert protos["assignments"].shape == (n, h, w) and protos["assignments"].max() < 6
    inten = load_npz(cli_run / "arrays" / "intensity.npz")
    assert inten["intensity"].shape == (len(its), n, 6) and inten["contain"].shape == (n, 6)
    dyn = load_npz(cli_run / "arrays" / "dynamics.npz")
    assert dyn["W"].shape == (len(its) - 1, 6, 10) and dyn["labels"].shape == (len(its) - 1, n)
    assert (dyn["flagged"] == (dyn["n_clusters"] == 0)).all()
    rec = load_npz(cli_run / "record" / f"ckpt_it{its[-1]:07d}.npz")
    assert rec["confidences"].shape == (n, 10) and rec["saliency"].shape == (n, h, w)
    np.testing.assert_allclose(rec["confidences"].sum(1), 1.0, atol=1e-5)
    assert (rec["saliency"] >= 0).all()
    ex = json.loads((cli_run / "explanations.json").read_text())
    assert set(ex["classes"]) <= {str(c) for c in range(10)} and ex["checkpoints"] == its


def test_explain_class_and_pair(cli_run, capsys):
    assert main(["explain", str(cli_run), "--class", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Class 3") and "shared prototypes" in out
    ex = json.loads((cli_run / "explanations.json").read_text())
    a, b = ex["pairs"][0]["names"] if ex["pairs"] else ("0", "1")
    assert main(["explain", str(cli_run), "--pair", a, b]) == 0
    out = capsys.readouterr().out
    assert f"Pair {a} vs {b}" in out and "\n  uncertain (" in out and "\n  reliable (" in out
    assert "when it grows in an image, the model leans towards" in out or out.count("    none") == 2


def test_existing_run_is_not_overwritten_silently(cli_run, tiny_args, capsys):
    assert main(["run", "--out", str(cli_run), *tiny_args]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and "Traceback" not in err


def test_bad_class_name_exits_2(cli_run, capsys):
    assert main(["explain", str(cli_run), "--class", "cat"]) == 2
    assert "classes: 0, 1" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "i2x", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("i2x ")


def test_explain_settings_are_flags_saved_in_the_manifest(tmp_path, tiny_args):
    out = tmp_path / "r"
    assert main(["run", "--out", str(out), *tiny_args, "--rho", "0.9", "--top", "2"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["explain"]["rho"] == 0.9 and m["config"]["explain"]["top"] == 2
    ex = json.loads((out / "explanations.json").read_text())
    assert ex["config"]["rho"] == 0.9 and ex["config"]["top"] == 2
    assert all(len(p["uncertain"]) <= 2 and len(p["reliable"]) <= 2 for p in ex["pairs"])


def test_bad_setting_names_the_field_in_python_and_the_flag_on_the_cli(capsys, tmp_path):
    import pytest

    import i2x
    from i2x.config import RunConfig, resolve
    from i2x.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^epochs=0: must be ≥ 1"):
        resolve({"epochs": 0})
    with pytest.raises(ConfigError, match=r"^rho=1.5: must lie in \(0, 1\]"):
        RunConfig().replace(rho=1.5).validate()
    with pytest.raises(i2x.I2XError, match="did you mean 'epochs'"):
        i2x.run(out=tmp_path / "x", epoch=2)
    assert not (tmp_path / "x").exists()  # nothing written for a call that cannot run
    assert main(["run", "--out", str(tmp_path / "y"), "--epochs", "0"]) == 2
    assert "error: --epochs 0: must be ≥ 1" in capsys.readouterr().err


def test_data_seed_moves_the_data_order_alone(tmp_path, tiny_args):
    args = [*tiny_args, "--epochs", "1"]
    runs = {}
    for name, extra in (("a", []), ("b", ["--data-seed", "7"]), ("c", ["--data-seed", "0"])):
        assert main(["run", "--out", str(tmp_path / name), *args, *extra]) == 0
        runs[name] = tmp_path / name
    first = {n: load_npz(sorted((r / "record").glob("ckpt_it*.npz"))[0])["confidences"] for n, r in runs.items()}
    last = {n: load_npz(sorted((r / "record").glob("ckpt_it*.npz"))[-1])["confidences"] for n, r in runs.items()}
    np.testing.assert_array_equal(first["a"], first["b"])  # the same initial weights (--seed)
    assert not np.allclose(last["a"], last["b"])  # another data order
    np.testing.assert_array_equal(last["a"], last["c"])  # --data-seed = --seed is the default
    m = json.loads((runs["b"] / "manifest.json").read_text())
    assert m["seeds"] == {"seed": 0, "data_seed": 7, "explain_seed": 42, "split_seed": 42}
    assert m["config"]["data_seed"] == 7


# --------------------------------------------------------------------------- `i2x run` with its report


def test_cli_run_without_no_report_writes_the_report(tmp_path, tiny_args, capsys):
    args = [a for a in tiny_args if a != "--no-report"]
    out = tmp_path / "r"
    assert main(["run", "--out", str(out), *args, "--epochs", "1", "--train-subset", "400"]) == 0
    index = out / "report" / "index.html"
    assert index.exists() and f"open {index}" in capsys.readouterr().out
    html = index.read_text()
    for sec in ("summary", "prototypes", "classes", "pairs", "dynamics"):
        assert f'id="{sec}"' in html
    ex = json.loads((out / "explanations.json").read_text())
    for p in ex["pairs"]:
        assert (out / "report" / "fig" / f"pair-{p['a']}-{p['b']}-contribution.png").exists()


@pytest.mark.parametrize("command", ["run", "explain", "analyze", "report", "finetune", "faithfulness", "compare"])
def test_every_subcommand_help_lists_its_options(command, capsys):
    """The README: `--help` lists every option (a '%' in a setting's help once made argparse crash)."""
    from i2x.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: i2x {command}") and "--help" in out
    if command == "run":  # the common options, grouped, in at most 80 lines; --help-all adds the rest
        assert "--explain-seed" in out and "--help-all" in out and "\ndata:\n" in out and "--min-effect" not in out
        assert len(out.splitlines()) <= 80, len(out.splitlines())
        with pytest.raises(SystemExit):
            main([command, "--help-all"])
        every = capsys.readouterr().out
        assert "--min-effect" in every and "\ntests and resampling:\n" in every and "%" not in every.replace("%%", "")


def test_run_summary_names_a_pairs_reliable_prototypes():
    # a pair that lists no uncertain prototype but reliable ones: the summary says so (its top item), not only "none"
    from i2x.cli.run import pair_line

    rel = {"prototype": 7, "favours": 1, "frequency": 0.96, "p_value": 0.016, "sign_flips": 0}
    p = {"a": 0, "b": 1, "confusions": {"a_to_b": 3, "b_to_a": 2}, "uncertain": [],
         "reliable": [rel, dict(rel, prototype=2)], "below_threshold": {"uncertain": 1, "reliable": 0}}  # fmt: skip
    line = pair_line(p, ["zero", "one"])
    assert "zero↔one: 3+2 errors" in line and "none stable (1 significant but selected too rarely)" in line
    assert line.endswith("reliable: 2 listed, first P-7 favouring one, selected in 96 % of resamples")
    assert "reliable" not in pair_line(dict(p, reliable=[]), ["zero", "one"])


def test_library_errors_name_flags_on_the_command_line(tmp_path, capsys):
    """The library writes Python's names (layer=); the command line reads flags (--layer)."""
    from i2x.cli import main

    rc = main(["run", "--out", str(tmp_path / "r"), "--dataset", "digits", "--layer", "features.99", "--epochs", "1",
               "--device", "cpu", "--quiet", "--no-report"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--layer" in err and "layer=" not in err, err
