"""Shared fixtures: a seeded generator and one tiny real run made through the CLI."""

from __future__ import annotations

import numpy as np
import pytest

# scikit-learn's 8x8 digits, 2 epochs: a complete real run in a few seconds on 2 CPU cores
TINY_RUN_ARGS = (
    "--dataset digits --epochs 2 --every 5 --prototypes 6 --min-cluster-size 5 --device cpu --quiet --no-report".split()
)


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
