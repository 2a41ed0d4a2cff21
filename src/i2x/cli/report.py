"""``i2x report DIR``: the run's explanations as one HTML page with figures."""

from __future__ import annotations

import time

NAME = "report"


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="write DIR/report/index.html: the run's explanations as figures")
    p.add_argument("run_dir", help="a finished run directory (i2x run --out DIR)")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--no-svg", action="store_true", help="write PNG figures only (faster)")


def cmd(a) -> int:
    from ..report import report

    t0 = time.perf_counter()
    index = report(a.run_dir, a.out, svg=not a.no_svg)
    n = len(list((index.parent / "fig").glob("*.png")))
    print(f"i2x report -> {index} ({n} figures, {time.perf_counter() - t0:.1f} s)")
    return 0
