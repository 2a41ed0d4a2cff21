"""i2x: Interpretability to Explainability (I2X) for image classifiers.

Stage functions (see ``I2X-SPEC``):

1. :func:`saliency` / :class:`Recorder` — saliency and confidence at training checkpoints
2. :func:`prototypes` — K-Means prototypes of the final model's features (Eq. 3)
3. :func:`intensity` — prototype intensity (Eq. 4), :func:`containment`
4. :func:`confidence_clusters` — HDBSCAN on confidence changes (Eq. 5)
5. :func:`aggregate_clusters` — per-cluster ΔP and ΔI (Eq. 6-7)
6. :func:`ridge` — W_t (Eq. 8); :func:`dynamics` runs 4-6 over every step
7. :func:`explain` — structured explanations per class and per pair

:func:`run` runs all of them into a run directory; :class:`Run` reads one back.
The analysis stages (prototypes .. explain) are numpy / scikit-learn only; torch is used by
the modules that touch models (saliency, record, train, pipeline).
"""

from importlib.metadata import PackageNotFoundError, version

# Functions named like their modules are imported here, so ``i2x.saliency`` is the function
# (the module stays reachable as ``sys.modules["i2x.saliency"]`` / ``from i2x.saliency import ...``).
from .config import RunConfig
from .dynamics import Dynamics, aggregate_clusters, confidence_clusters, dynamics, ridge
from .errors import DivergedError, I2XError, RunDirError
from .explain import ExplainConfig, explain, pair_explanation
from .finetune import curated_indices, finetune
from .intensity import containment, intensity
from .pipeline import Run, analyze, analyze_checkpoints, load_model, run
from .presets import PRESETS
from .prototypes import Prototypes, prototypes
from .record import Recorder
from .saliency import features, saliency

try:
    __version__ = version("i2x")  # single source: pyproject.toml
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "RunConfig", "saliency", "features", "Recorder", "prototypes", "Prototypes", "intensity",
    "containment", "confidence_clusters", "aggregate_clusters", "ridge", "dynamics", "Dynamics",
    "explain", "ExplainConfig", "pair_explanation", "finetune", "curated_indices", "run", "Run", "load_model",
    "analyze", "analyze_checkpoints", "PRESETS",
    "I2XError", "RunDirError", "DivergedError", "__version__",
]
