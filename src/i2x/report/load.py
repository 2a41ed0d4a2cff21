"""Everything the report draws, read from a run directory's saved arrays (numpy only, no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import store
from ..analysis.links import Links
from ..analysis.stats import mean_std
from ..errors import RunDirError
from ..rundir import Run


@dataclass
class RunData:
    path: Path
    manifest: dict
    classes: list[str]
    iterations: np.ndarray  # (T+1,) training iteration of each checkpoint
    labels: np.ndarray  # (N,) true class of each sample of E
    images: np.ndarray  # (N, C, H, W) uint8 raw images of E
    confidences: np.ndarray  # (T+1, N, C)
    saliency: np.ndarray  # (N, H', W') final checkpoint's saliency
    assignments: np.ndarray  # (N, H', W')
    typical: np.ndarray | None  # (K, n, 3) (row in E, u, v), -1 padded
    intensity: np.ndarray  # (T+1, N, K)
    contain: np.ndarray  # (N, K) bool
    W: np.ndarray  # (T, K, C)
    n_clusters: np.ndarray  # (T,)
    flagged: np.ndarray  # (T,) bool
    class_delta: np.ndarray  # (T, C)
    confusion: np.ndarray  # (C, C) rows = true class
    explanations: dict
    finetune: dict | None
    finetune_table: str | None
    faithfulness: dict | None = None  # DIR/faithfulness.json when `i2x faithfulness` wrote it
    perturbed: dict | None = None  # DIR/finetune/perturbed.npz (finetune --intervention perturb), display images
    links: Links | None = None  # the pair roles' samples test (arrays/links.npz), when the run has one

    @property
    def k(self) -> int:
        return int(self.contain.shape[1])

    @property
    def samples_as_rows(self) -> bool:
        """The ridge's rows are E's samples (``aggregate`` samples), not HDBSCAN clusters."""
        return self.manifest.get("config", {}).get("aggregate") == "samples"

    def pair_curves(self, a: int, b: int) -> tuple[np.ndarray, str]:
        """(T, K) what each prototype contributed to the pair (a, b) per step (+ = towards a), and its name:
        the samples test's standardised within-class link β_t when the run has it, else the paper's
        d_t = W_t[k, a] − W_t[k, b]."""
        if self.links is None:
            return self.W[:, :, a] - self.W[:, :, b], "d"
        j, sign = self.links.index(a, b)
        return sign * self.links.beta[:, :, j].astype(np.float64), "β"

    def class_conf(self, c: int) -> np.ndarray:
        """(T+1,) mean confidence of class c over its samples in E."""
        m = self.labels == c
        return self.confidences[:, m, c].mean(1) if m.any() else np.full(len(self.iterations), np.nan)


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    m = Run(run_dir).check_complete("report").manifest
    es = store.load_npz(run_dir / "record" / "explain_set.npz")
    if "images" not in es:
        raise RunDirError(
            f"{run_dir}/record/explain_set.npz has no raw images (written by an older i2x): "
            f"re-run it with `i2x run --out {run_dir} --overwrite`"
        )
    rec = store.load_records(
        run_dir, saliency="last", expected=m.get("checkpoints")
    )  # saliency of the final checkpoint only
    its, conf, sal = rec["iterations"], rec["confidences"], rec["saliency"][0]
    arr = {
        s: store.load_npz(run_dir / "arrays" / f"{s}.npz") for s in ("evaluate", "prototypes", "intensity", "dynamics")
    }
    ft, table = _finetune(run_dir)
    return RunData(
        path=run_dir,
        manifest=m,
        classes=[str(c) for c in m["data"]["classes"]],
        iterations=its,
        labels=es["labels"].astype(np.int64),
        images=display_images(es["images"], m["data"].get("mean"), m["data"].get("std")),
        confidences=conf,
        saliency=sal,
        assignments=arr["prototypes"]["assignments"],
        typical=arr["prototypes"].get("typical"),
        intensity=arr["intensity"]["intensity"],
        contain=arr["intensity"]["contain"].astype(bool),
        W=arr["dynamics"]["W"],
        n_clusters=arr["dynamics"]["n_clusters"],
        flagged=arr["dynamics"]["flagged"].astype(bool),
        class_delta=arr["dynamics"]["class_delta"],
        confusion=arr["evaluate"]["confusion"],
        explanations=store.load_json(run_dir / "explanations.json"),
        finetune=ft,
        finetune_table=table,
        faithfulness=_json_or_none(run_dir / "faithfulness.json"),
        perturbed=_perturbed(run_dir, m["data"]),
        links=Run(run_dir).links(),
    )


def _perturbed(run_dir: Path, data: dict) -> dict | None:
    """The perturbed examples ``i2x finetune --intervention perturb`` saved: rows of E, their images
    before and after (uint8, both through one display mapping) and the imputed cells; None if absent."""
    try:
        z = store.load_npz(run_dir / "finetune" / "perturbed.npz")
        n = len(z["rows"])
        shown = display_images(np.concatenate([z["before"], z["after"]]), data.get("mean"), data.get("std"))
    except (OSError, KeyError, ValueError):
        return None
    return {"rows": z["rows"], "before": shown[:n], "after": shown[n:], "cells": z["cells"].astype(bool)} if n else None


def display_images(images: np.ndarray, mean, std) -> np.ndarray:
    """(N, C, H, W) images of E as uint8 for display. They are stored normalised (float32, as the
    model saw them) and un-normalised here with the run's mean/std; images that then lie in 0..1
    (every built-in dataset, and images normalised from 0..1 pixels) are shown as they are (×255),
    others (the caller's tensors of unknown range) stretched to 0..255 between their 0.5 and 99.5
    percentiles."""
    x = np.asarray(images)
    c = x.shape[1]
    mean = np.asarray(mean if mean is not None else [0.0] * c, dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(std if std is not None else [1.0] * c, dtype=np.float64).reshape(1, -1, 1, 1)
    x = x.astype(np.float64) * std + mean
    if x.size and x.min() >= -1e-4 and x.max() <= 1 + 1e-4:  # pixels in 0..1: their own values
        return (255 * np.clip(x, 0, 1)).round().astype(np.uint8)
    lo, hi = np.percentile(x, [0.5, 99.5]) if x.size else (0.0, 1.0)
    return (255 * np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)).round().astype(np.uint8)


def _json_or_none(path: Path) -> dict | None:
    """Another command's JSON output, or None when absent or unreadable (the report must not fail on it)."""
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return res if isinstance(res, dict) else None


def _finetune(run_dir: Path) -> tuple[dict | None, str | None]:
    """``DIR/finetune/results.json`` and ``table.md`` when ``i2x finetune`` wrote them; anything
    unreadable is treated as absent (the report must not fail on another stage's output)."""
    try:
        table = (run_dir / "finetune" / "table.md").read_text()
    except OSError:
        table = None
    return _json_or_none(run_dir / "finetune" / "results.json"), table


def finetune_summary(res: dict) -> dict | None:
    """Per schedule of ``i2x finetune``'s ``results.json``: mean ± std (:func:`~i2x.analysis.stats.mean_std`,
    the rule of its saved ``<metric>_mean`` / ``<metric>_std``) of accuracy (%) and of
    a→b, b→a, a↔b errors, from every repeat's accuracy and confusion matrix (control arms named
    "schedule [control]"). None when ``res`` is
    not in that format (``pair`` [a, b], ``schedules`` name -> {"repeats": [...]}, ``baseline``)."""
    try:
        a, b = (int(x) for x in res["pair"])
        base = res["baseline"]
        arms = list(res["schedules"].items()) + [  # control arms: "curated+full [random-pair]"
            (f"{sched} [{c}]", arm) for c, v in res.get("controls", {}).items() for sched, arm in v["schedules"].items()
        ]
        out = {}
        for name, s in arms:
            reps = s["repeats"]
            acc = [100 * r["accuracy"] for r in reps]
            ab, ba = [r["confusion"][a][b] for r in reps], [r["confusion"][b][a] for r in reps]
            if acc:
                out[str(name)] = {
                    "n": len(acc),
                    "accuracy": mean_std(acc),
                    "a_to_b": mean_std(ab),
                    "b_to_a": mean_std(ba),
                    "both": mean_std([x + y for x, y in zip(ab, ba, strict=True)]),
                }
        baseline = {"accuracy": 100 * base["accuracy"], "both": base["confusion"][a][b] + base["confusion"][b][a]}
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    return {"a": a, "b": b, "schedules": out, "baseline": baseline} if out else None
