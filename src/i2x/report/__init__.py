"""``i2x report``: a run directory as one HTML page with figures (``DIR/report/index.html``).

The report reads the saved arrays of a finished run (numpy + matplotlib only; it never imports
torch or re-runs a model) and writes ``index.html`` next to ``fig/NAME.png`` and
``fig/NAME.svg``, one pair per figure, referenced relatively so the folder opens from disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import store
from ..errors import I2XError
from ..rundir import run_lock
from .figures import RC, FigureWriter
from .load import load_run
from .page import build

__all__ = ["report"]


def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, svg: bool = True) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default ``run_dir/report``); returns the
    path of ``index.html``. ``svg=False`` skips the SVG copies (faster)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise I2XError(f"run directory {run_dir} does not exist: pass the --out DIR of an `i2x run`")
    with run_lock(run_dir):
        return _write(run_dir, out, svg)


def _write(run_dir: Path, out, svg: bool) -> Path:
    import matplotlib

    d = load_run(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    if out.exists() and not out.is_dir():
        raise I2XError(f"--out {out} is a file: give a folder for the report")
    fig_dir = out / "fig"
    if fig_dir.is_dir():  # figures of an earlier report (other classes/pairs) must not linger; nothing else goes
        for f in [*fig_dir.glob("*.png"), *fig_dir.glob("*.svg")]:
            f.unlink()
    with matplotlib.rc_context(RC):
        text = build(d, FigureWriter(fig_dir, svg=svg))
    return store.atomic_write(out / "index.html", text)
