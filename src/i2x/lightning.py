"""PyTorch Lightning integration: ``from i2x.lightning import I2XCallback`` (needs ``i2x[lightning]``).

The callback lives behind the torch boundary (:mod:`i2x.nn.lightning`); this module loads it on
first use so that ``import i2x.lightning`` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["I2XCallback"]  # noqa: F822 (loaded by __getattr__)


def __getattr__(name: str):
    if name == "I2XCallback":
        return importlib.import_module("i2x.nn.lightning").I2XCallback
    raise AttributeError(f"module 'i2x.lightning' has no attribute {name!r}")
