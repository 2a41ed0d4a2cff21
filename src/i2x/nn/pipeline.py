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
from ..config import ConfigError, RunConfig, from_config, resolve
from ..data import Dataset, Splits, as_dataset, explanation_indices, splits_for, stratified_split
from ..errors import I2XError
from ..rundir import Context, Hooks, Run, new_manifest, prepare_dir, run_lock, run_stages, stage_done, warn
from .distributed import World, setup
from .layers import resolve_layer
from .models import MODELS, build_model
from .record import Recorder
from .saliency import feature_stream, features
from .train import iterations_per_epoch, load_state, predict, save_state
from .train import train as train_model
from .utils import eval_mode, resolve_device


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
    **overrides,
) -> Run:
    """Train with recording and run every analysis stage; returns the :class:`Run`. Writes the
    HTML report (``DIR/report/index.html``) unless ``report=False``, as ``i2x run`` does.

    Settings: ``config`` (a :class:`RunConfig`) or ``preset`` (a name in :data:`i2x.PRESETS`),
    changed by keyword (``run(epochs=2, rho=0.9, out=...)``); on ``resume`` the run's own settings
    are kept and a changed one is refused. Your own data: ``splits`` (train/test
    :class:`i2x.data.Dataset`) or ``train=``/``test=`` (torch Datasets; without ``test`` a
    stratified 20 % of ``train`` is held out). Your own ``model``: an ``nn.Module`` (name its
    target layer with ``layer=``).
    """
    if isinstance(model, str):  # run(model="resnet50") names a built-in model
        overrides, model = {**overrides, "model": model}, None
    elif model is not None:  # the caller's own model: no built-in name in the saved settings
        overrides = {**overrides, "model": ""}
    out = Path(out)
    resumed = store.read_manifest(out) if resume and (out / store.MANIFEST).exists() else None
    cfg = _run_config(config, preset, overrides, resumed, out)  # bad settings fail before anything is written
    world = setup(resolve_device(cfg.device))  # under torchrun: this process's rank (rank 0 owns the directory)
    with run_lock(out) if world.main else nullcontext():
        old = prepare_dir(out, resume, overwrite) if world.main else None
        data = _splits(cfg, splits, train, test) if world.main else None  # rank 0 first: one --download
        world.barrier()  # the directory and the data are ready
        if not world.main:
            old = store.read_manifest(out) if resume and (out / store.MANIFEST).exists() else None
            data = _splits(cfg, splits, train, test)
        r = _run(cfg, out, old, progress and world.main, data, model, world)
        if report and world.main:
            from ..report import report as write_report

            write_report(out)
        return r


def _run(cfg: RunConfig, out: Path, old: dict | None, progress: bool, splits: Splits, model, world: World) -> Run:
    """Stages 1-7 of :func:`run` in the locked, prepared ``out`` (under torchrun, every rank trains
    and records its shard; rank 0 runs stages 2-7 and returns the Run, the others None)."""
    device = world.device(resolve_device(cfg.device))
    torch.set_grad_enabled(True)
    tr = splits.train
    eidx = explanation_indices(tr.labels, cfg.explain_fraction, cfg.explain_seed)
    manifest = new_manifest(cfg, _data_info(splits, cfg, eidx), {}, old)
    manifest["distributed"] = world.info()
    for w in _data_warnings(tr, eidx, cfg):
        warn(manifest, w)
    if world.main:
        store.write_manifest(out, manifest)
        # the raw images of E travel with the run, so a report can draw them without the dataset
        store.save_npz(out / "record" / "explain_set.npz", indices=eidx, labels=tr.labels[eidx], images=tr.images[eidx])
    model = model if model is not None else _built_in_model(cfg, tr)
    model.to(device)
    x_train, y_train = tr.tensors()
    x_exp, y_exp = x_train[eidx], y_train[eidx]
    layer = _check_model(model, cfg, x_exp, len(tr.classes), device)
    manifest["model"] = _model_info(model, cfg.model, layer)
    (out / "weights").mkdir(exist_ok=True)
    if stage_done(out, manifest, "record"):
        model.load_state_dict(load_state(out / "weights" / "final.pt", device)["model"])
    rows = world.shard(len(eidx))  # this rank's slice of E (all of it in one process)
    every, total = _schedule(cfg, len(tr))
    manifest["schedule"] = {"every": every, "iterations": total}
    rec = Recorder(
        x_exp[rows],
        y_exp.numpy()[rows],
        every,
        out,
        layer,
        cfg.method,
        cfg.target,
        cfg.record_batch_size,
        device,
        sample_index=eidx[rows],
        world=world,
    )
    hooks = Hooks(
        train=partial(_train, model, x_train, y_train, cfg, rec, out, manifest, device, progress, world),
        predict_test=partial(_predict_test, model, splits.test, device),
        features=partial(features, model, x_exp, layer, cfg.record_batch_size, device),
        train_features=partial(feature_stream, model, x_train, layer, cfg.record_batch_size, device),
    )
    if world.size > 1 and not _train_on_every_rank(hooks, out, manifest, world):
        return None
    run_stages(Context(out, manifest, cfg, y_exp.numpy(), list(tr.classes), hooks), progress)
    (out / "weights" / "train_state.pt").unlink(missing_ok=True)  # complete: final.pt is all a resume needs
    return Run(out)


def _train_on_every_rank(hooks: Hooks, out: Path, manifest: dict, world: World) -> bool:
    """Stage 1 under torchrun, on every rank at once (unless a resumed run has it); afterwards
    only rank 0 goes on (True), into the stages that read the merged records."""
    if not stage_done(out, manifest, "record"):
        t0 = time.perf_counter()
        files = hooks.train()
        manifest.setdefault("timings", {})["record_distributed"] = round(time.perf_counter() - t0, 3)
        hooks.train = lambda: files  # done: the stage runner only marks it complete
    world.barrier()  # every shard of every checkpoint is on disk
    world.close()
    return world.main


def _built_in_model(cfg: RunConfig, tr: Dataset):
    torch.manual_seed(cfg.seed)  # the initial weights are part of what --seed reproduces
    return build_model(cfg.model, in_channels=tr.shape[0], num_classes=len(tr.classes))


def _model_info(model, name: str | None, layer: str) -> dict:
    n = int(sum(p.numel() for p in model.parameters()))
    return {"name": name or type(model).__name__, "layer": layer, "parameters": n}


def _run_config(config, preset, overrides: dict, old: dict | None, out: Path) -> RunConfig:
    """The run's settings (the precedence rule is :func:`i2x.config.resolve`); a resumed run
    must keep the settings it was started with."""
    if config is not None and preset is not None:
        raise I2XError("give either config= or preset= (with keyword overrides), not both")
    base = (old or {}).get("config")
    cfg = from_config(config, overrides) if config is not None else resolve(overrides, preset, base)
    if base is not None and RunConfig.from_dict(base) != cfg:
        before = RunConfig.from_dict(base).to_dict()
        diff = {k: (v, cfg.to_dict()[k]) for k, v in before.items() if cfg.to_dict()[k] != v}
        raise I2XError(f"--resume {out}: the run was started with other settings {diff}; resume without changing them")
    return cfg


def _splits(cfg: RunConfig, splits: Splits | None, train, test) -> Splits:
    """The caller's splits, or its train=/test= data, or the configured dataset."""
    if splits is not None:
        return splits
    if train is None:
        return splits_for(cfg)
    tr = as_dataset(train, name="user (train=)")
    if test is None:
        rest, held = stratified_split(tr.labels, 0.2, cfg.explain_seed)
        return Splits(tr.subset(rest), tr.subset(held), "stratified 20% hold-out of train= (no test= given)")
    te = as_dataset(test, classes=tr.classes, name="test")
    if te.shape != tr.shape:
        raise I2XError(f"test= images are {te.shape} but train= images are {tr.shape}: give both one shape")
    te.mean, te.std = tr.mean, tr.std  # normalise the test set with the training statistics
    return Splits(tr, te, "test= given by the caller")


def _data_warnings(tr: Dataset, eidx: np.ndarray, cfg: RunConfig) -> list[str]:
    """Data too small or odd for the method: a class without training images is an error; a class
    missing from the explanation set, or an explanation set smaller than an HDBSCAN cluster, a warning."""
    counts = np.bincount(tr.labels, minlength=len(tr.classes))
    if (counts == 0).any():
        empty = [tr.classes[c] for c in np.flatnonzero(counts == 0)]
        raise I2XError(
            f"class {', '.join(empty)} has no training image (of {len(tr)}): the model cannot learn it; "
            "add images of it or drop it from the data (for image folders: remove its folder)"
        )
    out = []
    missing = sorted(set(range(len(tr.classes))) - set(tr.labels[eidx].tolist()))
    if missing:
        out.append(
            f"classes {', '.join(tr.classes[c] for c in missing)} have no sample in the explanation set "
            f"({len(eidx)} images): they get no class explanation; raise explain_fraction"
        )
    if len(eidx) < cfg.min_cluster_size:
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


def _check_model(model, cfg: RunConfig, x_exp: torch.Tensor, num_classes: int, device) -> str:
    """Fail before training: the images must fit the model, the layer exist, K fit the features.
    Returns the target layer's name."""
    _check_fits(model, x_exp[:2].to(device), num_classes)
    layer, _ = resolve_layer(model, cfg.layer, x_exp[:1].to(device))
    _, fh, fw, _ = features(model, x_exp[:1], layer, device=device).shape
    n = len(x_exp) * fh * fw
    if cfg.prototypes > n:
        raise ConfigError(
            "prototypes",
            cfg.prototypes,
            f"exceeds the {n} feature vectors ({len(x_exp)} explanation samples x {fh}x{fw} "
            "positions): lower it or raise explain_fraction",
        )
    return layer


def _train(
    model,
    x_train,
    y_train,
    cfg: RunConfig,
    rec: Recorder,
    out: Path,
    manifest: dict,
    device,
    progress: bool,
    world: World,
) -> list[str]:
    """Stage 1: train with recording, then save the final model (rank 0 under torchrun)."""
    hist = train_model(
        model,
        x_train,
        y_train,
        cfg,
        recorder=rec,
        state_path=out / "weights" / "train_state.pt",
        device=device,
        progress=progress,
        world=world,
    )
    manifest["metrics"]["final_train_loss"] = float(np.mean(hist["losses"][-20:])) if hist["losses"] else None
    if not world.main:
        return ["weights/final.pt"]
    save_state(
        out / "weights" / "final.pt",
        {
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "layer": rec.layer,
            "step": hist["iterations"],
            "metrics": {"losses": hist["losses"]},
        },
    )
    return ["weights/final.pt"]


def _predict_test(model, test: Dataset, device) -> tuple[np.ndarray, np.ndarray]:
    x, y = test.tensors()
    return y.numpy(), predict(model, x, device=device).argmax(1)


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
    **overrides,
) -> Run:
    """Stages 2-7 on records a :class:`~i2x.nn.record.Recorder` wrote into ``run_dir`` from your own loop.

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
        return _analyze(out, model, images, labels, classes, (test, train), config, progress, overrides)


def _analyze(out: Path, model, images, labels, classes, data: tuple, config, progress: bool, overrides: dict) -> Run:
    """:func:`analyze` in the locked ``out``; ``data`` = (test, train) as given."""
    (test, train), old = data, store.read_manifest(out) if (out / store.MANIFEST).exists() else None
    if train is not None and config is None:  # training data given: fit on it unless told otherwise
        overrides = {"prototype_fit": "train", **overrides}
    base = config or (  # a new analysis without training data fits on E
        RunConfig.from_dict(old["config"])
        if old and old.get("config")
        else RunConfig(model="", prototype_fit="explain")
    )
    cfg = base.replace(**overrides).validate()
    device = resolve_device(cfg.device)
    x_exp, y_exp = _explain_tensors(out, old, images, labels)
    model.to(device)
    probs_e = predict(model, x_exp, device=device)
    old_model = (old or {}).get("model", {})
    layer, _ = resolve_layer(model, cfg.layer or old_model.get("layer"), x_exp[:1].to(device))
    classes = list(classes or (old or {}).get("data", {}).get("classes") or map(str, range(probs_e.shape[1])))
    data = {} if old and "data" in old else _user_data(classes, x_exp)
    manifest = new_manifest(cfg, data, _model_info(model, old_model.get("name"), layer), old)
    hooks = Hooks(
        train=lambda: [],  # the records are there already: the caller's loop wrote them
        predict_test=partial(_analyze_predictions, model, test, classes, y_exp, probs_e, manifest, device),
        features=partial(features, model, x_exp, layer, cfg.record_batch_size, device),
        train_features=None if train is None else partial(_train_stream, model, train, classes, layer, cfg, device),
    )
    run_stages(Context(out, manifest, cfg, y_exp.numpy(), classes, hooks), progress)
    return Run(out)


def _train_stream(model, train, classes, layer, cfg: RunConfig, device):
    """The final model's features of the caller's training data, streamed."""
    x, _ = as_dataset(train, classes=classes, name="train").tensors()
    return feature_stream(model, x, layer, cfg.record_batch_size, device)


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


def _explain_tensors(out: Path, old: dict | None, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The explanation set as tensors: the caller's (saved into the run) or the run's own."""
    es_path = out / "record" / "explain_set.npz"
    if images is None:
        if not es_path.exists():
            raise I2XError(
                f"analyze({out}): no record/explain_set.npz; pass images= and labels= (the explanation "
                "set your Recorder used)"
            )
        es, d = store.load_npz(es_path), (old or {}).get("data", {})
        if es["images"].dtype != np.uint8:  # a Recorder's: the normalised tensors it was given
            return torch.from_numpy(es["images"]), torch.from_numpy(es["labels"].astype(np.int64))
        return Dataset(es["images"], es["labels"], d["classes"], tuple(d["mean"]), tuple(d["std"])).tensors()
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(x) != len(y):
        raise I2XError(f"images ({len(x)}) and labels ({len(y)}) differ in length")
    store.save_npz(es_path, indices=np.arange(len(y)), labels=y.numpy(), images=x.numpy())
    return x, y


def _analyze_predictions(model, test, classes, y_exp, probs_e, manifest: dict, device):
    """(y_true, y_pred) on ``test``, or on the explanation set when no test set is given."""
    if test is None:
        manifest["data"]["test_source"] = "explanation set (no test set given to analyze)"
        return y_exp.numpy(), probs_e.argmax(1)
    xt, yt = as_dataset(test, classes=classes, name="test").tensors()
    manifest["data"]["test_source"] = "test= given to analyze"
    return yt.numpy().astype(np.int64), predict(model, xt, device=device).argmax(1)


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
    fit = "explain" if train is None else "train"
    cfg = (config or RunConfig(model="", prototype_fit=fit)).replace(**overrides).validate()
    out, dev = Path(out), resolve_device(cfg.device)
    saved = _saved_checkpoints(checkpoints, dev)
    x = torch.as_tensor(images, dtype=torch.float32)
    model.to(dev)
    layer, _ = resolve_layer(model, cfg.layer, x[:1].to(dev))
    rec = Recorder(x, labels, 1, out, layer, cfg.method, cfg.target, cfg.record_batch_size, dev)
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
        out, model, images=x, labels=labels, classes=classes, test=test, train=train, config=cfg, progress=progress
    )


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


def _check_fits(model, x, num_classes: int) -> None:
    try:
        with torch.no_grad(), eval_mode(model):
            y = model(x)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0][:160]
        raise I2XError(
            f"images of shape {tuple(x.shape[1:])} do not fit the model ({msg}); "
            "pick a model for this image size/channels or resize the data"
        ) from None
    if y.dim() != 2 or y.shape[1] != num_classes:
        raise I2XError(
            f"the model outputs shape {tuple(y.shape)} but the data has {num_classes} classes: "
            "give the model one output per class"
        )


def load_model(run_dir: str | Path, device="cpu"):
    """Rebuild the final model of a run directory (built-in models only)."""
    r = Run(run_dir)
    if r.config.model not in MODELS:
        raise I2XError(
            f"{r.path} was made with your own model ({r.manifest['model']['name']}), which i2x cannot "
            "rebuild from weights/final.pt: load it yourself and pass it from Python, e.g. "
            "i2x.finetune(DIR, model=my_model) or i2x.analyze(DIR, my_model)"
        )
    ck = load_state(Path(run_dir) / "weights" / "final.pt", map_location=device)
    shape = r.manifest["data"]["image_shape"]
    m = build_model(r.config.model, in_channels=shape[0], num_classes=len(r.classes))
    m.load_state_dict(ck["model"])
    return m.to(torch.device(device))


__all__ = ["run", "analyze", "analyze_checkpoints", "load_model"]
