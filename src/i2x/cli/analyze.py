"""``i2x analyze DIR``: stages 2-7 on records your own loop wrote, or on saved state_dicts."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..errors import I2XError
from .options import add_quiet, add_settings, given
from .run import summary

NAME = "analyze"
_SETTINGS: list[str] = []


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="stages 2-7 on records your own loop wrote, or on saved state_dicts")
    p.add_argument("run_dir", help="directory with record/ckpt_it*.npz (from i2x.Recorder) or to write into")
    p.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="folder of saved state_dicts (*.pt/*.pth) to record first "
        "(with --model and --dataset: the architecture and the data they come from)",
    )
    add_quiet(p)
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    _SETTINGS[:] = add_settings(p, RunConfig, NAME)


def cmd(a) -> int:
    from ..nn.builtin import analyze_saved, reanalyze

    over = given(a, _SETTINGS)
    if a.checkpoints is None:
        if not (Path(a.run_dir) / "weights" / "final.pt").exists():
            raise I2XError(
                f"{a.run_dir} has no weights/final.pt: pass --checkpoints DIR --model NAME --dataset NAME, "
                "or call i2x.analyze(run_dir, model=...) from Python"
            )
        print(summary(reanalyze(a.run_dir, progress=not a.quiet, report=not a.no_report, **over)))
        return 0
    if not (a.model and a.dataset):
        raise I2XError("--checkpoints needs --model NAME and --dataset NAME (the architecture and data they come from)")
    print(summary(analyze_saved(a.checkpoints, a.run_dir, progress=not a.quiet, report=not a.no_report, **over)))
    return 0
