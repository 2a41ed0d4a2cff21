"""The words of an explanation: where a prototype sits, which way it pulls, and one listed item as a sentence,
shared by the run's summary and ``i2x explain`` (docs/GLOSSARY.md defines the terms). Pure Python / numpy."""

from __future__ import annotations

import numpy as np

from .analysis.stats import format_effect

ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


def places(assignments: np.ndarray, k: int) -> list[str]:
    """Where each of the ``k`` prototypes sits in the images (``assignments`` (N, H', W'), the prototype of every
    cell): the third of the height and of the width its cells' mean position falls in ("top left", "bottom",
    "centre"), "all over" when its cells spread over most of the image, "nowhere" without a cell."""
    a = np.asarray(assignments)
    h, w = a.shape[1:]
    rows, cols = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    out = []
    for p in range(k):
        hit = a == p
        n = int(hit.sum())
        if not n:
            out.append("nowhere")
            continue
        r, c = np.broadcast_to(rows, a.shape)[hit], np.broadcast_to(cols, a.shape)[hit]
        if r.std() > 0.25 and c.std() > 0.25:  # a uniform spread has sd 0.29
            out.append("all over")
            continue
        v, u = ROWS[min(int(r.mean() * 3), 2)], COLS[min(int(c.mean() * 3), 2)]
        out.append(
            "centre" if (v, u) == ("middle", "centre") else v if u == "centre" else u if v == "middle" else f"{v} {u}"
        )
    return out


def leaning(row: dict, names: list[str]) -> str:
    """Which way the model leans when the prototype grows, step by step: "towards 4" or, where the direction
    changes during training, "towards 4, then 9 (from step 4)" / "towards 9, then 4, 9 (from steps 3, 7)"."""
    runs, starts = [], []
    for st in row["significant_steps"]:
        if not runs or runs[-1] != st["favours"]:
            runs.append(st["favours"])
            starts.append(st["step"])
    rest = [names[c] for c in runs[1:]]
    text = f"towards {names[runs[0]]}" + (f", then {', '.join(rest)}" if rest else "")
    if len(runs) > 1:
        text += f" (from step{'s' * (len(runs) > 2)} {', '.join(map(str, starts[1:]))})"
    return text


def pair_item(row: dict, names: list[str], a: int, b: int, place: str | None = None) -> str:
    """One listed prototype of the pair (a, b) as a sentence: "P-23 (bottom; in 94 % of the 4s, 0 % of the 9s):
    when it grows in an image, the model leans towards 4, then 9 (from step 4); effect 0.54 [0.49, 0.59],
    listed in 100 % of random halves"."""
    where = f"{place}; " if place else ""
    share = "" if row.get("frequency") is None else f", listed in {100 * row['frequency']:.0f} % of random halves"
    return (
        f"P-{row['prototype']} ({where}in {100 * row['contain_a']:.0f} % of the {names[a]}s, "
        f"{100 * row['contain_b']:.0f} % of the {names[b]}s): when it grows in an image, the model leans "
        f"{leaning(row, names)}; effect {format_effect(row)}{share}"
    )


def sanity_text(check: dict) -> str:
    """The saliency sanity check in words (:func:`i2x.nn.sanity.randomisation_check`'s result)."""
    verdict = "the maps depend on the model" if check["passed"] else "the maps barely depend on the model"
    return (
        f"with the layers above the target layer re-initialised, the maps of {check['images']} images keep a rank "
        f"correlation of {check['rank_correlation']:.2f}: {verdict}"
    )


__all__ = ["places", "leaning", "pair_item", "sanity_text"]
