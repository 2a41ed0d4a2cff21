"""Small torch helpers used across :mod:`i2x.nn`: devices, eval mode, seeded generators."""

from __future__ import annotations

import warnings
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


@contextmanager
def kept_parameters(model: nn.Module) -> Iterator[None]:
    """Restore every parameter's requires_grad and .grad (the object and its values) afterwards:
    around anything that runs its own backward (grad-cam's classes, a caller's saliency callable,
    fine-tuning)."""
    params = list(model.parameters())
    saved = [(p.grad, None if p.grad is None else p.grad.detach().clone(), p.requires_grad) for p in params]
    try:
        yield
    finally:
        for p, (g, v, f) in zip(params, saved, strict=True):
            p.requires_grad_(f)
            if g is not None:
                with torch.no_grad():
                    g.copy_(v)
            p.grad = g


@contextmanager
def callers_model(model: nn.Module) -> Iterator[nn.Module]:
    """Leave the caller's model as it was found: every module's mode, its device, its parameters'
    requires_grad and .grad (the weights are the caller of this context's business)."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else None
    modes = [(m, m.training) for m in model.modules()]
    try:
        with kept_parameters(model):
            yield model
    finally:
        for m, training in modes:
            m.training = training
        if device is not None:
            model.to(device)


@contextmanager
def callers_globals() -> Iterator[None]:
    """Leave torch's global state as it was found: the RNG streams (CPU and CUDA: a run seeds them),
    grad mode, and the warning filters."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    grad = torch.is_grad_enabled()
    try:
        with torch.random.fork_rng(devices=cuda), warnings.catch_warnings():
            yield
    finally:
        torch.set_grad_enabled(grad)
