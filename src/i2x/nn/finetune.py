"""Stage 8, the training loop of explanation-guided fine-tuning (paper §3.5, Table 1).

The curated set, the schedules and the statistics are torch-free (:mod:`i2x.analysis.finetune`);
the settings and their reasons are :class:`i2x.config.FinetuneConfig`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from ..analysis.finetune import (
    FinetuneResult,
    control_removals,
    curated_indices,
    pair_counts,
    parse_schedules,
    resolve_pair,
    resolve_prototype,
    summarize,
)
from ..config import FinetuneConfig, command_config
from ..data import Dataset, as_dataset, splits_for
from ..errors import ConfigError, I2XError
from ..rundir import Run, run_lock
from .layers import class_scores
from .models import load_model
from .train import batch_rows, iterations_per_epoch, predict
from .utils import callers_model, resolve_device, seeded_generator


def finetune(
    run_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    model: torch.nn.Module | None = None,
    test=None,
    out: str | Path | None = None,
    progress: bool = True,
    **overrides,
) -> FinetuneResult:
    """Guided fine-tuning of a finished run, with control arms; writes ``out`` (default ``DIR/finetune``).

    Settings (:class:`~i2x.config.FinetuneConfig`) from ``config`` and keywords: ``pair`` (a, b) as
    names or indices, or "auto"; ``prototype`` an int or "auto"; ``schedules``, ``repeats``, ``lr``,
    ``seed``, ``batch_size``, ``device``, ``controls``. ``model``: the run's final model, for runs
    made with your own model (built-in models are rebuilt from ``weights/final.pt``); its weights
    are restored when fine-tuning ends. ``test``: an :class:`i2x.data.Dataset` to evaluate on;
    default: the run's test set reloaded from its config (needed for custom ``splits``).
    """
    fc = command_config(FinetuneConfig, config, **overrides)
    with run_lock(Run(run_dir).path), callers_model(model) if model is not None else nullcontext():
        return _finetune(Run(run_dir).check_complete("finetune"), fc, model, test, out, progress)


def _finetune(run: Run, fc: FinetuneConfig, model, test, out, progress: bool) -> FinetuneResult:
    """:func:`finetune` with the run directory locked."""
    t_start = time.perf_counter()
    scheds = parse_schedules(fc.schedules)
    a, b = resolve_pair(run, fc.pair)
    ia, es = run.arrays("intensity"), run.explain_set()
    k = resolve_prototype(run, fc.prototype, a, b, ia["contain"].shape[1])
    keep = _curated(ia["contain"], es["labels"], a, b, k, run.classes)
    x_e, y_e = torch.from_numpy(es["images"]), torch.from_numpy(es["labels"])  # stored as the model saw them
    dev = resolve_device(fc.device)
    model = load_model(run.path, device=dev) if model is None else model.to(dev)
    t0 = time.perf_counter()
    x_t, y_t = _test_set(run, test).tensors()
    t_load = time.perf_counter() - t0
    tuner = _Tuner(
        model,
        x_e,
        y_e,
        x_t,
        y_t.numpy(),
        len(run.classes),
        (a, b),
        fc.lr,
        int(fc.batch_size or run.config.batch_size),
        dev,
        progress,
    )
    seeds = tuple(int(fc.seed) + r for r in range(int(fc.repeats)))
    full = np.arange(len(y_e))
    try:
        baseline = tuner.evaluate()
        results = tuner.arms(scheds, seeds, lambda s: {"full": full, "curated": keep})
        names = [] if fc.controls == "none" else fc.controls.split(",")
        args = (ia["contain"], es["labels"], a, b, k, len(full) - len(keep))
        controls = {c: tuner.control(c, args, ia.get("background"), scheds, seeds) for c in names}
    finally:
        model.load_state_dict(tuner.base)
    res = FinetuneResult(
        pair=(a, b),
        names=(run.classes[a], run.classes[b]),
        prototype=k,
        explain_size=len(y_e),
        curated_indices=keep,
        lr=float(fc.lr),
        batch_size=tuner.bs,
        seeds=seeds,
        schedules=results,
        baseline=baseline,
        test_size=len(y_t),
        controls={c: v for c, v in controls.items() if v is not None},
        controls_left_out=tuple(c for c, v in controls.items() if v is None),
        timings={"load_test": round(t_load, 3), "total": round(time.perf_counter() - t_start, 3)},
    )
    out = Path(out) if out is not None else run.path / "finetune"
    res.save(out)
    return replace(res, path=out)


def _curated(contain, labels, a: int, b: int, k: int, names: list[str]) -> np.ndarray:
    keep = curated_indices(contain, labels, a, b, k)
    if len(keep) == len(labels):
        raise ConfigError(
            "prototype",
            k,
            f"is in no sample of class {names[a]} or {names[b]}: the curated set would equal the explanation "
            "set; pick a prototype contained in the pair (see `i2x explain DIR --pair A B`)",
        )
    if len(keep) == 0:
        raise ConfigError("prototype", k, f"removing its {names[a]}/{names[b]} samples empties the explanation set")
    return keep


def _test_set(run: Run, test: Dataset | None) -> Dataset:
    """The caller's test set, or the run's own test subset reloaded as ``i2x.run`` drew it."""
    if test is not None:
        return as_dataset(test, classes=run.classes, name="test")
    cfg, m = run.config, run.manifest["data"]
    if str(m.get("dataset", "")).startswith("user"):
        raise I2XError(
            f"{run.path} was made with your own data ({m['dataset']}, test: {m.get('test_source')}): "
            "pass its test set from Python, finetune(DIR, test=i2x.data.Dataset(...))"
        )
    test = splits_for(cfg).test
    if len(test) != m["test_size"]:
        raise I2XError(
            f"the run was evaluated on {m['test_size']} test images but reloading {cfg.dataset!r} gives "
            f"{len(test)}: pass the run's own test set (finetune(..., test=Dataset))"
        )
    return test


class _Tuner:
    """Fine-tunes one model from its final weights, arm by arm, and evaluates it on the test set."""

    def __init__(
        self, model, x_e, y_e, x_t, y_t: np.ndarray, n_classes: int, pair, lr: float, bs: int, dev, progress: bool
    ):
        self.model, self.x_e, self.y_e, self.x_t, self.y_t, self.n_classes = model, x_e, y_e, x_t, y_t, n_classes
        self.pair, self.lr, self.bs, self.dev, self.progress = pair, lr, bs, dev, progress
        self.base = {n: v.detach().clone() for n, v in model.state_dict().items()}  # final weights, in memory only

    def evaluate(self) -> dict:
        pred = predict(self.model, self.x_t, device=self.dev).argmax(1)
        cm = confusion_matrix(self.y_t, pred, labels=np.arange(self.n_classes))  # (C, C), rows = true class
        return {"accuracy": float((pred == self.y_t).mean()), "confusion": cm.tolist(), **pair_counts(cm, *self.pair)}

    def arms(self, scheds: list[str], seeds: tuple[int, ...], sets_for) -> dict:
        """Every schedule x seed from the final weights (``sets_for(seed)``: the rows of E of each
        stage name); per schedule its repeats and their summary."""
        from ..progress import bar as tqdm

        results = {s: {"repeats": []} for s in scheds}
        bar = tqdm(total=len(scheds) * len(seeds), desc="finetune", disable=not self.progress, leave=False)
        for sched in scheds:
            for s in seeds:
                t1 = time.perf_counter()
                self.model.load_state_dict(self.base)
                _train_schedule(self.model, sched, s, sets_for(s), self.x_e, self.y_e, self.lr, self.bs, self.dev)
                t_ft = time.perf_counter() - t1
                r = self.evaluate()
                results[sched]["repeats"].append(
                    {"seed": s, **r, "seconds": round(time.perf_counter() - t1, 3), "finetune_seconds": round(t_ft, 3)}
                )
                bar.update(1)
            results[sched].update(summarize(results[sched]["repeats"]))
        bar.close()
        return results

    def control(self, name: str, args: tuple, background, scheds: list[str], seeds: tuple[int, ...]) -> dict | None:
        """Control arm ``name``: the schedules that use the curated set, with the control's removal
        (drawn per seed) in its place; None when the control has nothing to remove."""
        draws = {s: control_removals(name, *args, s, background) for s in seeds}
        if any(len(rows) == 0 for rows, _ in draws.values()):
            return None
        full = np.arange(len(self.y_e))
        arms = self.arms(
            [x for x in scheds if "curated" in x.split("+")],
            seeds,
            lambda s: {"full": full, "curated": np.setdiff1d(full, draws[s][0])},
        )
        info = {"removed": [int(len(draws[s][0])) for s in seeds]}
        if name == "other-prototype":
            info["prototypes"] = [draws[s][1]["prototype"] for s in seeds]
            info["prototype"] = info["prototypes"][0] if len(set(info["prototypes"])) == 1 else None
        return {"schedules": arms, **info}


def _train_schedule(model, sched: str, seed: int, sets: dict, x_e, y_e, lr: float, bs: int, dev) -> None:
    """One schedule ("curated+full": one epoch per stage) with one Adam kept across its stages."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, leave it as it was
        torch.manual_seed(seed)
        model.train()
        for stage, set_name in enumerate(sched.split("+")):
            rows = sets[set_name]
            perm = rows[torch.randperm(len(rows), generator=seeded_generator(seed, stage)).numpy()]  # batch order
            ipe = iterations_per_epoch(len(perm), bs)
            for b in range(ipe):
                idx = torch.from_numpy(batch_rows(perm, b, ipe, bs))
                loss = torch.nn.functional.cross_entropy(class_scores(model(x_e[idx].to(dev))), y_e[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


__all__ = ["finetune"]
