"""The one progress bar of i2x: tqdm, with the widget in a notebook that has ipywidgets, a text bar
elsewhere. A text bar that is not on a terminal (a log file, CI, a notebook without ipywidgets,
where every carriage-return update becomes output) redraws at most once per ``mininterval`` (1 s;
5 s in a notebook), postfix updates included, and nested bars share its line (no cursor moves).
Imported on use (tqdm is not loaded by ``import i2x``)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class RateLimited(tqdm):
    """A tqdm whose explicit refreshes (``set_postfix``, ``set_description``) also wait for ``mininterval``."""

    def refresh(self, *args, **kwargs):
        now, draws = time.time(), getattr(self, "_draws", 0)
        if draws >= 2 and now - getattr(self, "_last_draw", 0.0) < getattr(self, "mininterval", 0.0):
            return None  # the first two draws (the bar, its first stage) always show
        self._last_draw, self._draws = now, draws + 1
        return super().refresh(*args, **kwargs)


def bar(iterable=None, **kw):
    """``tqdm(iterable, **kw)`` as fits where it is shown; ``disable=`` and the rest as tqdm's."""
    nb = _notebook()
    if nb and _has_widgets():
        from tqdm.notebook import tqdm as widget

        return widget(iterable, **kw)
    kw["mininterval"] = max(kw.get("mininterval", 1.0), 5.0 if nb else 1.0)
    if nb:
        kw.setdefault("ascii", True)
    file = kw.get("file") or sys.stderr
    tty = not nb and hasattr(file, "isatty") and file.isatty()
    if not tty:  # nested bars share the one line: a cursor move (\x1b[A) is literal text in a notebook or a log
        kw["position"] = 0
    return (tqdm if tty else RateLimited)(iterable, **kw)


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
