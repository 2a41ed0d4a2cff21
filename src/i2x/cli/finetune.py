"""``i2x finetune DIR``: explanation-guided fine-tuning (paper Table 1) of a finished run."""

from __future__ import annotations

from ..config import FinetuneConfig
from .options import add_run_command, given

NAME = "finetune"
_SETTINGS: list[str] = []


def add_parser(sub) -> None:
    _SETTINGS[:] = add_run_command(
        sub,
        NAME,
        "explanation-guided fine-tuning (paper Table 1) of a finished run",
        FinetuneConfig,
        "output folder (default DIR/finetune)",
    )


def cmd(a) -> int:
    from ..nn.finetune import finetune

    res = finetune(a.run_dir, out=a.out, progress=not a.quiet, **given(a, _SETTINGS))
    print(res.table(), end="")
    print(f"wrote {res.path / 'results.json'} and {res.path / 'table.md'} ({res.timings['total']:.1f} s)")
    return 0
