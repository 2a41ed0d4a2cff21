"""i2x: Interpretability to Explainability (I2X) for image classifiers.

Stage functions (the method, and what i2x adds to it: docs/METHOD.md):

1. :func:`saliency` / :class:`Recorder` — saliency and confidence at training checkpoints
2. :func:`prototypes` — K-Means prototypes of the final model's features (Eq. 3)
3. :func:`intensity` — prototype intensity (Eq. 4), :func:`containment`
4. :func:`confidence_clusters` — HDBSCAN on confidence changes (Eq. 5)
5. :func:`aggregate_clusters` — per-cluster ΔP and ΔI (Eq. 6-7)
6. :func:`ridge` — W_t (Eq. 8); :func:`dynamics` runs 4-6 over every step, with the same code
7. :func:`explain` — structured explanations per class and per pair
8. :func:`finetune` — explanation-guided fine-tuning, against control arms
9. :func:`faithfulness` — prototype deletion on the final model, against random deletion

:func:`run` runs stages 1-7 into a run directory; :class:`Run` reads one back.

The torch boundary is the folder layout: ``i2x.nn`` holds everything that touches a model;
``i2x.analysis`` (the numpy stages), ``i2x.rundir``, ``i2x.store``, ``i2x.config`` and
``i2x.report`` never import torch. The names below are loaded on first use (PEP 562), so
``import i2x`` is fast and loads no torch until a torch-side name is asked for.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from .errors import ConfigError, DivergedError, I2XError, RunDirError, StorageError

try:
    __version__ = version("i2x")  # single source: pyproject.toml
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

# public name -> module that defines it (torch-side modules live under i2x.nn)
_LAZY = {
    "RunConfig": "config",
    "ExplainConfig": "config",
    "FinetuneConfig": "config",
    "FaithfulnessConfig": "config",
    "PRESETS": "presets",
    "prototypes": "analysis.prototypes",
    "Prototypes": "analysis.prototypes",
    "intensity": "analysis.intensity",
    "containment": "analysis.intensity",
    "confidence_clusters": "analysis.dynamics",
    "aggregate_clusters": "analysis.dynamics",
    "ridge": "analysis.dynamics",
    "dynamics": "analysis.dynamics",
    "Dynamics": "analysis.dynamics",
    "explain": "analysis.explain",
    "pair_explanation": "analysis.explain",
    "curated_indices": "analysis.finetune",
    "compare": "compare_runs",
    "Run": "rundir",
    "explain_text": "cli.explain",
    "saliency": "nn.saliency",
    "features": "nn.saliency",
    "Recorder": "nn.record",
    "run": "nn.pipeline",
    "analyze": "nn.pipeline",
    "analyze_checkpoints": "nn.pipeline",
    "load_model": "nn.models",
    "finetune": "nn.finetune",
    "faithfulness": "nn.faithfulness",
    "models": "nn.models",
}

__all__ = [*_LAZY, "I2XError", "ConfigError", "RunDirError", "DivergedError", "StorageError", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = mod if name == "models" else getattr(mod, name)
        globals()[name] = value  # cache: later lookups do not come back here
        return value
    raise AttributeError(f"module 'i2x' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
