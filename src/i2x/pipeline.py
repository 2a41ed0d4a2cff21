"""``i2x.run``: the whole pipeline (stages 1-7) into a run directory, resumable stage by stage.

Each stage writes its arrays atomically, then the manifest is rewritten to list it as
complete; on ``resume`` a stage listed complete (with its files present) is skipped.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import store
from .config import RunConfig, resolve_device
from .data import Dataset, Splits, explanation_indices, load_splits
from .dynamics import Dynamics, dynamics
from .errors import I2XError, RunDirError
from .explain import ExplainConfig, confused_pairs, explain
from .intensity import containment, intensity
from .prototypes import Prototypes, prototypes

STAGES = store.STAGES


class Run:
    """A run directory: its manifest and typed loaders of every stage's arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = store.read_manifest(self.path)

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.manifest["config"])

    @property
    def classes(self) -> list[str]:
        return self.manifest["data"]["classes"]

    def arrays(self, stage: str) -> dict[str, np.ndarray]:
        return store.load_npz(self.path / "arrays" / f"{stage}.npz")

    def records(self, saliency: str = "all") -> dict[str, np.ndarray]:
        return store.load_records(self.path, saliency)

    def explain_set(self) -> dict[str, np.ndarray]:
        return store.load_npz(self.path / "record" / "explain_set.npz")

    def prototypes(self) -> Prototypes:
        return Prototypes.from_arrays(self.arrays("prototypes"))

    def dynamics(self) -> Dynamics:
        return Dynamics.from_arrays(self.arrays("dynamics"))

    def explanations(self) -> dict:
        return store.load_json(self.path / "explanations.json")


def _prepare_dir(out: Path, resume: bool, overwrite: bool) -> dict | None:
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif resume:
            for tmp in out.rglob(".*.tmp"):  # half-written files of the crashed run: never data
                tmp.unlink()
            if (out / store.MANIFEST).exists():
                return store.read_manifest(out)
            return None
        else:
            raise I2XError(f"--out {out} already holds a run: add --resume to continue it or --overwrite to replace it")
    elif resume and not out.exists():
        raise I2XError(f"--resume {out}: no such run directory; start it with `i2x run --out {out}`")
    out.mkdir(parents=True, exist_ok=True)
    return None


@contextmanager
def _timed(timings: dict, name: str):
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 3)


def run(config: RunConfig | None = None, out: str | Path = "runs/i2x", *, resume: bool = False,
        overwrite: bool = False, progress: bool = True, splits: Splits | None = None, model=None,
        explain_config: ExplainConfig | None = None, train=None, test=None, preset: str | None = None,
        **overrides) -> Run:
    """Train with recording and run every analysis stage; returns the :class:`Run`.

    ``config`` fields can be overridden by keyword (``run(epochs=2, out=...)``); ``preset`` names
    one of :data:`i2x.presets.PRESETS` (keywords override it). Bring your own data with ``splits``
    (train/test :class:`i2x.data.Dataset`) or ``train=``/``test=`` (torch Datasets or
    :class:`i2x.data.Dataset`; without ``test`` a stratified 20 % of ``train`` is held out) and your
    own ``model`` (an ``nn.Module``; name its target layer with ``layer=``).
    """
    import torch

    from .models import build_model
    from .record import Recorder
    from .train import TrainConfig, predict
    from .train import train as train_model  # `train` is the train= argument here

    if isinstance(model, str):  # run(model="resnet50") names a built-in model
        overrides, model = {**overrides, "model": model}, None
    if preset is not None:
        from .presets import config_from

        if config is not None:
            raise I2XError("give either config= or preset= (with keyword overrides), not both")
        config = config_from(preset, **overrides)
        overrides = {}
    cfg = (config or RunConfig()).replace(**overrides).validate() if overrides else (config or RunConfig()).validate()
    out = Path(out)
    old = _prepare_dir(out, resume, overwrite)
    if old is not None and old.get("config") and RunConfig.from_dict(old["config"]) != cfg and not overrides.get("_force"):
        cfg_old = RunConfig.from_dict(old["config"])
        diff = {k: (v, getattr(cfg, k)) for k, v in cfg_old.to_dict().items() if getattr(cfg, k) != v}
        raise I2XError(f"--resume {out}: the run was started with other settings {diff}; resume without changing them")
    manifest = old or {"config": cfg.to_dict(), "versions": store.library_versions(), "stages": {},
                       "timings": {}, "metrics": {},
                       "seeds": {"seed": cfg.seed, "explain_seed": cfg.explain_seed}}
    manifest["config"] = cfg.to_dict()
    stages: dict = manifest.setdefault("stages", {})
    timings: dict = manifest.setdefault("timings", {})

    def done(name: str) -> bool:
        return _done(out, manifest, name)

    def complete(name: str, files: list[str]) -> None:
        stages[name] = {"complete": True, "files": files}
        store.write_manifest(out, manifest)

    device = resolve_device(cfg.device)
    torch.set_grad_enabled(True)
    if splits is None and train is not None:
        splits = _splits_from(train, test, cfg.seed)
    splits = splits or load_splits(cfg.dataset, cfg.data_dir, seed=cfg.seed, download=cfg.download,
                                   train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                                   subset_seed=cfg.explain_seed)
    train_ds, test_ds = splits.train, splits.test
    eidx = explanation_indices(len(train_ds), cfg.explain_fraction, cfg.explain_seed)
    manifest["data"] = {"dataset": splits.train.name or cfg.dataset, "train_size": len(train_ds), "test_size": len(test_ds),
                        "test_source": splits.test_source, "explain_size": int(len(eidx)),
                        "classes": list(train_ds.classes), "image_shape": list(train_ds.shape),
                        "mean": list(train_ds.mean), "std": list(train_ds.std)}
    store.write_manifest(out, manifest)
    # the raw images of E travel with the run, so a report can draw them without the dataset
    store.save_npz(out / "record" / "explain_set.npz", indices=eidx, labels=train_ds.labels[eidx],
                   images=train_ds.images[eidx])

    if model is None:
        torch.manual_seed(cfg.seed)  # the initial weights are part of what --seed reproduces
        model = build_model(cfg.model, in_channels=train_ds.shape[0], num_classes=len(train_ds.classes))
    model.to(device)
    x_train, y_train = train_ds.tensors()
    x_exp, y_exp = x_train[eidx], y_train[eidx]
    _check_fits(model, x_exp[:2].to(device), len(train_ds.classes))
    from .layers import resolve_layer

    layer_name, _ = resolve_layer(model, cfg.layer, x_exp[:1].to(device))
    from .saliency import features

    _, fh, fw, _ = features(model, x_exp[:1], layer_name, device=device).shape
    if cfg.prototypes > len(eidx) * fh * fw:  # fail now, not after training
        raise I2XError(f"--prototypes {cfg.prototypes} exceeds the {len(eidx) * fh * fw} feature vectors "
                       f"({len(eidx)} explanation samples x {fh}x{fw} positions): lower --prototypes "
                       "or raise --explain-fraction")
    manifest["model"] = {"name": cfg.model if cfg.model else type(model).__name__, "layer": layer_name,
                         "parameters": int(sum(p.numel() for p in model.parameters()))}

    # Stage 1: train + record ---------------------------------------------------------------
    weights = out / "weights"
    weights.mkdir(exist_ok=True)
    tcfg = TrainConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.augment, cfg.seed)
    if done("record"):
        model.load_state_dict(torch.load(weights / "final.pt", map_location=device, weights_only=False)["model"])
    else:
        from .train import iterations_per_epoch

        every = iterations_per_epoch(len(train_ds), cfg.batch_size) if cfg.every_epoch else cfg.every
        rec = Recorder(x_exp, y_exp.numpy(), every=every, out_dir=out, layer=layer_name, method=cfg.method,
                       target=cfg.target, batch_size=cfg.record_batch_size, device=device, sample_index=eidx)
        with _timed(timings, "record"):
            hist = train_model(model, x_train, y_train, tcfg, recorder=rec, state_path=weights / "train_state.pt",
                         device=device, progress=progress)
        _save_final(weights / "final.pt", model, cfg, layer_name, hist)
        manifest["metrics"]["final_train_loss"] = float(np.mean(hist["losses"][-20:])) if hist["losses"] else None
        complete("record", ["weights/final.pt"])

    # Evaluate on the test set ---------------------------------------------------------------
    if not done("evaluate"):
        with _timed(timings, "evaluate"):
            x_test, y_test = test_ds.tensors()
            pred = predict(model, x_test, device=device).argmax(1)
            _save_evaluation(out, manifest, y_test.numpy(), pred, len(train_ds.classes))
    cm = store.load_npz(out / "arrays" / "evaluate.npz")["confusion"]

    analyze_stages(out, manifest, model, x_exp, y_exp.numpy(), layer_name, cfg, cm, list(train_ds.classes),
                   device=device, explain_config=explain_config, progress=progress)
    if (weights / "train_state.pt").exists():
        (weights / "train_state.pt").unlink()  # the run is complete: final.pt is all a resume needs
    store.write_manifest(out, manifest)
    return Run(out)


def _save_evaluation(out: Path, manifest: dict, y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> None:
    """The "evaluate" stage: confusion matrix (rows = true class), accuracy, most confused pairs."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.int64)   # (C, C)
    store.save_npz(out / "arrays" / "evaluate.npz", y_true=y_true, y_pred=y_pred, confusion=cm)
    manifest.setdefault("metrics", {})["test_accuracy"] = float((y_pred == y_true).mean())
    manifest["metrics"]["confused_pairs"] = [{"a": a, "b": b, "count": n} for a, b, n in confused_pairs(cm, top=5)]
    _complete(out, manifest, "evaluate", ["arrays/evaluate.npz"])


def _done(out: Path, manifest: dict, name: str) -> bool:
    """A stage is done when the manifest lists it complete and every file it wrote reads back;
    a missing, truncated or corrupt file means the stage is redone."""
    s = manifest.get("stages", {}).get(name)
    return bool(s and s.get("complete") and all(store.readable(out / f) for f in s.get("files", [])))


def _complete(out: Path, manifest: dict, name: str, files: list[str]) -> None:
    manifest.setdefault("stages", {})[name] = {"complete": True, "files": files}
    store.write_manifest(out, manifest)


def analyze_stages(out: Path, manifest: dict, model, x_exp, y_exp: np.ndarray, layer_name: str, cfg: RunConfig,
                   cm: np.ndarray, classes: list[str], *, device="cpu", explain_config: ExplainConfig | None = None,
                   progress: bool = False) -> None:
    """Stages 2-7 on the records in ``out/record`` and the final ``model``; each stage skipped if done.

    x_exp: (N, C, H, W) normalised explanation-set tensor; y_exp: (N,) labels; cm: (C, C) confusion.
    Shared by :func:`run` and :func:`analyze`.
    """
    from tqdm.auto import tqdm

    from .saliency import features

    timings: dict = manifest.setdefault("timings", {})
    stage_bar = tqdm(total=4, desc="analysis", disable=not progress, leave=False)
    # Stage 2: prototypes ---------------------------------------------------------------------
    if not _done(out, manifest, "prototypes"):
        stage_bar.set_postfix(stage="prototypes")
        with _timed(timings, "prototypes"):
            feats = features(model, x_exp, layer_name, batch_size=cfg.record_batch_size, device=device)
            protos = prototypes(feats, cfg.prototypes, cfg.pca_variance, cfg.pca_max_components, random_state=cfg.seed)
            store.save_npz(out / "arrays" / "prototypes.npz", **protos.to_arrays())
        manifest["model"]["feature_shape"] = list(feats.shape[1:])
        _complete(out, manifest, "prototypes", ["arrays/prototypes.npz"])
    stage_bar.update(1)
    protos = Prototypes.from_arrays(store.load_npz(out / "arrays" / "prototypes.npz"))
    records = store.load_records(out)
    manifest["checkpoints"] = records["iterations"].tolist()

    # Stage 3: intensity ----------------------------------------------------------------------
    if not _done(out, manifest, "intensity"):
        stage_bar.set_postfix(stage="intensity")
        with _timed(timings, "intensity"):
            inten = intensity(records["saliency"], protos.assignments, protos.k)          # (T+1, N, K)
            cont = containment(protos.assignments, protos.k)                               # (N, K)
            store.save_npz(out / "arrays" / "intensity.npz", intensity=inten.astype(np.float32), contain=cont)
        _complete(out, manifest, "intensity", ["arrays/intensity.npz"])
    stage_bar.update(1)
    ia = store.load_npz(out / "arrays" / "intensity.npz")

    # Stages 4-6: dynamics --------------------------------------------------------------------
    if not _done(out, manifest, "dynamics"):
        stage_bar.set_postfix(stage="dynamics")
        with _timed(timings, "dynamics"):
            dyn = dynamics(records["confidences"], ia["intensity"], y_exp,
                           cfg.min_cluster_size, cfg.tau, cfg.ridge_lambda)
            store.save_npz(out / "arrays" / "dynamics.npz", **dyn.to_arrays())
        _complete(out, manifest, "dynamics", ["arrays/dynamics.npz"])
    stage_bar.update(1)
    dyn = Dynamics.from_arrays(store.load_npz(out / "arrays" / "dynamics.npz"))

    # Stage 7: explanations -------------------------------------------------------------------
    if not _done(out, manifest, "explain"):
        stage_bar.set_postfix(stage="explain")
        with _timed(timings, "explain"):
            ecfg = explain_config or ExplainConfig(rho=cfg.rho)
            ex = explain(dyn.W, ia["contain"], y_exp, dyn.class_delta, confusion=cm,
                         flagged=dyn.flagged, classes=classes, cfg=ecfg)
            ex["checkpoints"] = manifest["checkpoints"]
            store.save_json(out / "explanations.json", ex)
        _complete(out, manifest, "explain", ["explanations.json"])
    stage_bar.update(1)
    stage_bar.close()


def _splits_from(train, test, seed: int) -> Splits:
    """Splits from user data: torch Datasets or :class:`Dataset`; no test = 20 % stratified hold-out."""
    from .data import from_torch, stratified_split

    tr = from_torch(train, name="user (train=)")
    if test is None:
        rest, held = stratified_split(tr.labels, 0.2, seed)
        return Splits(tr.subset(rest), tr.subset(held), "stratified 20% hold-out of train= (no test= given)")
    te = from_torch(test, classes=tr.classes, name="test")
    if te.shape != tr.shape:
        raise I2XError(f"test= images are {te.shape} but train= images are {tr.shape}: give both one shape")
    te.mean, te.std = tr.mean, tr.std  # normalise the test set with the training statistics
    return Splits(tr, te, "test= given by the caller")


def analyze(run_dir: str | Path, model, *, images=None, labels=None, classes: list[str] | None = None,
            test=None, layer: str | None = None, config: RunConfig | None = None, device: str = "auto",
            explain_config: ExplainConfig | None = None, progress: bool = False, **overrides) -> Run:
    """Stages 2-7 on records a :class:`~i2x.record.Recorder` wrote into ``run_dir`` from your own loop.

    model: the final model (its features define the prototypes). images/labels: the explanation
    set the Recorder saw, in the same order (normalised float (N, C, H, W); default: the run's
    ``record/explain_set.npz``). test: a held-out set ((images, labels) tensors, a torch Dataset
    or :class:`Dataset`) for the confusion matrix that picks the pairs; without it the final
    checkpoint's predictions on the explanation set are used (the manifest says so). Analysis
    settings (``prototypes=``, ``min_cluster_size=`` ...) come from ``config`` / keywords.
    Stages already complete in ``run_dir`` are kept.
    """
    import torch

    from .layers import resolve_layer
    from .train import predict

    out = Path(run_dir)
    if not store.checkpoint_iterations(out):
        raise I2XError(f"run_dir {out}: no record/ckpt_it*.npz; record with i2x.Recorder(..., out_dir={str(out)!r}) "
                       "in your loop first, or use analyze_checkpoints() on saved state_dicts")
    manifest = store.read_manifest(out) if (out / store.MANIFEST).exists() else {}
    cfg = config or (RunConfig.from_dict(manifest["config"]) if manifest.get("config") else RunConfig(model=""))
    cfg = cfg.replace(**overrides).validate() if overrides else cfg.validate()
    device = resolve_device(device)
    if images is None:
        es = store.load_npz(out / "record" / "explain_set.npz") if (out / "record" / "explain_set.npz").exists() else None
        if es is None or "data" not in manifest:
            raise I2XError(f"analyze({out}): pass images= and labels= (the explanation set your Recorder used)")
        ds = Dataset(es["images"], es["labels"], manifest["data"]["classes"], tuple(manifest["data"]["mean"]),
                     tuple(manifest["data"]["std"]))
        x_exp, y_exp = ds.tensors()
    else:
        x_exp = torch.as_tensor(images, dtype=torch.float32)
        y_exp = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if len(x_exp) != len(y_exp):
            raise I2XError(f"images ({len(x_exp)}) and labels ({len(y_exp)}) differ in length")
        store.save_npz(out / "record" / "explain_set.npz", indices=np.arange(len(y_exp)), labels=y_exp.numpy(),
                       images=x_exp.numpy())
    model.to(device)
    probs_e = predict(model, x_exp, device=device)
    C = probs_e.shape[1]
    classes = list(classes or manifest.get("data", {}).get("classes") or [str(c) for c in range(C)])
    layer = layer or cfg.layer or manifest.get("model", {}).get("layer")  # a run's own target layer
    layer_name, _ = resolve_layer(model, layer, x_exp[:1].to(device))
    manifest.setdefault("config", cfg.to_dict())
    manifest.setdefault("versions", store.library_versions())
    manifest.setdefault("metrics", {})
    manifest.setdefault("data", {"dataset": "user", "train_size": None, "explain_size": len(y_exp),
                                 "classes": classes, "image_shape": list(x_exp.shape[1:]),
                                 "mean": [0.0] * x_exp.shape[1], "std": [1.0] * x_exp.shape[1]})
    manifest["model"] = {**manifest.get("model", {}), "name": manifest.get("model", {}).get("name") or type(model).__name__,
                         "layer": layer_name, "parameters": int(sum(p.numel() for p in model.parameters()))}
    if not _done(out, manifest, "evaluate"):
        if test is None:
            y_true, y_pred = y_exp.numpy(), probs_e.argmax(1)
            manifest["data"]["test_source"] = "explanation set (no test set given to analyze)"
        else:
            if isinstance(test, (tuple, list)):
                xt, yt = torch.as_tensor(test[0], dtype=torch.float32), torch.as_tensor(np.asarray(test[1]))
            else:
                from .data import from_torch

                xt, yt = from_torch(test, classes=classes, name="test").tensors()
            y_true, y_pred = yt.numpy().astype(np.int64), predict(model, xt, device=device).argmax(1)
            manifest["data"]["test_source"] = "test= given to analyze"
        manifest["data"]["test_size"] = int(len(y_true))
        _save_evaluation(out, manifest, y_true, y_pred, C)
    manifest.setdefault("stages", {}).setdefault("record", {"complete": True, "files": []})
    cm = store.load_npz(out / "arrays" / "evaluate.npz")["confusion"]
    analyze_stages(out, manifest, model, x_exp, y_exp.numpy(), layer_name, cfg, cm, classes,
                   device=device, explain_config=explain_config, progress=progress)
    store.write_manifest(out, manifest)
    return Run(out)


def _iteration_of(path: Path, state) -> int | None:
    import re

    if isinstance(state, dict):
        for key in ("step", "iteration", "iter"):
            if isinstance(state.get(key), int):
                return state[key]
    nums = re.findall(r"\d+", path.stem)
    return int(nums[-1]) if nums else None


def analyze_checkpoints(checkpoints: str | Path, model, out: str | Path, *, images, labels, classes=None,
                        test=None, layer: str | None = None, method: str = "gradcam", target: str = "label",
                        batch_size: int = 256, device: str = "auto", progress: bool = False, **overrides) -> Run:
    """Record every saved ``state_dict`` in ``checkpoints`` (``*.pt``/``*.pth``), then :func:`analyze`.

    Each file holds a state_dict, or a dict with one under ``"model"`` / ``"state_dict"``; its
    iteration is the dict's ``step``/``iteration`` or the last number in the file name (files
    without either are ordered by name). ``model`` must have the architecture the files were
    saved from; it ends holding the last checkpoint, which is the final model of the analysis.
    """
    import torch

    from .layers import resolve_layer
    from .record import Recorder

    files = sorted(p for p in Path(checkpoints).glob("*") if p.suffix in (".pt", ".pth"))
    if len(files) < 2:
        raise I2XError(f"checkpoints {checkpoints}: found {len(files)} *.pt/*.pth files; I2X needs ≥ 2 "
                       "(e.g. the untrained model and the final one)")
    out = Path(out)
    dev = resolve_device(device)
    x = torch.as_tensor(images, dtype=torch.float32)
    model.to(dev)
    layer_name, _ = resolve_layer(model, layer, x[:1].to(dev))
    rec = Recorder(x, labels, out_dir=out, layer=layer_name, method=method, target=target,
                   batch_size=batch_size, device=dev)
    loaded = []
    for i, f in enumerate(files):
        st = torch.load(f, map_location=dev, weights_only=False)
        loaded.append((_iteration_of(f, st), i, f, st))
    if any(it is None for it, *_ in loaded):
        loaded = [(i, i, f, st) for _, i, f, st in loaded]
    loaded.sort(key=lambda t: (t[0], t[1]))
    for it, _, f, st in loaded:
        sd = st.get("model", st.get("state_dict", st)) if isinstance(st, dict) else st
        try:
            model.load_state_dict(sd)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise I2XError(f"checkpoint {f} does not fit the model ({str(exc).splitlines()[0][:120]}); "
                           "pass the architecture it was saved from") from None
        if not rec.has(it):
            rec.record(model, it)
    return analyze(out, model, images=x, labels=labels, classes=classes, test=test, layer=layer_name,
                   device=device, progress=progress, **overrides)


def _check_fits(model, x, num_classes: int) -> None:
    import torch

    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            y = model(x)
            model.train(was)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0][:160]
        raise I2XError(f"images of shape {tuple(x.shape[1:])} do not fit the model ({msg}); "
                       "pick a model for this image size/channels or resize the data") from None
    if y.dim() != 2 or y.shape[1] != num_classes:
        raise I2XError(f"the model outputs shape {tuple(y.shape)} but the data has {num_classes} classes: "
                       "give the model one output per class")


def _save_final(path: Path, model, cfg: RunConfig, layer: str, hist: dict) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "layer": layer,
                "step": hist["iterations"], "metrics": {"losses": hist["losses"]}}, tmp)
    tmp.replace(path)


def load_model(run_dir: str | Path, device="cpu"):
    """Rebuild the final model of a run directory (built-in models only)."""
    import torch

    from .models import build_model
    from .train import load_state

    r = Run(run_dir)
    ck = load_state(Path(run_dir) / "weights" / "final.pt", map_location=device)
    shape = r.manifest["data"]["image_shape"]
    m = build_model(r.config.model, in_channels=shape[0], num_classes=len(r.classes))
    m.load_state_dict(ck["model"])
    return m.to(torch.device(device))


def check_complete(run: Run) -> None:
    missing = [s for s in STAGES if not run.manifest.get("stages", {}).get(s, {}).get("complete")]
    if missing:
        raise RunDirError(f"{run.path} is incomplete (missing stages: {', '.join(missing)}): "
                          f"finish it with `i2x run --resume {run.path}`")


__all__ = ["run", "Run", "analyze", "analyze_checkpoints", "analyze_stages", "load_model", "Dataset", "STAGES"]
