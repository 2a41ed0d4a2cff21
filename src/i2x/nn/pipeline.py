"""``i2x.run``, ``i2x.analyze`` and ``i2x.analyze_checkpoints``: the torch side of the pipeline.

Each builds a :class:`~i2x.rundir.Context` whose hooks train, predict and extract features with
the model, then hands it to :func:`~i2x.rundir.run_stages`, which runs the stage table
(:data:`~i2x.rundir.STAGES`) and skips every stage already complete, so a crashed run resumes
from its last complete checkpoint or stage.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import store
from ..config import RunConfig, resolve, takes_settings
from ..data import Dataset, Splits, as_dataset, explanation_indices, splits_for, stratified_split
from ..errors import ConfigError, I2XError
from ..manifest import StageOutput
from ..rundir import (
    Context,
    Hooks,
    Run,
    check_out_dir,
    listed_checkpoints,
    new_manifest,
    prepare_dir,
    run_lock,
    run_stages,
    stage_done,
)
from .distributed import World, setup
from .layers import class_scores, resolve_layer
from .models import built_in_model
from .record import Recorder
from .saliency import feature_stream, features, method_name
from .sanity import randomisation_check
from .train import divergence_warning, iterations_per_epoch, load_state, predict, save_state
from .train import train as train_model
from .utils import callers_globals, callers_model, eval_mode, resolve_device


@takes_settings
def run(
    config: RunConfig | None = None,
    out: str | Path = "runs/i2x",
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    splits: Splits | None = None,
    model=None,
    train=None,
    test=None,
    preset: str | None = None,
    report: bool = True,
    classes: list[str] | None = None,
    train_eval=None,
    **overrides,
) -> Run | None:
    """Train with recording and run every analysis stage; returns the :class:`Run` (under
    ``torchrun``: on rank 0; the other ranks train and record their shard, then return None).
    Writes the HTML report (``DIR/report/index.html``) unless ``report=False``, as ``i2x run`` does.

    Settings: ``config`` (a :class:`RunConfig`) or ``preset`` (a name in :data:`i2x.PRESETS`),
    changed by keyword (``run(epochs=2, rho=0.9, out=...)``); on ``resume`` the run's own settings
    are kept and a changed one is refused. Your own data: ``splits`` (train/test
    :class:`i2x.data.Dataset`) or ``train=``/``test=`` (torch Datasets or ``(images, labels)``;
    without ``test`` a stratified 20 % of ``train`` is held out; ``classes=`` names their classes;
    ``train_eval=``: the same training images with the evaluation transform, when ``train`` augments:
    the model trains on ``train``, the explanation set and the prototypes are read through ``train_eval``).
    Your own ``model``: an ``nn.Module`` (a ViT's or Swin's target layer is found too, or name it
    with ``layer=``); ``method=`` may be a callable saliency source.
    """
    if isinstance(model, str):  # run(model="resnet50") names a built-in model
        overrides, model = {**overrides, "model": model}, None
    elif model is not None:  # the caller's own model: no built-in name in the saved settings
        overrides = {**overrides, "model": ""}
    overrides, source = _saliency_source(overrides)
    out = Path(out)
    check_out_dir(out, resume)  # a user's folder, a file, no permission, a held run: refused before any work
    resumed = store.read_manifest(out) if resume and (out / store.MANIFEST).exists() else None
    cfg = _run_config(config, preset, overrides, resumed, out)  # bad settings fail before anything is written
    world = setup(resolve_device(cfg.device))  # under torchrun: this process's rank (rank 0 owns the directory)
    kept = callers_model(model) if isinstance(model, torch.nn.Module) else nullcontext()  # trained; mode, .grad kept
    with run_lock(out) if world.main else nullcontext(), callers_globals(), kept:  # RNG, grad mode, warnings kept
        old = prepare_dir(out, resume, overwrite) if world.main else None
        data = _splits(cfg, splits, train, test, classes, train_eval) if world.main else None  # rank 0 first
        world.barrier()  # the directory and the data are ready
        if not world.main:
            old = store.read_manifest(out) if resume and (out / store.MANIFEST).exists() else None
            data = _splits(cfg, splits, train, test, classes, train_eval)
        r = _run(cfg, out, old, progress and world.main, data, model, world, source)
        if report and world.main:
            from ..report import report as write_report

            write_report(out)
        return r


def _run(
    cfg: RunConfig, out: Path, old: dict | None, progress: bool, splits: Splits, model, world: World, source=None
) -> Run | None:
    """Stages 1-7 of :func:`run` in the locked, prepared ``out`` (under torchrun, every rank trains
    and records its shard; rank 0 runs stages 2-7 and returns the Run, the others None)."""
    device = world.device(resolve_device(cfg.device))
    torch.set_grad_enabled(True)
    tr = splits.train
    eidx = explanation_indices(tr.labels, cfg.explain_fraction, cfg.explain_seed)
    warnings = _data_warnings(tr, eidx, cfg) + _augment_warning(splits)
    model = model if model is not None else _built_in_model(cfg, tr)
    _refuse_meta(model)
    model.to(device)
    x_train, y_train = tr.tensors()
    x_view = x_train if splits.train_view is None else splits.train_view.tensors()[0]  # explained as evaluated
    x_exp, y_exp = x_view[eidx], y_train[eidx]
    target = _check_model(model, cfg, x_exp, len(tr.classes), device, tr.labels)
    layer = target.name
    every, total = _schedule(cfg, len(tr))
    manifest = new_manifest(
        cfg,
        _data_info(splits, cfg, eidx),
        _model_info(model, cfg.model, target),
        old,
        warnings=warnings,
        distributed=world.info(),
        schedule={"every": every, "iterations": total},
        **listed_checkpoints(out, old),
    )
    if world.main:
        manifest.write(out)
        store.save_explain_set(out, x_exp.numpy(), y_exp.numpy(), eidx)  # E travels with the run
    (out / "weights").mkdir(exist_ok=True)
    if stage_done(out, manifest, "record"):
        model.load_state_dict(load_state(out / "weights" / "final.pt", device)["model"])
    rows = world.shard(len(eidx))  # this rank's slice of E (all of it in one process)
    rec = Recorder(
        x_exp[rows],
        y_exp.numpy()[rows],
        every,
        out,
        layer,
        source or cfg.method,
        cfg.target,
        cfg.record_batch_size,
        device,
        sample_index=eidx[rows],
        world=world,
        reshape=cfg.reshape,
    )
    hooks = Hooks(
        train=partial(_train, model=model, x=x_train, y=y_train, cfg=cfg, recorder=rec, out=out, device=device,
                      progress=progress, world=world),
        predict_test=partial(_predict, model=model, test=splits.test, device=device),
        features=partial(features, model, x_exp, layer, cfg.record_batch_size, device, cfg.reshape),
        train_features=partial(feature_stream, model, x_view, layer, cfg.record_batch_size, device, cfg.reshape),
        randomisation=partial(randomisation_check, model, x_exp[:SANITY_IMAGES], y_exp[:SANITY_IMAGES], layer,
                              source or cfg.method, device, cfg.reshape),
    )  # fmt: skip
    given = _train_on_every_rank(hooks, out, manifest, world) if world.size > 1 else {}
    if not world.main:
        return None
    run_stages(Context(out, manifest, cfg, y_exp.numpy(), list(tr.classes), hooks), progress, given)
    (out / "weights" / "train_state.pt").unlink(missing_ok=True)  # complete: final.pt is all a resume needs
    return Run(out)


def _train_on_every_rank(hooks: Hooks, out: Path, manifest, world: World) -> dict[str, StageOutput]:
    """Stage 1 under torchrun, on every rank at once (unless a resumed run has it); returns its
    output for rank 0's stage runner to record. The process group ends here: what follows reads
    the merged records on rank 0 alone."""
    given = {}
    if not stage_done(out, manifest, "record"):
        t0 = time.perf_counter()
        given["record"] = hooks.train()
        given["record"].timings["record_distributed"] = round(time.perf_counter() - t0, 3)
        given["record"].checkpoints = store.checkpoint_iterations(out) if world.main else None
    world.barrier()  # every shard of every checkpoint is on disk
    world.close()
    return given


def _saliency_source(overrides: dict) -> tuple[dict, object]:
    """A callable ``method=`` (the caller's saliency source): the settings keep its name
    (``callable:module.name``, recorded in the manifest), the recorder gets the callable."""
    fn = overrides.get("method")
    if not callable(fn):
        return overrides, None
    return {**overrides, "method": method_name(fn)}, fn


def _built_in_model(cfg: RunConfig, tr: Dataset):
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed reproduces
    return built_in_model(cfg.model, tr)


def _model_info(model, name: str | None, target) -> dict:
    """The manifest's model entry: name, target layer, how its output lies on the image (layout, grid), size."""
    n = int(sum(p.numel() for p in model.parameters()))
    return {"name": name or type(model).__name__, "layer": target.name, "target": target.grid.info(), "parameters": n}


def _run_config(config, preset, overrides: dict, old: dict | None, out: Path) -> RunConfig:
    """The run's settings (the precedence rule is :func:`i2x.config.resolve`); a resumed run
    must keep the settings it was started with."""
    if config is not None and preset is not None:
        raise I2XError("give either config= or preset= (with keyword overrides), not both")
    base = (old or {}).get("config")
    cfg = resolve(overrides, preset, base, config=config)
    if base is not None and RunConfig.from_dict(base) != cfg:
        before = RunConfig.from_dict(base).to_dict()
        diff = {k: (v, cfg.to_dict()[k]) for k, v in before.items() if cfg.to_dict()[k] != v}
        raise I2XError(f"--resume {out}: the run was started with other settings {diff}; resume without changing them")
    return cfg


def _splits(cfg: RunConfig, splits: Splits | None, train, test, classes=None, train_eval=None) -> Splits:
    """The caller's splits, or its train=/test= data (class names from ``classes``, else the data's
    own; ``train_eval``: the same training images with the evaluation transform), or the configured dataset."""
    if splits is not None:
        return splits
    if train is None:
        if classes is not None or train_eval is not None:
            raise I2XError("classes= and train_eval= go with train= data; the built-in datasets have their own")
        return splits_for(cfg)
    tr = as_dataset(train, classes=classes, name="train=")
    view = None if train_eval is None else _eval_view(tr, train_eval)
    if test is None:
        rest, held = stratified_split(tr.labels, 0.2, cfg.subset_seed)
        source = "stratified 20% hold-out of train= (no test= given)"
        if view is None:
            return Splits(tr.subset(rest), tr.subset(held), source)
        return Splits(tr.subset(rest), view.subset(held), source + ", read through train_eval=", view.subset(rest))
    te = as_dataset(test, classes=tr.classes, name="test=")
    if te.shape != tr.shape:
        raise I2XError(f"test= images are {te.shape} but train= images are {tr.shape}: give both one shape")
    te.mean, te.std = tr.mean, tr.std  # normalise the test set with the training statistics
    return Splits(tr, te, "test= given by the caller", view)


def _augment_warning(splits: Splits) -> list[str]:
    """A torch Dataset that gives another image at each read (a random transform) without ``train_eval=``:
    the explanation set would be one random draw of it, so say how to give the evaluation view."""
    tr = splits.train
    if not tr.lazy or splits.train_view is not None or not len(tr):
        return []
    row = int(tr.images.rows[0])
    if np.array_equal(tr.images.raw(row), tr.images.raw(row)):
        return []
    return [
        "train= gives another image at each read (a random transform): the explanation set and the prototypes "
        "see one random draw of it; pass train_eval= (the same dataset with the evaluation transform)"
    ]


def _eval_view(tr: Dataset, train_eval) -> Dataset:
    """``train_eval=``: the training images in train='s order, read with the evaluation transform (torchvision's
    convention: one dataset per transform); normalised with train='s statistics."""
    view = as_dataset(train_eval, classes=tr.classes, name="train_eval=")
    if len(view) != len(tr) or not np.array_equal(view.labels, tr.labels) or view.shape != tr.shape:
        raise I2XError(
            f"train_eval= must hold train='s images in the same order with the evaluation transform: it has "
            f"{len(view)} images of shape {view.shape}, train= {len(tr)} of {tr.shape}"
            + ("" if len(view) != len(tr) else " (labels differ)" if view.shape == tr.shape else "")
        )
    view.mean, view.std = tr.mean, tr.std
    return view


def _data_warnings(tr: Dataset, eidx: np.ndarray, cfg: RunConfig) -> list[str]:
    """Data too small or odd for the method: a class without training images is an error; a class
    missing from the explanation set, or an explanation set smaller than an HDBSCAN cluster, a warning."""
    counts = np.bincount(tr.labels, minlength=len(tr.classes))
    if (counts > 0).sum() < 2:
        raise I2XError(
            f"the training data has one class ({tr.classes[int(np.argmax(counts))]}): an explanation says how a "
            "model tells classes apart; give images of two classes or more"
        )
    if (counts == 0).any():
        empty = [tr.classes[c] for c in np.flatnonzero(counts == 0)]
        low = int(tr.labels.min())
        fix = (
            f"the labels start at {low}: class indices start at 0, pass labels - {low}"
            if low > 0 and counts[:low].sum() == 0
            else "add images of it or drop it from the data (for image folders: remove its folder)"
        )
        what = f"class {', '.join(empty)} has no training image (of {len(tr)}): the model cannot learn it"
        raise I2XError(f"{what}; {fix}")
    out = []
    missing = sorted(set(range(len(tr.classes))) - set(tr.labels[eidx].tolist()))
    if missing:
        out.append(
            f"classes {', '.join(tr.classes[c] for c in missing)} have no sample in the explanation set "
            f"({len(eidx)} images): they get no class explanation; raise explain_fraction"
        )
    if cfg.aggregate == "clusters" and len(eidx) < cfg.min_cluster_size:
        out.append(
            f"the explanation set ({len(eidx)} images) is smaller than min_cluster_size "
            f"{cfg.min_cluster_size}: every step falls back to smaller clusters"
        )
    return out


def _data_info(splits: Splits, cfg: RunConfig, eidx: np.ndarray) -> dict:
    tr, te = splits.train, splits.test
    return {
        "dataset": tr.name or cfg.dataset,
        "train_size": len(tr),
        "test_size": len(te),
        "test_source": splits.test_source,
        "explain_size": int(len(eidx)),
        "explain_view": "train_eval= (the evaluation transform)" if splits.train_view is not None else "train=",
        "classes": list(tr.classes),
        "image_shape": list(tr.shape),
        "mean": list(tr.mean),
        "std": list(tr.std),
    }


def _schedule(cfg: RunConfig, n_train: int) -> tuple[int, int]:
    """(iterations between checkpoints, iterations of the run): ``every`` (or one epoch), or fewer
    when that would leave the run with under ``min_checkpoints`` checkpoints (iteration 0 and the
    final model included)."""
    ipe = iterations_per_epoch(n_train, cfg.batch_size)
    every, total = ipe if cfg.every_epoch else cfg.every, cfg.epochs * ipe
    if cfg.min_checkpoints > 1 and _n_checkpoints(total, every) < cfg.min_checkpoints:
        every = max(1, total // (cfg.min_checkpoints - 1))
    return every, total


def _n_checkpoints(total: int, every: int) -> int:
    return total // every + 1 + (total % every != 0)


def _check_model(model, cfg: RunConfig, x_exp: torch.Tensor, num_classes: int, device, labels=None):
    """Fail before training: the images must fit the model, the layer exist and be a map, K fit
    the features (``labels``: the training labels, to name a stray one). Returns the target layer
    (:class:`~i2x.nn.layers.Target`)."""
    _check_fits(model, x_exp[:2].to(device), num_classes, labels)
    target = resolve_layer(model, cfg.layer, x_exp[:1].to(device), cfg.reshape)
    layer = target.name
    _, fh, fw, _ = features(model, x_exp[:1], layer, device=device, reshape=cfg.reshape).shape
    n = len(x_exp) * fh * fw
    if cfg.prototypes > n:
        raise ConfigError(
            "prototypes",
            cfg.prototypes,
            f"exceeds the {n} feature vectors ({len(x_exp)} explanation samples x {fh}x{fw} "
            "positions): lower it or raise explain_fraction",
        )
    return target


def _train(*, model, x, y, cfg: RunConfig, recorder: Recorder, out: Path, device, progress: bool, world: World):
    """Stage 1: train with recording, then save the final model (rank 0 under torchrun)."""
    hist = train_model(
        model,
        x,
        y,
        cfg,
        recorder=recorder,
        state_path=out / "weights" / "train_state.pt",
        device=device,
        progress=progress,
        world=world,
    )
    loss = float(np.mean(hist["losses"][-20:])) if hist["losses"] else None
    if world.main:
        save_state(
            out / "weights" / "final.pt",
            {
                "model": model.state_dict(),
                "config": cfg.to_dict(),
                "layer": recorder.layer,
                "step": hist["iterations"],
                "metrics": {"losses": hist["losses"]},
            },
        )
    n_classes = int(y.max()) + 1 if len(y) else 1
    early = divergence_warning(hist["losses"][: iterations_per_epoch(len(y), cfg.batch_size)], n_classes, cfg.lr)
    return StageOutput(["weights/final.pt"], metrics={"final_train_loss": loss}, warnings=[early] if early else [])


def _predict(*, model, test, classes=None, device, source: str | None = None):
    """(y_true, y_pred, source) of ``model`` on ``test`` (a Dataset, a torch Dataset or tensors)."""
    x, y = as_dataset(test, classes=classes, name="test=").tensors()
    return y.numpy().astype(np.int64), predict(model, x, device=device).argmax(1), source


@takes_settings
def analyze(
    run_dir: str | Path,
    model,
    *,
    images=None,
    labels=None,
    classes: list[str] | None = None,
    test=None,
    train=None,
    config: RunConfig | None = None,
    progress: bool = False,
    report: bool = True,
    **overrides,
) -> Run:
    """Stages 2-7 on records a :class:`~i2x.nn.record.Recorder` wrote into ``run_dir`` from your own loop, and
    the HTML report (``run_dir/report/index.html``) unless ``report=False``, as :func:`run`.

    model: the final model (its features define the prototypes). images/labels: the explanation
    set the Recorder saw, in the same order (normalised float (N, C, H, W); default: the run's
    ``record/explain_set.npz``). test: a held-out set ((images, labels) tensors, a torch Dataset
    or :class:`Dataset`) for the confusion matrix that picks the pairs; without it the final
    checkpoint's predictions on the explanation set are used (the manifest says so). train: the
    training data (same forms as ``test``), to fit the prototypes on it as the paper does (streamed,
    ``prototype_fit='train'``); without it they are fitted on the explanation set. Settings
    (``prototypes=``, ``min_cluster_size=``, ``layer=``, ``device=``, ``rho=`` ...) come from
    ``config`` / keywords. Stages already complete in ``run_dir`` are kept.
    """
    out = Path(run_dir)
    if not store.checkpoint_iterations(out):
        raise I2XError(
            f"run_dir {out}: no record/ckpt_it*.npz; record with i2x.Recorder(..., out_dir={str(out)!r}) "
            "in your loop first, or use analyze_checkpoints() on saved state_dicts"
        )
    with run_lock(out):
        old = store.read_manifest(out) if (out / store.MANIFEST).exists() else None
        base = (old or {}).get("config") or None
        cfg = resolve(overrides, base=base, config=config, analysis=True, train=train is not None)
        r = _analyze(out, old, cfg, model, (images, labels, classes), (test, train), progress)
    if report:
        from ..report import report as write_report

        write_report(out)
    return r


def _analyze(out: Path, old: dict | None, cfg: RunConfig, model, given: tuple, data: tuple, progress: bool) -> Run:
    """:func:`analyze` in the locked ``out``; ``given`` = (images, labels, classes), ``data`` = (test, train)."""
    (images, labels, classes), (test, train) = given, data
    device = resolve_device(cfg.device)
    x_exp, y_exp = _explain_tensors(out, images, labels)
    model.to(device)
    probs_e = predict(model, x_exp, device=device)
    old_model = (old or {}).get("model", {})
    target = resolve_layer(model, cfg.layer or old_model.get("layer"), x_exp[:1].to(device), cfg.reshape)
    layer = target.name
    classes = list(classes or (old or {}).get("data", {}).get("classes") or map(str, range(probs_e.shape[1])))
    manifest = new_manifest(
        cfg,
        {} if old and "data" in old else _user_data(classes, x_exp),
        _model_info(model, old_model.get("name"), target),
        old,
        **listed_checkpoints(out, old),  # the caller's loop's records as they are on disk now
    )
    if test is None:
        on_e = (y_exp.numpy(), probs_e.argmax(1), "explanation set (no test set given to analyze)")
        predict_test = lambda: on_e  # noqa: E731  (computed above: E's predictions were needed anyway)
    else:
        predict_test = partial(_predict, model=model, test=test, classes=classes, device=device, source=TEST_GIVEN)
    hooks = Hooks(
        train=partial(StageOutput, []),  # the records are there already: the caller's loop wrote them
        predict_test=predict_test,
        features=partial(features, model, x_exp, layer, cfg.record_batch_size, device, cfg.reshape),
        train_features=None if train is None else partial(_train_stream, model, train, classes, layer, cfg, device),
        randomisation=partial(
            randomisation_check,
            model,
            x_exp[:SANITY_IMAGES],
            y_exp[:SANITY_IMAGES],
            layer,
            cfg.method,
            device,
            cfg.reshape,
        ),  # fmt: skip
    )
    run_stages(Context(out, manifest, cfg, y_exp.numpy(), classes, hooks), progress)
    return Run(out)


TEST_GIVEN = "test= given to analyze"
SANITY_IMAGES = 256  # images of E in the saliency sanity check (two saliency passes: < 1 s on the demo)


def _train_stream(model, train, classes, layer, cfg: RunConfig, device):
    """The final model's features of the caller's training data, streamed."""
    x, _ = as_dataset(train, classes=classes, name="train").tensors()
    return feature_stream(model, x, layer, cfg.record_batch_size, device, cfg.reshape)


def _user_data(classes: list[str], x_exp: torch.Tensor) -> dict:
    """The manifest's data entry for an explanation set given as normalised tensors."""
    c = x_exp.shape[1]
    return {
        "dataset": "user",
        "train_size": None,
        "explain_size": len(x_exp),
        "classes": classes,
        "image_shape": list(x_exp.shape[1:]),
        "mean": [0.0] * c,
        "std": [1.0] * c,
    }


def _explain_tensors(out: Path, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The explanation set as tensors: the caller's (saved into the run) or the run's own."""
    if images is None:
        if not (out / store.EXPLAIN_SET).exists():
            raise I2XError(
                f"analyze({out}): no record/explain_set.npz; pass images= and labels= (the explanation "
                "set your Recorder used)"
            )
        es = store.load_explain_set(out)
        return torch.from_numpy(es["images"]), torch.from_numpy(es["labels"])
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(x) != len(y):
        raise I2XError(f"images ({len(x)}) and labels ({len(y)}) differ in length")
    store.save_explain_set(out, x.numpy(), y.numpy())
    return x, y


def _iteration_of(path: Path, state) -> int | None:
    if isinstance(state, dict):
        for key in ("step", "iteration", "iter"):
            if isinstance(state.get(key), int):
                return state[key]
    nums = re.findall(r"\d+", path.stem)
    return int(nums[-1]) if nums else None


def analyze_checkpoints(
    checkpoints: str | Path,
    model,
    out: str | Path,
    *,
    images,
    labels,
    classes=None,
    test=None,
    train=None,
    config: RunConfig | None = None,
    progress: bool = False,
    report: bool = True,
    **overrides,
) -> Run:
    """Record every saved ``state_dict`` in ``checkpoints`` (``*.pt``/``*.pth``), then :func:`analyze`.

    Each file holds a state_dict, or a dict with one under ``"model"`` / ``"state_dict"``; its
    iteration is the dict's ``step``/``iteration`` or the last number in the file name (files
    without either are ordered by name). ``model`` must have the architecture the files were
    saved from; it ends holding the last checkpoint, which is the final model of the analysis.
    Recording settings (``method=``, ``target=``, ``record_batch_size=``, ``layer=``, ``device=``)
    and analysis settings come from ``config`` / keywords.
    """
    overrides, source = _saliency_source(overrides)
    cfg = resolve(overrides, config=config, analysis=True, train=train is not None)
    out, dev = Path(out), resolve_device(cfg.device)
    saved = _saved_checkpoints(checkpoints, dev)
    x = torch.as_tensor(images, dtype=torch.float32)
    model.to(dev)
    layer = resolve_layer(model, cfg.layer, x[:1].to(dev), cfg.reshape).name
    rec = Recorder(
        x, labels, 1, out, layer, source or cfg.method, cfg.target, cfg.record_batch_size, dev, reshape=cfg.reshape
    )
    for it, f, st in saved:
        sd = st.get("model", st.get("state_dict", st)) if isinstance(st, dict) else st
        try:
            model.load_state_dict(sd)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise I2XError(
                f"checkpoint {f} does not fit the model ({str(exc).splitlines()[0][:120]}); "
                "pass the architecture it was saved from"
            ) from None
        if not rec.has(it):
            rec.record(model, it)
    cfg = cfg.replace(layer=layer)
    return analyze(
        out, model, images=x, labels=labels, classes=classes, test=test, train=train, config=cfg, progress=progress,
        report=report,
    )  # fmt: skip


def _saved_checkpoints(checkpoints: str | Path, device) -> list[tuple[int, Path, object]]:
    """(iteration, file, loaded object) of every ``*.pt``/``*.pth`` in ``checkpoints``, in training order."""
    files = sorted(p for p in Path(checkpoints).glob("*") if p.suffix in (".pt", ".pth"))
    if len(files) < 2:
        raise I2XError(
            f"checkpoints {checkpoints}: found {len(files)} *.pt/*.pth files; I2X needs ≥ 2 "
            "(e.g. the untrained model and the final one)"
        )
    loaded = [
        (_iteration_of(f, st), i, f, st)
        for i, f in enumerate(files)
        for st in [torch.load(f, map_location=device, weights_only=False)]
    ]
    if any(it is None for it, *_ in loaded):
        loaded = [(i, i, f, st) for _, i, f, st in loaded]
    return [(it, f, st) for it, _, f, st in sorted(loaded, key=lambda t: (t[0], t[1]))]


def _check_fits(model, x, num_classes: int, labels: np.ndarray | None = None) -> None:
    """The model takes these images and returns (N, classes) scores — as a tensor, the first element
    of a tuple (``(logits, aux)``) or a dict's ``logits`` — in eval mode and in train mode (a model
    such as torchvision's InceptionV3 returns a tuple only when training). The train-mode pass
    leaves no trace: buffers (BatchNorm statistics), RNG states and modes are restored."""
    _refuse_meta(model)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    for mode in ("eval", "train"):
        try:
            with torch.no_grad(), eval_mode(model), torch.random.fork_rng(devices=_rng_devices(x)):
                model.train(mode == "train")
                y = model(x)
        except RuntimeError as exc:
            raise I2XError(_misfit(model, x, exc)) from None
        finally:
            with torch.no_grad():
                for b, saved in buffers:  # a train-mode forward updates BatchNorm's running statistics
                    b.copy_(saved)
        s = class_scores(y)
        if isinstance(s, torch.Tensor) and s.dim() == 2 and s.shape[1] < num_classes and labels is not None:
            bad = np.flatnonzero(labels >= s.shape[1])
            if len(bad) <= max(1, len(labels) // 100):  # a stray label, not a model with too few outputs
                raise I2XError(
                    f"the model has {s.shape[1]} outputs (labels 0..{s.shape[1] - 1}) but {len(bad)} training "
                    f"image{'s have' if len(bad) > 1 else ' has'} a label up to {int(labels.max())} (image "
                    f"{', '.join(map(str, bad[:3]))}): fix those labels, or give the model one output per class"
                )
        if not isinstance(s, torch.Tensor) or s.dim() != 2 or s.shape[1] != num_classes:
            what = f"shape {tuple(s.shape)}" if isinstance(s, torch.Tensor) else type(y).__name__
            raise I2XError(
                f"in {mode} mode the model outputs {what} but the data has {num_classes} classes (labels 0.."
                f"{num_classes - 1}): give the model one output per class, as a tensor, a tuple whose first element "
                "is the logits, or a dict with 'logits' (or, if a label is wrong, fix the labels)"
            )


def _refuse_meta(model) -> None:
    if any(p.is_meta for p in model.parameters()):
        raise I2XError("the model's parameters are on the 'meta' device (no values): materialise it, e.g. "
                       "model.to_empty(device='cpu') and load its weights, before i2x.run")  # fmt: skip


def _misfit(model, x: torch.Tensor, exc: RuntimeError) -> str:
    """Why images do not fit the model, with the fix: the channels (the model's first convolution or patch
    embedding against the images'), else the size."""
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    msg = str(exc).splitlines()[0][:160]
    got = x.shape[1]
    if first is not None and first.in_channels != got:
        want = first.in_channels
        how = (
            "repeat the channel (transforms.Grayscale(num_output_channels=3), or x.repeat(1, 3, 1, 1))"
            if got == 1 and want == 3
            else f"convert the images to {want} channels"
        )
        return (
            f"the model's first layer takes {want}-channel images, the data has {got} channel{'s' * (got != 1)}: "
            f"{how}, or build the model for them (timm: in_chans={got}; torchvision: replace its first convolution)"
        )
    return (
        f"images of shape {tuple(x.shape[1:])} do not fit the model ({msg}); pick a model for this image size or "
        "resize the data"
    )


def _rng_devices(x: torch.Tensor) -> list:
    """The CUDA devices whose RNG a forward on ``x`` may draw from (fork_rng restores them)."""
    return [x.device] if x.device.type == "cuda" else []


__all__ = ["run", "analyze", "analyze_checkpoints"]
