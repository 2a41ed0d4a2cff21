"""Command-line flags generated from the settings' declarations (:mod:`i2x.config`).

Each setting whose ``commands`` include a subcommand becomes a flag of it: ``--name-with-dashes``,
typed from the declaration, ``--x/--no-x`` for booleans, its help text with the default in
brackets. Every flag defaults to None ("not given") so that :func:`i2x.config.resolve` can apply
the one precedence rule.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from ..config import ADVANCED_GROUPS, HELP_GROUPS, ExplainConfig, RunConfig
from ..errors import flag_of


def _default_text(f) -> str:
    d = f.default if f.default is not MISSING else None
    return "" if d is None else f" [{d}]"


def add_settings(parser: argparse.ArgumentParser, cls, command: str) -> list[str]:
    """Add the flags of ``cls``'s settings that belong to ``command``, in the groups of
    :data:`~i2x.config.HELP_GROUPS` (other classes: one group); returns their names."""
    group_of = {n: title for title, names in HELP_GROUPS.items() for n in names}
    groups: dict[str, argparse._ArgumentGroup] = {}
    if cls is RunConfig:  # the groups in their order, whatever field comes first
        groups = {title: parser.add_argument_group(title) for title in HELP_GROUPS}
    names = []
    for f in [*fields(cls), *(fields(ExplainConfig) if cls is RunConfig else ())]:
        m = f.metadata
        if command not in m.get("commands", ()):
            continue
        title = group_of.get(f.name, f"settings (i2x.config.{cls.__name__})")
        target = groups.setdefault(title, parser.add_argument_group(title))
        action = target.add_argument(flag_of(f.name), **_flag(f))
        action.advanced = title in ADVANCED_GROUPS
        names.append(f.name)
    return names


def _flag(f) -> dict:
    """add_argument's keywords of setting ``f``: typed from its declaration, its help with the default."""
    m = f.metadata
    help_text = (m.get("help", "") + _default_text(f)).replace("%", "%%")  # argparse formats help with %
    kw: dict = {"dest": f.name, "default": None, "help": help_text}
    if m.get("type") is bool:
        kw["action"] = argparse.BooleanOptionalAction
    else:
        kw["type"] = m.get("type") or str
        kw["metavar"] = {int: "N", float: "X"}.get(kw["type"], "VALUE")
        if m.get("choices"):
            kw["choices"] = m["choices"]
        if m.get("nargs"):
            kw["nargs"] = m["nargs"]
    return kw


class _Help(argparse.Action):
    """``-h``: the parser's help without the flags of :data:`~i2x.config.ADVANCED_GROUPS` (``--help-all``: all)."""

    def __init__(self, option_strings, dest, everything: bool = False, **kw):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kw)
        self.everything = everything

    def __call__(self, parser, namespace, values, option_string=None):
        hidden = [] if self.everything else [a for a in parser._actions if getattr(a, "advanced", False)]
        saved = [a.help for a in hidden]
        for a in hidden:
            a.help = argparse.SUPPRESS
        parser.print_help()
        for a, h in zip(hidden, saved, strict=True):
            a.help = h
        parser.exit()


def add_help(parser: argparse.ArgumentParser) -> None:
    """``-h/--help`` (the common flags) and ``--help-all`` (every flag) for a parser made with ``add_help=False``."""
    parser.add_argument("-h", "--help", action=_Help, help="show the common options and exit")
    parser.add_argument("--help-all", action=_Help, everything=True, help="show every option, the advanced ones too")


def given(args: argparse.Namespace, names: list[str]) -> dict:
    """The settings given on the command line (flags left out are absent)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: the one flag every subcommand that does long work takes to hide its progress bars."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_run_command(sub, name: str, help: str, cls, out_help: str) -> list[str]:
    """A subcommand on a finished run: ``RUN_DIR``, ``--out``, ``--quiet`` and the flags of the
    settings ``cls`` declares for ``name``; returns the settings' names."""
    p = sub.add_parser(name, help=help)
    p.add_argument("run_dir", help="a finished run directory (i2x run --out DIR)")
    p.add_argument("--out", default=None, help=out_help)
    add_quiet(p)
    return add_settings(p, cls, name)
