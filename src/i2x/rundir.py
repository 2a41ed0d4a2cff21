"""The run directory: the stage table, the runner that skips complete stages, the manifest
builder, and :class:`Run`, the reader of a finished run. numpy / scikit-learn only, no torch.

Stages run in the order of :data:`STAGES`. Each is a function of a :class:`Context`; the ones
that need the model (training, predictions, features) call the hooks the torch side
(:mod:`i2x.nn.pipeline`) puts into the context, so ``i2x.run``, ``i2x.analyze`` and
``i2x.analyze_checkpoints`` all go through :func:`run_stages`. A stage is skipped when the
manifest lists it complete and its files read back (:func:`stage_done`).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from . import store
from .analysis.dynamics import Dynamics, dynamics
from .analysis.explain import confused_pairs, explain, pair_explanation
from .analysis.intensity import background_prototypes, containment, intensity, saliency_density
from .analysis.links import Links, run_links
from .analysis.prototypes import FeatureStream, Prototypes, pca_sample_images, prototypes
from .analysis.stability import selection_frequencies
from .config import RunConfig
from .errors import ConfigError, I2XError, RunDirError
from .manifest import Manifest, StageOutput


@dataclass
class Hooks:
    """What only the torch side can do: plain functions of no arguments, each returning what it made."""

    train: Callable[[], StageOutput]  # stage 1: train + record; the files written and the metrics of training
    # (y_true, y_pred, source) for the confusion matrix; source names the test set (None: the one the manifest names)
    predict_test: Callable[[], tuple[np.ndarray, np.ndarray, str | None]]
    features: Callable[[], np.ndarray]  # final model's (N, H', W', D) on E
    train_features: Callable[[], FeatureStream] | None = None  # the same on the training set, streamed (if any)
    # the saliency sanity check (i2x.nn.sanity.randomisation_check) on a few images of E, where a model is at hand
    randomisation: Callable[[], dict] | None = None


@dataclass
class Context:
    """Everything a stage reads: the run directory, its manifest, the settings, E's labels."""

    out: Path
    manifest: Manifest  # a plain dict is wrapped (the Manifest then owns it)
    cfg: RunConfig
    labels: np.ndarray  # (N,) true classes of the explanation set E
    classes: list[str]
    hooks: Hooks
    note: Callable[[str], None] = field(default=lambda text: None, repr=False)  # progress within a stage
    _records: dict | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.manifest, Manifest):
            self.manifest = Manifest(self.manifest)

    def records(self) -> dict[str, np.ndarray]:
        """All checkpoint records (loaded once); every checkpoint the manifest lists must be there."""
        if self._records is None:
            self._records = store.load_records(self.out, expected=self.manifest.checkpoints)
        return self._records

    def arrays(self, stage: str) -> dict[str, np.ndarray]:
        return store.load_npz(self.out / "arrays" / f"{stage}.npz")


def _record(ctx: Context) -> StageOutput:
    """Stage 1 (the torch side trains and records), and the checkpoints that are now on disk."""
    out = ctx.hooks.train()
    out.checkpoints = store.checkpoint_iterations(ctx.out)
    return out


def _evaluate(ctx: Context) -> StageOutput:
    """Confusion matrix (rows = true class), accuracy and the most confused pairs."""
    from sklearn.metrics import confusion_matrix

    y_true, y_pred, source = ctx.hooks.predict_test()
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(ctx.classes))).astype(np.int64)  # (C, C)
    store.save_npz(ctx.out / "arrays" / "evaluate.npz", y_true=y_true, y_pred=y_pred, confusion=cm)
    accuracy = float((y_pred == y_true).mean())
    loss = ctx.manifest.get("metrics", {}).get("final_train_loss")  # the record stage's, when i2x trained
    health = health_warnings(y_pred, accuracy, ctx.classes, y_true=y_true, final_loss=loss)
    sanity = ctx.hooks.randomisation() if ctx.hooks.randomisation is not None else None
    if sanity is not None and not sanity["passed"]:
        health.append(
            f"the saliency barely depends on the model's weights: with the layers above the target layer "
            f"re-initialised the maps keep a rank correlation of {sanity['rank_correlation']:.2f} (Adebayo et al. "
            "2018's sanity check): they may show the images' edges rather than the model's evidence; try another "
            "layer (layer=) or saliency method (method=)"
        )
    return StageOutput(
        ["arrays/evaluate.npz"],
        metrics={
            **({} if sanity is None else {"saliency_randomisation": sanity}),
            "health": health,
            "test_accuracy": accuracy,
            "confused_pairs": [{"a": a, "b": b, "count": n} for a, b, n in confused_pairs(cm, top=5)],
        },
        data={**({} if source is None else {"test_source": source}), "test_size": int(len(y_true))},
        warnings=health,
    )


def health_warnings(
    y_pred: np.ndarray,
    accuracy: float,
    classes: list[str],
    *,
    y_true: np.ndarray | None = None,
    final_loss: float | None = None,
) -> list[str]:
    """What is wrong with a final model whose explanation should not be trusted, each with its
    reason: accuracy near chance; (given ``y_true``) agreement with the labels not clearly beyond
    what always predicting the most common class gives (Cohen's κ < 0.2, "slight" agreement, or a
    one-sided binomial test against the majority-class rate at p ≥ 0.001); (given ``final_loss``)
    a training loss that ended near ln C, the loss of predicting the same probabilities for every
    image; one class predicted for most (> 90 %) images, or two classes for more than half of them."""
    out, C, n = [], len(classes), len(y_pred)
    if accuracy <= 1.5 / C:
        out.append(
            f"the final model is near chance ({100 * accuracy:.1f} % test accuracy, chance {100 / C:.1f} %): "
            "its explanation describes a model that did not learn; train longer, lower the lr, or check "
            "BatchNorm statistics"
        )
    elif y_true is not None and n and C > 1:
        out += _agreement_warnings(np.asarray(y_true), np.asarray(y_pred), accuracy, classes)
    if final_loss is not None and C > 1 and final_loss >= 0.9 * np.log(C):
        out.append(
            f"the training loss ended at {final_loss:.3f}, near ln {C} = {np.log(C):.3f} (the loss of predicting the "
            "same probabilities for every image): the model barely fitted its training labels"
        )
    top = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=C)
    order = np.argsort(-top, kind="stable")
    if n and top.max() > 0.9 * n and C > 1:
        out.append(
            f"the final model predicts {classes[int(top.argmax())]} for {100 * top.max() / n:.0f} % of the test images"
        )
    elif n and C > 3 and top[order[:2]].sum() > 0.5 * n:
        a, b = (classes[int(c)] for c in order[:2])
        out.append(f"the final model predicts {a} or {b} for {100 * top[order[:2]].sum() / n:.0f} % of the test images")
    return out


def _agreement_warnings(y_true: np.ndarray, y_pred: np.ndarray, accuracy: float, classes: list[str]) -> list[str]:
    """A warning when the predictions agree with the labels little beyond chance."""
    from scipy.stats import binomtest
    from sklearn.metrics import cohen_kappa_score

    majority = np.bincount(y_true, minlength=len(classes)).max() / len(y_true)
    p = binomtest(int(round(accuracy * len(y_true))), len(y_true), majority, alternative="greater").pvalue
    kappa = cohen_kappa_score(y_true, y_pred, labels=np.arange(len(classes)))
    if kappa >= 0.2 and p < 1e-3:
        return []
    return [
        f"the final model agrees with the test labels little beyond chance (Cohen's kappa {kappa:.2f}; "
        f"{100 * accuracy:.1f} % test accuracy against {100 * majority:.1f} % by always predicting the most "
        f"common class, binomial p = {p:.2g}): its explanation describes a model that did not learn"
    ]


def _prototypes(ctx: Context) -> StageOutput:
    """Stage 2 (Eq. 3): K-Means prototypes of the final model's features, fitted on E or on the
    whole training set (streamed, as in the paper), and E's assignment maps."""
    feats, c = ctx.hooks.features(), ctx.cfg
    fit = None
    if c.prototype_fit == "train":
        if ctx.hooks.train_features is None:
            raise ConfigError(
                "prototype_fit",
                "train",
                "this analysis has no training set: pass train= (your training data) or prototype_fit='explain'",
            )
        fit = ctx.hooks.train_features()
    protos = prototypes(
        feats, c.prototypes, c.pca_variance, c.pca_max_components, random_state=c.seed, fit_features=fit
    )
    store.save_npz(ctx.out / "arrays" / "prototypes.npz", **protos.to_arrays())
    cells = int(np.prod(feats.shape[1:3]))
    vectors = (fit.n if fit is not None else len(feats)) * cells
    pca = vectors if fit is None else pca_sample_images(fit.n, cells) * cells
    return StageOutput(
        ["arrays/prototypes.npz"],
        model={
            "feature_shape": list(feats.shape[1:]),
            "prototype_fit": {"on": c.prototype_fit, "vectors": vectors, "pca_vectors": pca},
        },
    )


def _intensity(ctx: Context) -> StageOutput:
    """Stage 3 (Eq. 4): prototype intensity at every checkpoint; which prototypes each sample
    contains (where they carry its final saliency); which prototypes are background."""
    c, protos = ctx.cfg, Prototypes.from_arrays(ctx.arrays("prototypes"))
    sal = ctx.records()["saliency"]  # (T+1, N, H', W')
    inten = intensity(sal, protos.assignments, protos.k, c.intensity_reduce)  # (T+1, N, K)
    cont = containment(protos.assignments, protos.k, sal[-1], c.contain_quantile)  # (N, K)
    density = saliency_density(protos.assignments, sal[-1], protos.k)  # (K,)
    bg = background_prototypes(density, c.background_saliency)
    store.save_npz(
        ctx.out / "arrays" / "intensity.npz",
        intensity=inten.astype(np.float32),
        contain=cont,
        present=containment(protos.assignments, protos.k, quantile=0),  # (N, K) any cell: not the label's
        density=density,
        background=bg,
    )
    flat, reasons = saliency_health(sal[-1])
    return StageOutput(["arrays/intensity.npz"], metrics={"saliency_flat": flat, "saliency_health": reasons},
                       warnings=reasons)  # fmt: skip


FLAT_SPREAD = 1e-7  # a map whose max - min is below this (class-score units) says nothing about where


def saliency_health(final_maps: np.ndarray, limit: float = 0.1) -> tuple[float, list[str]]:
    """The share of the final model's maps that are flat (max - min < :data:`FLAT_SPREAD`: ~0
    everywhere, as at an attention internal or a layer whose positions barely reach the scores),
    and the reason to flag the run when more than ``limit`` of them are."""
    m = np.asarray(final_maps, dtype=np.float64).reshape(len(final_maps), -1)
    flat = float((np.ptp(m, axis=1) < FLAT_SPREAD).mean()) if m.size else 0.0
    if flat <= limit:
        return round(flat, 4), []
    return round(flat, 4), [
        f"saliency is flat (max - min < {FLAT_SPREAD:g}) in {flat:.0%} of the final model's maps: the target "
        "layer's positions barely reach the class scores, so the prototype intensities are noise; name another "
        "layer (layer=) or saliency method"
    ]


def _dynamics(ctx: Context) -> StageOutput:
    """Stages 4-6 (Eq. 5-8): HDBSCAN on confidence changes, aggregation, ridge per step, and the
    permutation p-values of W and of the pair contributions."""
    c = ctx.cfg
    dyn = dynamics(
        ctx.records()["confidences"], ctx.arrays("intensity")["intensity"], ctx.labels, seed=c.seed,
        **_dynamics_settings(c),
    )  # fmt: skip
    store.save_npz(ctx.out / "arrays" / "dynamics.npz", **dyn.to_arrays())
    T, alpha = len(dyn.W), c.explain.alpha
    floor = [] if not c.permutations or T / (c.permutations + 1) < alpha else [
        f"with {c.permutations} permutations the smallest p-value is 1/{c.permutations + 1}, which times the "
        f"{T} steps (Bonferroni) is not below alpha {alpha}: no step can be significant, so no role is listed; "
        f"give permutations ≥ {int(np.ceil(T / alpha))}"
    ]  # fmt: skip
    coverage = {"explained_coverage": round(dyn.coverage(), 4)}
    return StageOutput(["arrays/dynamics.npz"], metrics=coverage, warnings=floor)


def _stability(ctx: Context) -> StageOutput:
    """Selection frequencies (issue 24): stages 4-7 redone on half-subsamples of E."""
    c, ia = ctx.cfg, ctx.arrays("intensity")
    if not c.stability_resamples:
        store.save_npz(ctx.out / "arrays" / "stability.npz", resamples=np.int64(0))
        return StageOutput(["arrays/stability.npz"])
    freq = selection_frequencies(
        ctx.records()["confidences"],
        ia["intensity"],
        ia["contain"],
        ctx.labels,
        len(ctx.classes),
        _dynamics_settings(c),
        c.explain,
        present=ia.get("present"),
        resamples=c.stability_resamples,
        seed=c.seed,
        background=ia.get("background"),
        n_jobs=-1,
        progress=partial(_counting, note=ctx.note, what="stability: random half"),
    )
    store.save_npz(ctx.out / "arrays" / "stability.npz", **freq)
    return StageOutput(["arrays/stability.npz"])


def _counting(items, total: int, note: Callable[[str], None], what: str):
    """``items`` (``total`` of them), saying ``what i/total`` as each arrives."""
    for i, x in enumerate(items):
        yield x
        note(f"{what} {i + 1}/{total}")


def _dynamics_settings(c: RunConfig) -> dict:
    """The keywords of :func:`i2x.analysis.dynamics.dynamics` a run's settings give (permutations, null ...), from
    the function's own argument-to-setting map (``dynamics.settings``, :func:`i2x.config.uses_settings`); the
    seed is passed on its own (the stability stage seeds each half)."""
    return {arg: getattr(c, name) for arg, name in dynamics.settings.items() if arg != "seed"}


def _explain(ctx: Context) -> StageOutput:
    """Stage 7 (§2.6): structured explanations per class and per confused pair."""
    dyn, ia = Dynamics.from_arrays(ctx.arrays("dynamics")), ctx.arrays("intensity")
    cm = ctx.arrays("evaluate")["confusion"]
    st = ctx.arrays("stability")
    links = None
    if ctx.cfg.explain.pair_test == "samples" and ctx.cfg.permutations:
        c = ctx.cfg
        ctx.note("explain: the pair roles' permutation test")
        links = run_links(
            ctx.records()["confidences"], ia["intensity"], ia["contain"], ctx.labels, c.explain, lam=c.ridge_lambda,
            permutations=c.permutations, seed=c.seed, background=ia.get("background"),
        )  # fmt: skip
    store.save_npz(ctx.out / "arrays" / "links.npz", **(links.to_arrays() if links else {"permutations": np.int64(0)}))
    ex = explain(
        dyn.W,
        ia["contain"],
        ctx.labels,
        dyn.class_delta,
        confusion=cm,
        flagged=dyn.flagged,
        classes=ctx.classes,
        cfg=ctx.cfg.explain,
        p_W=dyn.p_W,
        p_pair=dyn.p_pair,
        background=ia.get("background"),
        permutations=dyn.permutations,
        null=dyn.null,
        p_pair_class=dyn.p_pair_class,
        stability=st if int(st["resamples"]) else None,
        present=ia.get("present"),
        links=links,
    )
    ex["checkpoints"] = ctx.manifest.checkpoints
    metrics = ctx.manifest.get("metrics", {})
    health = metrics.get("health", []) + metrics.get("saliency_health", [])
    ex["model_health"] = {
        "passed": not health,
        "reasons": health,
        "note": "the final model failed a health check: every list here describes a model that did not learn "
        "its labels, or saliency that carries no evidence, whatever its p-values"
        if health
        else "no health check failed",
    }
    store.save_json(ctx.out / "explanations.json", ex)
    return StageOutput(["explanations.json", "arrays/links.npz"])


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], StageOutput]  # does the work, returns what it wrote and what the manifest gains
    files: tuple[str, ...]  # what it writes (the record stage of analyze() writes none)
    settings: tuple[str, ...] = ()  # the RunConfig fields it reads: changing one redoes it and what follows


# The stages of a run, in order: the one list that `run`, `analyze` and `Run.check_complete` use.
STAGES: tuple[Stage, ...] = (
    Stage("record", _record, ("weights/final.pt",)),
    Stage("evaluate", _evaluate, ("arrays/evaluate.npz",)),
    Stage(
        "prototypes",
        _prototypes,
        ("arrays/prototypes.npz",),
        ("prototypes", "prototype_fit", "pca_variance", "pca_max_components", "seed", "layer", "reshape"),
    ),
    Stage(
        "intensity",
        _intensity,
        ("arrays/intensity.npz",),
        ("intensity_reduce", "contain_quantile", "background_saliency"),
    ),
    Stage(
        "dynamics",
        _dynamics,
        ("arrays/dynamics.npz",),
        (
            "aggregate",
            "min_cluster_size",
            "tau",
            "ridge_lambda",
            "ridge_scale",
            "cluster_fallback",
            "permutations",
            "permutation_null",
            "seed",
        ),
    ),
    Stage("stability", _stability, ("arrays/stability.npz",), ("stability_resamples", "explain")),
    Stage(
        "explain",
        _explain,
        ("explanations.json", "arrays/links.npz"),
        ("explain", "permutations", "ridge_lambda", "seed"),
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def _settings(stage: Stage, cfg: RunConfig) -> dict:
    d = cfg.to_dict()
    return {k: d[k] for k in stage.settings}


def stage_done(run_dir: str | Path, manifest: Manifest | dict, name: str, cfg: RunConfig | None = None) -> bool:
    """A stage is done when the manifest lists it complete, every file it wrote reads back and
    (given ``cfg``) it was made with the settings it reads; else it is redone."""
    m = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    s = m.get("stages", {}).get(name)
    if not (s and s.get("complete") and all(store.readable(Path(run_dir) / f) for f in s.get("files", []))):
        return False
    stage = next(st for st in STAGES if st.name == name)
    return cfg is None or "settings" not in s or s["settings"] == _settings(stage, cfg)


def run_stages(ctx: Context, progress: bool = False, given: dict[str, StageOutput] | None = None) -> None:
    """Run every stage of :data:`STAGES` that is not done — and, once one ran, every later one —
    timing each; the manifest records each stage's output and is rewritten after each stage.
    ``given``: the outputs of stages the caller already ran (under torchrun every rank trains
    and records; rank 0 then records that output here instead of running the stage again)."""
    from .progress import bar as progress_bar

    given = given or {}
    bar = progress_bar(STAGES, desc="i2x", disable=not progress, leave=False)
    ctx.note = bar.set_postfix_str  # a long stage says how far it is on the one bar
    redo = False
    for stage in bar:
        if redo or not stage_done(ctx.out, ctx.manifest, stage.name, ctx.cfg):
            bar.set_postfix(stage=stage.name)
            t0 = time.perf_counter()
            out = given[stage.name] if stage.name in given else stage.run(ctx)
            ctx.manifest.record(stage.name, out, time.perf_counter() - t0, _settings(stage, ctx.cfg))
            ctx.manifest.write(ctx.out)
            redo = True  # a stage redone: every later one read its output
    bar.close()
    ctx.manifest.write(ctx.out)


def listed_checkpoints(run_dir: str | Path, old: dict | None) -> dict:
    """The ``checkpoints`` a manifest lists before its stages run, as a field for :func:`new_manifest`:
    the records on disk when they come from the caller's own loop (the record stage wrote no
    file), when the record stage is not complete, or when the manifest lists none (an older run);
    else the run's own list (``{}``: kept), so that a lost record file is noticed, not skipped."""
    record = (old or {}).get("stages", {}).get("record") or {}
    if old and record.get("complete") and record.get("files") and "checkpoints" in old:
        return {}
    return {"checkpoints": store.checkpoint_iterations(run_dir)}


def run_seeds(cfg: RunConfig) -> dict:
    """The manifest's ``seeds`` entry: every seed a run's results depend on."""
    return {
        "seed": cfg.seed,
        "data_seed": cfg.order_seed,
        "explain_seed": cfg.explain_seed,
        "split_seed": cfg.subset_seed,
    }


def new_manifest(cfg: RunConfig, data: dict, model: dict, old: dict | None = None, **fields) -> Manifest:
    """The manifest of a run: a resumed run's own one (stages, timings, metrics kept) or a new one,
    with the settings, data and model descriptions of this call (:meth:`Manifest.new`)."""
    return Manifest.new(cfg.to_dict(), run_seeds(cfg), data, model, old, **fields)


LOCK = ".i2x.lock"
# what i2x writes into a run directory: a folder holding only these (and no manifest) is a failed start
OURS = {"record", "weights", "arrays", "report", "finetune", "explanations.json", "faithfulness.json", LOCK}
_HELD: dict[Path, list] = {}  # run directory -> [lock fd, depth] held by this process


@contextmanager
def run_lock(run_dir: str | Path):
    """Own ``run_dir`` for the block: an OS lock (``flock`` on ``DIR/.i2x.lock``) that a second
    process cannot take (it gets a RunDirError naming the holder's pid); the OS drops it when the
    holder dies, so a stale lock never blocks. Re-entrant within a process."""
    d = Path(run_dir).resolve()
    if d in _HELD:
        _HELD[d][1] += 1
        try:
            yield
        finally:
            _HELD[d][1] -= 1
        return
    d.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only run directory: nobody can write into it, so nothing to guard
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise _in_use(d, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[d] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[d]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _in_use(d: Path, holder: str) -> RunDirError:
    """The one wording of a run directory another process holds (:func:`run_lock`, :func:`check_out_dir`)."""
    return RunDirError(
        f"{d} is in use by another i2x process (pid {holder}): wait for it to end, or stop it, then retry"
    )


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse, before any data is loaded or anything written, an ``out`` that cannot hold this run: a
    file; for ``resume`` a folder that is no i2x run (a user's own folder is never written into); a
    folder that cannot be written (no permission, a read-only file system); a run another i2x process
    holds."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise I2XError(f"out={out} is a file, not a folder: give a folder for the run (--out DIR)")
    if resume and not (out / store.MANIFEST).exists():
        if not out.exists():
            raise I2XError(
                f"--resume {out}: no such run directory (no manifest.json); start it with `i2x run --out {out}`"
            )
        if {p.name for p in out.iterdir()} - OURS:  # not a start of i2x's that failed before its manifest
            raise I2XError(
                f"--resume {out}: this folder is not an i2x run (no manifest.json), so nothing was written to it; "
                "start a run in a new folder with `i2x run --out NEW_DIR`"
            )
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise I2XError(
            f"out={out}: {ancestor} cannot be written (no permission or a read-only file system); choose another "
            "folder (--out DIR)"
        )
    if (out / LOCK).exists() and Path(out).resolve() not in _HELD:
        with open(out / LOCK, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise _in_use(out.resolve(), f.read(200).strip() or "unknown") from None
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_dir(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """Make ``out`` ready for a run; returns the manifest of the run to resume (None = new). A
    folder left by a start that failed before any work was saved (only i2x's files, no complete
    stage, no checkpoint record, no training state) does not block a retry: it is cleared."""
    import shutil

    content = [p for p in out.iterdir() if p.name != LOCK] if out.exists() else []
    progress = (out / "weights" / "train_state.pt").exists() or any((out / "record").glob("*ckpt_it*"))
    failed_start = {p.name for p in content} <= OURS | {store.MANIFEST} and not (progress or _any_complete(out))
    if content and (overwrite or (failed_start and not resume)):
        for p in content:  # everything but the lock this process holds
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif content and resume:
        for tmp in out.rglob(".*.tmp"):  # half-written files of the crashed run: never data
            tmp.unlink()
        return store.read_manifest(out) if (out / store.MANIFEST).exists() else None
    elif content:
        raise I2XError(
            f"{out} already holds a run: resume it (i2x run --resume, run(resume=True)) "
            "or replace it (--overwrite, run(overwrite=True))"
        )
    elif resume and not (out / store.MANIFEST).exists():
        raise I2XError(f"--resume {out}: no such run directory (no manifest.json); start it with `i2x run --out {out}`")
    out.mkdir(parents=True, exist_ok=True)
    return None


def _any_complete(out: Path) -> bool:
    """Whether ``out`` holds a manifest that lists at least one complete stage."""
    try:
        m = store.read_manifest(out)
    except RunDirError:
        return (out / store.MANIFEST).exists()  # unreadable or another version: not ours to clear
    return any(st.get("complete") for st in m.get("stages", {}).values())


class Run:
    """A run directory: its manifest and loaders of every stage's arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = store.read_manifest(self.path)

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.manifest["config"])

    def _summary(self) -> list[tuple[str, str]]:
        """(what, value) rows of what a person first wants to know about the run."""
        m, met = self.manifest, self.manifest.get("metrics", {})
        data, model = m.get("data", {}), m.get("model", {})
        acc = met.get("test_accuracy")
        rows = [
            ("data", f"{data.get('dataset')}: {data.get('train_size')} train, E = {data.get('explain_size')}"),
            ("model", f"{model.get('name')} (target layer {model.get('layer')})"),
            ("test accuracy", "-" if acc is None else f"{100 * acc:.2f} %"),
            ("checkpoints", str(len(m.get("checkpoints", [])))),
            ("stages missing", ", ".join(self.missing_stages()) or "none"),
        ]
        pairs = [f"{self.classes[p['a']]}↔{self.classes[p['b']]} ({p['count']})" for p in met.get("confused_pairs", [])]
        rows += [("most confused", ", ".join(pairs[:3]))] if pairs else []
        rows += self._pair_rows() if not self.missing_stages() else []
        rows += [("warning", w) for w in m.get("warnings", [])]
        return rows

    @cached_property
    def places(self) -> list[str]:
        """Where each prototype sits in the images, in words (:func:`i2x.words.places`), read once per Run."""
        from .words import places

        return places(self.arrays("prototypes")["assignments"], int(self.config.prototypes))

    def _pair_rows(self) -> list[tuple[str, str]]:
        """The reported pairs' first uncertain (else reliable) prototype, in the words of ``i2x explain``."""
        from .words import pair_item

        place, rows = self.places, []
        for p in self.explanations().get("pairs", []):
            kind = "uncertain" if p.get("uncertain") else "reliable" if p.get("reliable") else None
            if kind and "effect" in p[kind][0]:
                a, b = p["a"], p["b"]
                item = pair_item(p[kind][0], self.classes, a, b, place[p[kind][0]["prototype"]])
                rows.append((f"{self.classes[a]}↔{self.classes[b]}", f"{kind}: {item}"))
        return rows

    def __repr__(self) -> str:
        acc = self.manifest.get("metrics", {}).get("test_accuracy")
        what = f"{self.manifest.get('model', {}).get('name')}, " + ("" if acc is None else f"{100 * acc:.2f} %, ")
        return f"i2x.Run({str(self.path)!r}: {what}{len(self.manifest.get('checkpoints', []))} checkpoints)"

    def _repr_html_(self) -> str:
        """A notebook's view of the run: its summary as a table, and where the report is."""
        from html import escape

        rows = "".join(
            f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in self._summary()
        )
        rep = self.path / "report" / "index.html"
        link = f"<p>report: <code>{escape(str(rep))}</code></p>" if rep.exists() else ""
        return f"<div><b>i2x run</b> <code>{escape(str(self.path))}</code><table>{rows}</table>{link}</div>"

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.manifest["data"]["classes"]]

    def missing_stages(self) -> list[str]:
        return [s for s in STAGE_NAMES if not self.manifest.get("stages", {}).get(s, {}).get("complete")]

    def check_complete(self, command: str = "") -> Run:
        """Raise RunDirError naming the missing stages and the command that finishes them."""
        missing = self.missing_stages()
        if missing:
            before = f" before `i2x {command}`" if command else ""
            raise RunDirError(
                f"{self.path} is incomplete (missing stages: {', '.join(missing)}): "
                f"finish it with `i2x run --resume {self.path}`{before}"
            )
        return self

    def class_index(self, c, arg: str = "class") -> int:
        """Index of class ``c`` (a name or an index); ``arg`` names the argument in the error."""
        names, c = self.classes, str(c)
        if c in names:
            return names.index(c)
        if c.isdigit() and int(c) < len(names):
            return int(c)
        raise ConfigError(arg, c, f"is not a class of this run; classes: {', '.join(names)}")

    def arrays(self, stage: str) -> dict[str, np.ndarray]:
        return store.load_npz(self.path / "arrays" / f"{stage}.npz")

    def records(self, saliency: str = "all") -> dict[str, np.ndarray]:
        return store.load_records(self.path, saliency, expected=self.manifest.get("checkpoints"))

    def explain_set(self) -> dict[str, np.ndarray]:
        """E's ``indices``, ``labels`` and ``images`` (float32, normalised as the model saw them)."""
        return store.load_explain_set(self.path)

    def prototypes(self) -> Prototypes:
        return Prototypes.from_arrays(self.arrays("prototypes"))

    def dynamics(self) -> Dynamics:
        return Dynamics.from_arrays(self.arrays("dynamics"))

    def explanations(self) -> dict:
        return store.load_json(self.path / "explanations.json")

    def pair_explanation(self, a: int, b: int, explain=None) -> dict:
        """The uncertain and reliable prototypes of any pair (a, b), by the run's own rule and
        p-values (explanations.json holds the confused pairs only); ``explain``: other explanation
        rules (an :class:`~i2x.config.ExplainConfig`, e.g. another stability threshold) on the same evidence."""
        dyn, ia, labels = self._evidence
        return pair_explanation(
            dyn.W,
            ia["contain"],
            labels,
            a,
            b,
            self.config.explain if explain is None else explain,
            p_pair=dyn.p_pair,
            background=ia.get("background"),
            p_pair_class=dyn.p_pair_class,
            frequency=self._frequency(a, b),
            links=self._links_for(self.config.explain if explain is None else explain),
        )

    def _links_for(self, rules) -> Links | None:
        """The run's samples test (None under the paper's test ``rules``: computed with the run's own rules,
        another minimum effect or error level needs `i2x analyze`)."""
        return None if rules.pair_test != "samples" else self._links

    def _frequency(self, a: int, b: int) -> np.ndarray | None:
        """(K, 2) selection frequencies of the pair's roles, when the run measured them."""
        st = self._stability
        return st["roles"][min(a, b), max(a, b)] if int(st.get("resamples", 0)) else None

    def links(self) -> Links | None:
        """The samples test behind the pair roles (None for a run of the paper's test or before it)."""
        f = self.path / "arrays" / "links.npz"
        a = store.load_npz(f) if f.exists() else {}
        return Links.from_arrays(a) if int(a.get("permutations", 0)) else None

    @cached_property
    def _links(self) -> Links | None:
        return self.links()

    @cached_property
    def _stability(self) -> dict:
        """The stability arrays, read once per Run (not once per pair)."""
        return self.arrays("stability") if (self.path / "arrays" / "stability.npz").exists() else {}

    @cached_property
    def _evidence(self) -> tuple[Dynamics, dict, np.ndarray]:
        return self.dynamics(), self.arrays("intensity"), self.explain_set()["labels"]
