"""``i2x report``: a run directory as one HTML page with figures (``DIR/report/index.html``).

The report reads the saved arrays of a finished run (numpy + matplotlib only; it never imports
torch or re-runs a model) and writes ``index.html`` next to ``fig/NAME.png`` and
``fig/NAME.svg``, one pair per figure, referenced relatively so the folder opens from disk.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ..errors import I2XError
from .figures import RC, FigureWriter
from .load import load_run
from .page import build

__all__ = ["report", "add_parser", "cmd"]


def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, svg: bool = True) -> Path:
    """Write the report of ``run_dir`` into ``out`` (default ``run_dir/report``); returns the
    path of ``index.html``. ``svg=False`` skips the SVG copies (faster)."""
    import matplotlib

    run_dir = Path(run_dir)
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
    index = out / "index.html"
    fd, tmp = tempfile.mkstemp(prefix=".index.html.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, index)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return index


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write DIR/report/index.html: the run's explanations as figures")
    p.add_argument("run_dir", help="a finished run directory (i2x run --out DIR)")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--no-svg", action="store_true", help="write PNG figures only (faster)")


def cmd(a) -> int:
    t0 = time.perf_counter()
    index = report(a.run_dir, a.out, svg=not a.no_svg)
    n = len(list((index.parent / "fig").glob("*.png")))
    print(f"i2x report -> {index} ({n} figures, {time.perf_counter() - t0:.1f} s)")
    return 0
