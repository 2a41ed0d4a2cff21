"""Shared fixtures: tiny seeded models and one tiny real run (scikit-learn digits, 8x8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TINY = dict(dataset="digits", model="smallcnn", epochs=2, batch_size=64, every=5, prototypes=6,
            min_cluster_size=5, seed=0, device="cpu")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run directory of the real pipeline on digits (≈ 10 s on 2 CPU cores)."""
    import i2x

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return i2x.run(out=out, progress=False, **TINY)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
