"""``i2x finetune DIR``: explanation-guided fine-tuning (paper Table 1) of a finished run."""

from __future__ import annotations

from ..config import FinetuneConfig
from .options import add_settings, given

NAME = "finetune"
_SETTINGS: list[str] = []


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="explanation-guided fine-tuning (paper Table 1) of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output folder (default DIR/finetune)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _SETTINGS[:] = add_settings(p.add_argument_group("settings (i2x.config.FinetuneConfig)"), FinetuneConfig, NAME)


def cmd(a) -> int:
    from ..nn.finetune import finetune

    res = finetune(a.run_dir, out=a.out, progress=not a.quiet, **given(a, _SETTINGS))
    print(res.table(), end="")
    print(f"wrote {res.path / 'results.json'} and {res.path / 'table.md'} ({res.timings['total']:.1f} s)")
    return 0
