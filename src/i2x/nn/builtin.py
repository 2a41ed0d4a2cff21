"""Analyses rebuilt from a run's settings alone: the built-in model and data a config names.

``i2x analyze`` calls these (the command only parses flags); from Python, ``i2x.analyze`` and
``i2x.analyze_checkpoints`` take your own model and data instead.
"""

from __future__ import annotations

from pathlib import Path

from ..config import resolve
from ..data import explanation_indices, splits_for
from ..rundir import Run, stage_done
from .models import built_in_model, load_model
from .pipeline import analyze, analyze_checkpoints


def reanalyze(run_dir: str | Path, *, progress: bool = False, report: bool = True, **overrides) -> Run:
    """Stages 2-7 of a run that ``i2x run`` wrote, again, with ``overrides`` (only the stages they
    change are redone): its own model, rebuilt from ``weights/final.pt``, and its training set when
    the prototypes are fitted on it again."""
    train = _refit_train_set(run_dir, overrides)
    return analyze(run_dir, load_model(run_dir), train=train, progress=progress, report=report, **overrides)


def _refit_train_set(run_dir: str | Path, overrides: dict):
    """The training set of a built-in run whose prototypes will be fitted on it again (None when
    the prototypes stage is kept: loading the data would be wasted)."""
    r = Run(run_dir)
    cfg = resolve(overrides, base=r.manifest["config"], analysis=True)
    built_in = r.manifest.get("data", {}).get("dataset") == cfg.dataset  # not the caller's train= data
    redo = not stage_done(run_dir, r.manifest, "prototypes", cfg)
    return splits_for(cfg).train if cfg.prototype_fit == "train" and built_in and redo else None


def analyze_saved(
    checkpoints: str | Path, run_dir: str | Path, *, progress: bool = False, report: bool = True, **overrides
) -> Run:
    """Record and analyse saved ``state_dict`` files of a built-in architecture (``model=``) trained
    on a built-in dataset (``dataset=``): the explanation set, test set and training set are the
    ones the settings name, as ``i2x run`` would draw them."""
    cfg = resolve(overrides)
    sp = splits_for(cfg)
    x, y = sp.train.tensors(explanation_indices(sp.train.labels, cfg.explain_fraction, cfg.explain_seed))
    return analyze_checkpoints(
        checkpoints,
        built_in_model(cfg.model, sp.train),
        run_dir,
        images=x,
        labels=y.numpy(),
        classes=sp.train.classes,
        test=sp.test.tensors(),
        train=sp.train if cfg.prototype_fit == "train" else None,
        config=cfg,
        progress=progress,
        report=report,
    )
