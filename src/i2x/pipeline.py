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

STAGES = ("record", "evaluate", "prototypes", "intensity", "dynamics", "explain")


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

    def records(self) -> dict[str, np.ndarray]:
        from .record import load_records  # imports torch

        return load_records(self.path)

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
        explain_config: ExplainConfig | None = None, **overrides) -> Run:
    """Train with recording and run every analysis stage; returns the :class:`Run`.

    ``config`` fields can be overridden by keyword (``run(epochs=2, out=...)``). Bring your own
    data with ``splits`` (train/test :class:`i2x.data.Dataset`) and your own ``model`` (an
    ``nn.Module``; name its target layer with ``layer=``).
    """
    import torch
    from tqdm.auto import tqdm

    from .models import build_model
    from .record import Recorder, load_records
    from .saliency import features
    from .train import TrainConfig, predict, train

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
        s = stages.get(name)
        return bool(s and s.get("complete") and all((out / f).exists() for f in s.get("files", [])))

    def complete(name: str, files: list[str]) -> None:
        stages[name] = {"complete": True, "files": files}
        store.write_manifest(out, manifest)

    device = resolve_device(cfg.device)
    torch.set_grad_enabled(True)
    splits = splits or load_splits(cfg.dataset, cfg.data_dir, seed=cfg.seed, download=cfg.download)
    train_ds, test_ds = splits.train, splits.test
    eidx = explanation_indices(len(train_ds), cfg.explain_fraction, cfg.explain_seed)
    manifest["data"] = {"dataset": cfg.dataset, "train_size": len(train_ds), "test_size": len(test_ds),
                        "test_source": splits.test_source, "explain_size": int(len(eidx)),
                        "classes": list(train_ds.classes), "image_shape": list(train_ds.shape),
                        "mean": list(train_ds.mean), "std": list(train_ds.std)}
    store.write_manifest(out, manifest)
    # the raw images of E travel with the run, so a report can draw them without the dataset
    store.save_npz(out / "record" / "explain_set.npz", indices=eidx, labels=train_ds.labels[eidx],
                   images=train_ds.images[eidx])

    if model is None:
        model = build_model(cfg.model, in_channels=train_ds.shape[0], num_classes=len(train_ds.classes))
    model.to(device)
    x_train, y_train = train_ds.tensors()
    x_exp, y_exp = x_train[eidx], y_train[eidx]
    _check_fits(model, x_exp[:2].to(device), len(train_ds.classes))
    from .layers import resolve_layer

    layer_name, _ = resolve_layer(model, cfg.layer, x_exp[:1].to(device))
    manifest["model"] = {"name": cfg.model if cfg.model else type(model).__name__, "layer": layer_name,
                         "parameters": int(sum(p.numel() for p in model.parameters()))}

    # Stage 1: train + record ---------------------------------------------------------------
    weights = out / "weights"
    weights.mkdir(exist_ok=True)
    tcfg = TrainConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.augment, cfg.seed)
    if done("record"):
        model.load_state_dict(torch.load(weights / "final.pt", map_location=device, weights_only=False)["model"])
    else:
        rec = Recorder(x_exp, y_exp.numpy(), every=cfg.every, out_dir=out, layer=layer_name, method=cfg.method,
                       target=cfg.target, batch_size=cfg.record_batch_size, device=device, sample_index=eidx)
        with _timed(timings, "record"):
            hist = train(model, x_train, y_train, tcfg, recorder=rec, state_path=weights / "train_state.pt",
                         device=device, progress=progress)
        _save_final(weights / "final.pt", model, cfg, layer_name, hist)
        manifest["metrics"]["final_train_loss"] = float(np.mean(hist["losses"][-20:])) if hist["losses"] else None
        complete("record", ["weights/final.pt"])

    # Evaluate on the test set ---------------------------------------------------------------
    if not done("evaluate"):
        with _timed(timings, "evaluate"):
            x_test, y_test = test_ds.tensors()
            probs = predict(model, x_test, device=device)
            pred = probs.argmax(1)
            C = len(train_ds.classes)
            cm = np.zeros((C, C), dtype=np.int64)
            np.add.at(cm, (y_test.numpy(), pred), 1)
            store.save_npz(out / "arrays" / "evaluate.npz", y_true=y_test.numpy(), y_pred=pred, confusion=cm)
        manifest["metrics"]["test_accuracy"] = float((pred == y_test.numpy()).mean())
        manifest["metrics"]["confused_pairs"] = [
            {"a": a, "b": b, "count": n} for a, b, n in confused_pairs(cm, top=5)]
        complete("evaluate", ["arrays/evaluate.npz"])
    cm = store.load_npz(out / "arrays" / "evaluate.npz")["confusion"]

    stage_bar = tqdm(total=4, desc="analysis", disable=not progress, leave=False)
    # Stage 2: prototypes ---------------------------------------------------------------------
    if not done("prototypes"):
        stage_bar.set_postfix(stage="prototypes")
        with _timed(timings, "prototypes"):
            feats = features(model, x_exp, layer_name, batch_size=cfg.record_batch_size, device=device)
            protos = prototypes(feats, cfg.prototypes, cfg.pca_variance, cfg.pca_max_components, random_state=cfg.seed)
            store.save_npz(out / "arrays" / "prototypes.npz", **protos.to_arrays())
        manifest["model"]["feature_shape"] = list(feats.shape[1:])
        complete("prototypes", ["arrays/prototypes.npz"])
    stage_bar.update(1)
    protos = Prototypes.from_arrays(store.load_npz(out / "arrays" / "prototypes.npz"))
    records = load_records(out)
    manifest["checkpoints"] = records["iterations"].tolist()

    # Stage 3: intensity ----------------------------------------------------------------------
    if not done("intensity"):
        stage_bar.set_postfix(stage="intensity")
        with _timed(timings, "intensity"):
            inten = intensity(records["saliency"], protos.assignments, protos.k)          # (T+1, N, K)
            cont = containment(protos.assignments, protos.k)                               # (N, K)
            store.save_npz(out / "arrays" / "intensity.npz", intensity=inten.astype(np.float32), contain=cont)
        complete("intensity", ["arrays/intensity.npz"])
    stage_bar.update(1)
    ia = store.load_npz(out / "arrays" / "intensity.npz")

    # Stages 4-6: dynamics --------------------------------------------------------------------
    if not done("dynamics"):
        stage_bar.set_postfix(stage="dynamics")
        with _timed(timings, "dynamics"):
            dyn = dynamics(records["confidences"], ia["intensity"], y_exp.numpy(),
                           cfg.min_cluster_size, cfg.tau, cfg.ridge_lambda)
            store.save_npz(out / "arrays" / "dynamics.npz", **dyn.to_arrays())
        complete("dynamics", ["arrays/dynamics.npz"])
    stage_bar.update(1)
    dyn = Dynamics.from_arrays(store.load_npz(out / "arrays" / "dynamics.npz"))

    # Stage 7: explanations -------------------------------------------------------------------
    if not done("explain"):
        stage_bar.set_postfix(stage="explain")
        with _timed(timings, "explain"):
            ecfg = explain_config or ExplainConfig(rho=cfg.rho)
            ex = explain(dyn.W, ia["contain"], y_exp.numpy(), dyn.class_delta, confusion=cm,
                         flagged=dyn.flagged, classes=list(train_ds.classes), cfg=ecfg)
            ex["checkpoints"] = manifest["checkpoints"]
            store.save_json(out / "explanations.json", ex)
        complete("explain", ["explanations.json"])
    stage_bar.update(1)
    stage_bar.close()
    if (weights / "train_state.pt").exists():
        (weights / "train_state.pt").unlink()  # the run is complete: final.pt is all a resume needs
    store.write_manifest(out, manifest)
    return Run(out)


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


__all__ = ["run", "Run", "load_model", "Dataset", "STAGES"]
