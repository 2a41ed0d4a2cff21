"""Everything the report draws, read from a run directory's saved arrays (numpy only, no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import store
from ..errors import RunDirError


@dataclass
class RunData:
    path: Path
    manifest: dict
    classes: list[str]
    iterations: np.ndarray      # (T+1,) training iteration of each checkpoint
    labels: np.ndarray          # (N,) true class of each sample of E
    images: np.ndarray          # (N, C, H, W) uint8 raw images of E
    confidences: np.ndarray     # (T+1, N, C)
    saliency: np.ndarray        # (N, H', W') final checkpoint's saliency
    assignments: np.ndarray     # (N, H', W')
    typical: np.ndarray | None  # (K, n, 3) (row in E, u, v), -1 padded
    intensity: np.ndarray       # (T+1, N, K)
    contain: np.ndarray         # (N, K) bool
    W: np.ndarray               # (T, K, C)
    n_clusters: np.ndarray      # (T,)
    flagged: np.ndarray         # (T,) bool
    class_delta: np.ndarray     # (T, C)
    confusion: np.ndarray       # (C, C) rows = true class
    explanations: dict
    finetune: dict | None
    finetune_table: str | None

    @property
    def k(self) -> int:
        return int(self.contain.shape[1])

    def class_conf(self, c: int) -> np.ndarray:
        """(T+1,) mean confidence of class c over its samples in E."""
        m = self.labels == c
        return self.confidences[:, m, c].mean(1) if m.any() else np.full(len(self.iterations), np.nan)


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    m = store.read_manifest(run_dir)
    missing = [s for s in store.STAGES if not m.get("stages", {}).get(s, {}).get("complete")]
    if missing:
        raise RunDirError(f"{run_dir} is incomplete (missing stages: {', '.join(missing)}): "
                          f"finish it with `i2x run --resume {run_dir}` before `i2x report`")
    es = store.load_npz(run_dir / "record" / "explain_set.npz")
    if "images" not in es:
        raise RunDirError(f"{run_dir}/record/explain_set.npz has no raw images (written by an older i2x): "
                          f"re-run it with `i2x run --out {run_dir} --overwrite`")
    rec = store.load_records(run_dir, saliency="last")  # saliency of the final checkpoint only
    its, conf, sal = rec["iterations"], rec["confidences"], rec["saliency"][0]
    arr = {s: store.load_npz(run_dir / "arrays" / f"{s}.npz") for s in ("evaluate", "prototypes", "intensity", "dynamics")}
    ft, table = _finetune(run_dir)
    return RunData(
        path=run_dir, manifest=m, classes=[str(c) for c in m["data"]["classes"]], iterations=its,
        labels=es["labels"].astype(np.int64), images=es["images"], confidences=conf, saliency=sal,
        assignments=arr["prototypes"]["assignments"], typical=arr["prototypes"].get("typical"),
        intensity=arr["intensity"]["intensity"], contain=arr["intensity"]["contain"].astype(bool),
        W=arr["dynamics"]["W"], n_clusters=arr["dynamics"]["n_clusters"],
        flagged=arr["dynamics"]["flagged"].astype(bool), class_delta=arr["dynamics"]["class_delta"],
        confusion=arr["evaluate"]["confusion"], explanations=store.load_json(run_dir / "explanations.json"),
        finetune=ft, finetune_table=table)


def _finetune(run_dir: Path) -> tuple[dict | None, str | None]:
    """``DIR/finetune/results.json`` and ``table.md`` when ``i2x finetune`` wrote them; anything
    unreadable is treated as absent (the report must not fail on another stage's output)."""
    d = run_dir / "finetune"
    res = table = None
    try:
        res = json.loads((d / "results.json").read_text())
        if not isinstance(res, dict):
            res = None
    except (OSError, ValueError):
        res = None
    try:
        table = (d / "table.md").read_text()
    except OSError:
        table = None
    return res, table


def _mean_std(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def finetune_summary(res: dict, classes: list[str]) -> dict | None:
    """Per schedule: mean ± std of accuracy (%) and of a→b, b→a, a↔b errors, from every repeat's
    accuracy and confusion matrix. Accepts ``schedules`` as a dict name -> {repeats: [...]} or
    name -> [...], or a list of {name|schedule, repeats}; returns None when the shape is unknown."""
    pair = res.get("pair") or [res.get("a"), res.get("b")]
    try:
        a, b = (x if isinstance(x, int) else classes.index(str(x)) for x in pair)
    except (TypeError, ValueError):
        a = b = None
    sch = res.get("schedules", res.get("results"))
    items = []
    if isinstance(sch, dict):
        items = list(sch.items())
    elif isinstance(sch, list):
        items = [(s.get("name", s.get("schedule", str(i))), s) for i, s in enumerate(sch) if isinstance(s, dict)]
    out = {}
    for name, s in items:
        reps = s.get("repeats", s.get("runs")) if isinstance(s, dict) else s
        if not isinstance(reps, list) or not reps:
            continue
        acc, ab, ba = [], [], []
        for r in reps:
            if not isinstance(r, dict):
                continue
            v = r.get("accuracy", r.get("test_accuracy", r.get("acc")))
            if isinstance(v, (int, float)):
                acc.append(100 * v if v <= 1 else v)
            cm = r.get("confusion")
            if a is not None and isinstance(cm, list) and len(cm) > max(a, b):
                ab.append(cm[a][b])
                ba.append(cm[b][a])
        if not acc:
            continue
        row = {"n": len(acc), "accuracy": _mean_std(acc)}
        if ab:
            row.update(a_to_b=_mean_std(ab), b_to_a=_mean_std(ba), both=_mean_std([x + y for x, y in zip(ab, ba, strict=True)]))
        out[str(name)] = row
    if not out:
        return None
    base = res.get("baseline") if isinstance(res.get("baseline"), dict) else {}
    bacc, bcm = base.get("accuracy"), base.get("confusion")
    baseline = {"accuracy": (100 * bacc if bacc <= 1 else bacc) if isinstance(bacc, (int, float)) else None,
                "both": (bcm[a][b] + bcm[b][a]) if a is not None and isinstance(bcm, list) and len(bcm) > max(a, b) else None}
    return {"a": a, "b": b, "schedules": out, "baseline": baseline}
