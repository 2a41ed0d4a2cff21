"""Shared fixtures: a seeded generator, the tiny real runs that several modules read (never
modify them: copy them first), and the hypothesis profile of the property tests."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN_ARGS, Saved
from hypothesis import HealthCheck, settings


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """A complete run directory written by `i2x run` (never modify it: copy it first)."""
    from i2x.cli import main

    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["run", "--out", str(out), *TINY_RUN_ARGS]) == 0
    return out


@pytest.fixture
def tiny_args() -> list[str]:
    return list(TINY_RUN_ARGS)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@functools.cache
def _build_ds7(base: str) -> Path:
    """One run per test session, shared by test_compare.py and test_compare_browser.py."""
    from i2x.cli import main

    out = Path(base) / "ds7-run"
    assert main(["run", "--out", str(out), *TINY_RUN_ARGS, "--data-seed", "7"]) == 0
    return out


@pytest.fixture(scope="session")
def ds7_run(tmp_path_factory) -> Path:
    """The tiny run of `cli_run` with another data order only (`--data-seed 7`); never modify it."""
    return _build_ds7(str(tmp_path_factory.getbasetemp()))


@functools.cache
def _build_tiny_run(base: str) -> Path:
    """One real tiny run (scikit-learn digits, 8x8 -> 2x2 maps) per test session, shared by
    test_report.py and test_report_browser.py."""
    import torch

    import i2x

    torch.manual_seed(0)
    out = Path(base) / "report-tiny"
    i2x.run(
        out=out,
        progress=False,
        dataset="digits",
        epochs=1,
        batch_size=64,
        every=4,
        prototypes=4,
        min_cluster_size=5,
        seed=0,
        device="cpu",
    )
    return out


@pytest.fixture(scope="session")
def report_run(tmp_path_factory) -> Path:
    return _build_tiny_run(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def run_dir(cli_run, tmp_path_factory) -> Path:
    """A copy of `cli_run` per test module (test_pipeline.py, test_finetune.py), which may write into it."""
    out = tmp_path_factory.mktemp("wiring") / "run"
    shutil.copytree(cli_run, out)
    return out


@pytest.fixture(scope="module")
def saved(run_dir) -> Saved:
    return Saved(run_dir)


# hypothesis settings of the property tests: 25 examples each, no deadline
settings.register_profile(
    "i2x", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile("i2x")
