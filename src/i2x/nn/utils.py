"""Small torch helpers used across :mod:`i2x.nn`: devices, eval mode, seeded generators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", device, "no CUDA device is available; use cpu")
    return torch.device(device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore every module's own mode afterwards,
    also on error (a partly frozen model keeps its mixed train/eval modes)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints (stable across runs: an int tuple's hash is)."""
    g = torch.Generator()
    g.manual_seed(hash(tuple(keys)) & 0x7FFF_FFFF_FFFF_FFFF)
    return g
