"""Command line: ``i2x run | explain | analyze | report | finetune | faithfulness | compare``.

A thin layer over the Python API.

One module per subcommand, each with ``add_parser(sub)`` and ``cmd(args) -> int``; the flags of
settings are generated from :mod:`i2x.config` (:mod:`i2x.cli.options`). Bad input exits with
status 2 and one line naming the flag and the fix; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from ..errors import ConfigError, I2XError, flag_of
from . import analyze, compare, explain, faithfulness, finetune, report, run

COMMANDS = {m.NAME: m for m in (run, explain, analyze, report, finetune, faithfulness, compare)}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="i2x", description="I2X: why does the classifier look there?")
    p.add_argument("--version", action="version", version=f"i2x {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for m in COMMANDS.values():
        m.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    a = build_parser().parse_args([x for x in argv if x != "--debug"])
    _flag_warnings()
    try:
        return COMMANDS[a.command].cmd(a)
    except I2XError as exc:
        if debug:
            raise
        msg = cli_message(exc)
        print(f"i2x {a.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with `i2x run --resume DIR`", file=sys.stderr)
        return 130


def cli_message(exc: I2XError) -> str:
    """The CLI's wording of a library error: a setting named ``name=value`` (the field of a
    :class:`ConfigError`, and every setting a message names) becomes its flag ``--name value``
    (``--name`` / ``--no-name`` for True / False): the library writes Python's names, the command line
    reads flags."""
    if not isinstance(exc, ConfigError):
        return to_flags(str(exc))
    return f"{flag_of(exc.name)} {exc.value}: {to_flags(exc.problem)}"


def _flag_warnings() -> None:
    """Show the library's warnings with flags for the settings they name (:func:`to_flags`)."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        shown(to_flags(str(message)), category, filename, lineno, file, line)

    warnings.showwarning = show


def to_flags(text: str) -> str:
    """``name=value`` of every setting named in ``text`` as its flag (``download=True`` -> ``--download``),
    except inside a Python call the message quotes (``i2x.finetune(DIR, model=m)`` stays as written)."""
    from ..config import all_setting_names

    names = "|".join(sorted(all_setting_names(), key=len, reverse=True))

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if value in ("True", ""):
            return flag_of(name)
        if value == "False":
            return "--no-" + flag_of(name)[2:]
        return f"{flag_of(name)} {value}"

    calls = re.findall(r"[\w.]+\([^()]*\)", text)  # Python calls quoted in a message stay Python: run(resume=True)
    for i, c in enumerate(calls):
        text = text.replace(c, f"\0{i}\0", 1)
    text = re.sub(rf"(?<![\w.(])\b({names})=(\S*?)(?=[\s,;:)]|$)", flag, text)
    for i, c in enumerate(calls):
        text = text.replace(f"\0{i}\0", c, 1)
    return text


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `i2x explain DIR | head`: the reader has gone; stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        code = 128 + 13  # what a shell reports for SIGPIPE
    sys.exit(code)


if __name__ == "__main__":
    entry()
