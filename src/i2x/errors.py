"""Errors that i2x raises for bad input.

Every user-facing failure is an :class:`I2XError` whose message names the argument and the
fix in one line; the CLI prints it and exits with status 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations


class I2XError(ValueError):
    """Bad input or state that the user can fix; the message says how."""


class RunDirError(I2XError):
    """A run directory is missing, incomplete, corrupt or of an incompatible schema."""


class DivergedError(I2XError):
    """NaN or inf appeared in confidences or saliency: the model diverged."""
