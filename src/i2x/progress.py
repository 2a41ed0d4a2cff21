"""The one progress bar of i2x: tqdm, with the widget in a notebook that has ipywidgets, a text bar
that updates about once a second elsewhere (a log file, CI, or a notebook without ipywidgets,
where every update would otherwise become an output line)."""

from __future__ import annotations

import sys


def bar(iterable=None, **kw):
    """``tqdm(iterable, **kw)`` as fits where it is shown; ``disable=`` and the rest as tqdm's."""
    if _notebook() and _has_widgets():
        from tqdm.notebook import tqdm
    else:
        from tqdm import tqdm

        nb = _notebook()  # without a widget a Jupyter stream keeps every carriage-return update
        kw["mininterval"] = max(kw.get("mininterval", 1.0), 5.0 if nb else 1.0)
        if nb:
            kw.setdefault("ascii", True)
    return tqdm(iterable, **kw)


def _notebook() -> bool:
    """Inside a Jupyter kernel (IPython's ZMQ shell)."""
    ip = sys.modules.get("IPython")
    shell = getattr(ip, "get_ipython", lambda: None)() if ip else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True
