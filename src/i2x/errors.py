"""Errors that i2x raises for bad input, all in this one module.

Every user-facing failure is an :class:`I2XError` whose message names the argument and the
fix in one line; the CLI prints it and exits with status 2 (no traceback unless ``--debug``).
Library messages name the Python argument (``epochs=0``); the CLI turns a setting's name into
its flag (``--epochs 0``, :func:`i2x.cli.cli_message`), so the library never assumes its caller.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class I2XError(ValueError):
    """Bad input or state that the user can fix; the message says how."""


class RunDirError(I2XError):
    """A run directory is missing, incomplete, corrupt or of an incompatible schema."""


class DivergedError(I2XError):
    """NaN or inf appeared in confidences or saliency: the model diverged."""


class ConfigError(I2XError):
    """A setting has a bad value: ``str()`` names the field (``epochs=0: must be ≥ 1``); the CLI
    names its flag (``--epochs 0: must be ≥ 1``). ``problem`` may name other settings as
    ``name=value``; the CLI turns those into flags as well."""

    def __init__(self, name: str, value: Any, problem: str):
        self.name, self.value, self.problem = name, value, problem
        super().__init__(f"{name}={value!r}: {problem}")


class StorageError(I2XError):
    """A file could not be written (disk full, no permission, ...); nothing half-written remains."""

    def __init__(self, path, exc: BaseException):
        err = getattr(exc, "errno", None) or errno_in(exc)
        reason = os.strerror(err) if err else str(exc).splitlines()[0][:120]
        fix = "free disk space" if err == errno.ENOSPC else "check the folder's space and permissions"
        super().__init__(
            f"cannot write {path} ({reason}): {fix}, then continue with `i2x run --resume DIR` "
            "(complete stages are kept)"
        )


def errno_in(exc: BaseException) -> int | None:
    """The errno of the first OSError in ``exc``'s chain of causes, if any."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def flag_of(name: str) -> str:
    """The command-line flag of setting ``name`` (``train_subset`` -> ``--train-subset``)."""
    return "--" + name.replace("_", "-")
