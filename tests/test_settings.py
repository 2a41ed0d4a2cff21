"""One declaration per setting: a stage function of the Python API (``i2x.dynamics``, ``i2x.prototypes`` ...)
and ``i2x run`` share each setting's default and check, both taken from :class:`i2x.RunConfig`'s declaration."""

from __future__ import annotations

import inspect
from dataclasses import fields

import numpy as np
import pytest

import i2x
from i2x.analysis.intensity import background_prototypes
from i2x.config import RunConfig, uses_settings
from i2x.errors import ConfigError

STAGES = [i2x.prototypes, i2x.intensity, i2x.containment, i2x.dynamics, background_prototypes]
DECLARED = {f.name: f for f in fields(RunConfig)}


def _calls():
    """Minimal valid inputs of each stage function (positional), tiny and seeded."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, (6, 2, 2))
    return {
        "prototypes": (rng.normal(size=(6, 2, 2, 4)),),
        "intensity": (rng.random((2, 6, 2, 2)), a, 3),
        "containment": (a, 3, rng.random((6, 2, 2))),
        "dynamics": (rng.random((3, 6, 2)), rng.random((3, 6, 3)), np.arange(6) % 2),
        "background_prototypes": (rng.random(3),),
    }


def _invalid(f) -> object:
    """A value the declaration of setting ``f`` refuses (scikit-learn's generate_invalid_param_val, by hand)."""
    m = f.metadata
    if m.get("choices"):
        return "not-a-choice"
    if m.get("check") is None:
        return "not-a-number"  # the declared type refuses it
    for v in (-1, 0, 1, 2.0, -1.5):
        if m["check"](v):
            return v
    raise AssertionError(f"no invalid value found for {f.name}")


def test_every_stage_argument_has_the_run_settings_default():
    for func in STAGES:
        sig = inspect.signature(func)
        for arg, name in func.settings.items():
            assert sig.parameters[arg].default == DECLARED[name].default, (func.__name__, arg)
    assert inspect.signature(i2x.dynamics).parameters["permutations"].default == RunConfig().permutations == 999
    assert inspect.signature(i2x.containment).parameters["quantile"].default == RunConfig().contain_quantile


def test_a_default_that_drifts_from_its_declaration_fails_at_import():
    with pytest.raises(AssertionError, match=r"lam=1\.0\) differs from RunConfig.ridge_lambda = 10\.0"):

        @uses_settings(lam="ridge_lambda")
        def stage(x, lam: float = 1.0):
            return x


@pytest.mark.parametrize("func", STAGES, ids=lambda f: f.__name__)
def test_every_declared_check_refuses_a_bad_value_naming_the_argument(func):
    args = _calls()[func.__name__]
    for arg, name in func.settings.items():
        bad = _invalid(DECLARED[name])
        with pytest.raises(ConfigError, match=rf"^{arg}={bad!r}: ".replace("(", r"\(").replace(")", r"\)")):
            func(*args, **{arg: bad})


def test_the_checks_that_had_drifted():
    """HDBSCAN needs clusters of two; a negative λ and a variance above 1 were accepted; k=0 named
    RunConfig's field instead of the argument."""
    conf, inten, y = _calls()["dynamics"]
    with pytest.raises(ConfigError, match="min_cluster_size=1: must be ≥ 2"):
        i2x.dynamics(conf, inten, y, min_cluster_size=1)
    with pytest.raises(ConfigError, match="min_cluster_size=1: must be ≥ 2"):
        RunConfig(min_cluster_size=1).validate()
    with pytest.raises(ConfigError, match="^lam=-1: must be a positive number"):
        i2x.dynamics(conf, inten, y, lam=-1)
    with pytest.raises(ConfigError, match=r"^variance=2.0: must lie in \(0, 1\]"):
        i2x.prototypes(_calls()["prototypes"][0], variance=2.0)
    with pytest.raises(ConfigError, match="^k=0: must be ≥ 1"):
        i2x.prototypes(_calls()["prototypes"][0], k=0)


def test_a_stage_on_its_defaults_computes_what_i2x_run_computes():
    """i2x.dynamics(...) without options has the run's p-values (999 within-class permutations)."""
    conf, inten, y = _calls()["dynamics"]
    d = i2x.dynamics(conf, inten, y)
    assert d.permutations == RunConfig().permutations and d.null == RunConfig().permutation_null
    assert d.p_W is not None and d.p_pair is not None


def test_help_groups_hold_every_flag_of_run_once():
    from i2x.config import HELP_GROUPS, ExplainConfig

    grouped = [n for names in HELP_GROUPS.values() for n in names]
    flags = [
        f.name for cls in (RunConfig, ExplainConfig) for f in fields(cls) if "run" in f.metadata.get("commands", ())
    ]
    assert sorted(grouped) == sorted(flags) and len(set(grouped)) == len(grouped)


def test_help_speaks_plain_words():
    """No equation numbers, paper sections or project history in the flags' help."""
    import re

    from i2x.config import ExplainConfig, FaithfulnessConfig, FinetuneConfig

    for cls in (RunConfig, ExplainConfig, FinetuneConfig, FaithfulnessConfig):
        for f in fields(cls):
            assert not re.search(r"Eq\.|§|issue \d|before i2x|W_t|ΔI", f.metadata.get("help", "")), f.name


def test_run_and_analyze_show_every_setting_to_help_and_ides():
    sig = inspect.signature(i2x.run)
    assert sig.parameters["min_effect"].default == 0.1 and sig.parameters["epochs"].default == RunConfig().epochs
    assert sig.parameters["min_effect"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "tests and resampling: alpha, pair_test, min_effect" in i2x.run.__doc__
    assert "ridge_lambda" in inspect.signature(i2x.analyze).parameters


def _checked_flags():
    from i2x.config import ExplainConfig

    every = [f for cls in (RunConfig, ExplainConfig) for f in fields(cls)]
    return [f for f in every if f.metadata.get("check") and "run" in f.metadata.get("commands", ())]


@pytest.mark.parametrize("f", _checked_flags(), ids=lambda f: f.name)
def test_every_checked_flag_refuses_a_generated_bad_value_in_one_line(f, tmp_path, capsys):
    from i2x.cli import main
    from i2x.errors import flag_of

    bad = _invalid(f)
    assert main(["run", "--out", str(tmp_path / "r"), "--dataset", "digits", flag_of(f.name), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"i2x run: error: {flag_of(f.name)} "), err
    assert not (tmp_path / "r").exists()  # refused before anything is written
