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

from ..analysis.faithfulness import pixel_masks
from ..analysis.finetune import (
    FinetuneResult,
    control_perturbations,
    control_removals,
    curated_indices,
    pair_counts,
    parse_schedules,
    perturb_cells,
    resolve_pair,
    resolve_prototype,
    summarize,
)
from ..config import FinetuneConfig, command_config
from ..data import Dataset, as_dataset, splits_for
from ..errors import ConfigError, I2XError
from ..rundir import Run, run_lock
from .faithfulness import blurred, fill_pixels
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
    """:func:`finetune` with the run directory locked: the run's pair, prototype, E and test set to :func:`tune`."""
    t_start = time.perf_counter()
    fc.control_names()  # a control the intervention has not: refused before the model and test set are loaded
    a, b = resolve_pair(run, fc.pair)
    ia, es = run.arrays("intensity"), run.explain_set()
    k = resolve_prototype(run, fc.prototype, a, b, ia["contain"].shape[1])
    _curated(ia["contain"], es["labels"], a, b, k, run.classes)  # refused when it would change nothing
    dev = resolve_device(fc.device)
    model = load_model(run.path, device=dev) if model is None else model.to(dev)
    t0 = time.perf_counter()
    x_t, y_t = _test_set(run, test).tensors()
    t_load = time.perf_counter() - t0
    out = out_dir(run, out)
    res = tune(
        model, torch.from_numpy(es["images"]), torch.from_numpy(es["labels"]), x_t, y_t,  # E as the model saw it
        pair=(a, b), prototype=k, contain=ia["contain"], assignments=run.prototypes().assignments,
        background=ia.get("background"), classes=run.classes, config=fc, device=dev,
        batch_size=int(fc.batch_size or run.config.batch_size), progress=progress, examples=out,
    )  # fmt: skip
    res = replace(res, timings={"load_test": round(t_load, 3), **res.timings,
                                "total": round(time.perf_counter() - t_start, 3)})  # fmt: skip
    res.save(out)
    return replace(res, path=out)


def tune(
    model: torch.nn.Module,
    x_e: torch.Tensor,
    y_e: torch.Tensor,
    x_t: torch.Tensor,
    y_t: torch.Tensor,
    *,
    pair: tuple[int, int],
    prototype: int,
    contain: np.ndarray,
    assignments: np.ndarray,
    classes: list[str],
    config: FinetuneConfig,
    batch_size: int,
    background: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    examples: Path | None = None,
) -> FinetuneResult:
    """Stage 8 on arrays (what :func:`finetune` runs on a run directory): fine-tune ``model`` from its
    weights on E (``x_e`` normalised, ``y_e``) for every schedule and seed of ``config``, with the I2X
    intervention on the pair's samples containing ``prototype`` (removed, or its cells of
    ``assignments`` (N, H', W') imputed) and the control arms, evaluated on (``x_t``, ``y_t``).
    ``model``'s weights are restored afterwards; ``examples``: a folder for the perturbed examples."""
    fc, (a, b), k = config, pair, int(prototype)
    t_start = time.perf_counter()
    scheds = parse_schedules(fc.schedules)
    y_np = np.asarray(y_e)
    keep = curated_indices(contain, y_np, a, b, k)
    dev = torch.device(device)
    y_t = np.asarray(y_t.numpy() if isinstance(y_t, torch.Tensor) else y_t)
    tuner = _Tuner(model, x_e, y_e, x_t, y_t, len(classes), (a, b), fc.lr, int(batch_size), dev, progress)
    seeds = tuple(int(fc.seed) + r for r in range(int(fc.repeats)))
    full = np.arange(len(y_np))
    names = fc.control_names()
    perturb, t_perturb = {}, 0.0
    if fc.intervention == "perturb":  # E kept whole, k's cells imputed in the samples removal would drop
        t1 = time.perf_counter()
        rows, cells = perturb_cells(assignments, contain, y_np, a, b, k)
        x_cur = perturbed_images(x_e, rows, cells, fc.fill, fc.seed)
        t_perturb = time.perf_counter() - t1
        sets, keep = {"full": (x_e, full), "curated": (x_cur, full)}, full
        perturb = {"fill": fc.fill, "perturbed_indices": rows, "perturbed_cells": int(cells.sum())}
        if examples is not None:
            _save_examples(Path(examples), x_e, x_cur, rows, cells)
    else:
        sets = {"full": (x_e, full), "curated": (x_e, keep)}
    try:
        baseline = tuner.evaluate()
        results = tuner.arms(scheds, seeds, lambda s: sets)
        if fc.intervention == "perturb":
            args = (assignments, contain, y_np, a, b, k)
            controls = {c: tuner.perturb_control(c, args, background, scheds, seeds, fc.fill) for c in names}
        else:
            args = (contain, y_np, a, b, k, len(full) - len(keep))
            controls = {c: tuner.control(c, args, background, scheds, seeds) for c in names}
    finally:
        model.load_state_dict(tuner.base)
    return FinetuneResult(
        pair=(a, b),
        names=(classes[a], classes[b]),
        prototype=k,
        explain_size=len(y_np),
        curated_indices=keep,
        lr=float(fc.lr),
        batch_size=tuner.bs,
        seeds=seeds,
        schedules=results,
        baseline=baseline,
        test_size=len(y_t),
        controls={c: v for c, v in controls.items() if v is not None},
        controls_left_out=tuple(c for c, v in controls.items() if v is None),
        timings={"perturb": round(t_perturb, 3), "tune": round(time.perf_counter() - t_start, 3)},
        intervention=fc.intervention,
        **perturb,
    )


def out_dir(run: Run, out) -> Path:
    """Where the results go: ``out``, default ``DIR/finetune``."""
    return Path(out) if out is not None else run.path / "finetune"


EXAMPLES = "perturbed.npz"  # a few I2X-perturbed samples before / after, for the report
N_EXAMPLES = 6


def perturbed_images(x: torch.Tensor, rows: np.ndarray, cells: np.ndarray, fill: str, seed: int) -> torch.Tensor:
    """A copy of the images ``x`` (N, C, H, W) with, in each of ``rows``, the pixels under its ``cells``
    (len(rows), H', W') replaced by ``fill`` (the fills of ``i2x faithfulness``; the imputation noise
    from ``numpy.random.default_rng([seed, 27])``)."""
    out = x.clone()
    if not len(rows):
        return out
    xn = x.detach().cpu().numpy()
    base = blurred(x, cells.shape[1:]) if fill == "blur" else None
    masks = pixel_masks(cells, *xn.shape[-2:])
    filled = fill_pixels(xn, np.asarray(rows), masks, fill, base, np.random.default_rng([seed, 27]))
    out[torch.as_tensor(rows)] = torch.from_numpy(np.ascontiguousarray(filled, dtype=np.float32)).to(x.dtype)
    return out


def _save_examples(out: Path, x_e, x_cur, rows, cells) -> None:
    """The first :data:`N_EXAMPLES` perturbed samples before and after, with their cells (the report's figure)."""
    from .. import store

    pick = np.asarray(rows[:N_EXAMPLES], dtype=np.int64)
    store.save_npz(out / EXAMPLES, rows=pick, before=x_e[pick].numpy(), after=x_cur[pick].numpy(),
                   cells=np.asarray(cells[: len(pick)], bool))  # fmt: skip


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
        return as_dataset(test, classes=run.classes, name="test=")
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
                _train_schedule(self.model, sched, s, sets_for(s), self.y_e, self.lr, self.bs, self.dev)
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
            lambda s: {"full": (self.x_e, full), "curated": (self.x_e, np.setdiff1d(full, draws[s][0]))},
        )
        info = {"removed": [int(len(draws[s][0])) for s in seeds]}
        return {"schedules": arms, **info, **_other_prototype(name, [draws[s][1] for s in seeds])}

    def perturb_control(self, name: str, args: tuple, background, scheds, seeds, fill: str) -> dict | None:
        """Perturbation control ``name``: the schedules that use the curated set, with E perturbed where
        the control says (drawn per seed, imputed with the same fill); None when it has no cell to perturb."""
        draws = {s: control_perturbations(name, *args, s, background) for s in seeds}
        if any(not cells.any() for _, cells, _ in draws.values()):
            return None
        full = np.arange(len(self.y_e))

        # re-imputed for each schedule of a seed: 0.1-2.6 % of an epoch (benchmarks/bench_perturb.py), cheaper
        # than holding every seed's perturbed E
        def sets_for(s):
            return {"full": (self.x_e, full), "curated": (perturbed_images(self.x_e, *draws[s][:2], fill, s), full)}

        arms = self.arms([x for x in scheds if "curated" in x.split("+")], seeds, sets_for)
        info = {"perturbed": [int(len(draws[s][0])) for s in seeds], "cells": [int(draws[s][1].sum()) for s in seeds]}
        return {"schedules": arms, **info, **_other_prototype(name, [draws[s][2] for s in seeds])}


def _other_prototype(name: str, infos: list[dict]) -> dict:
    """The other-prototype control's prototype per seed (and the one, when every seed drew the same); {} otherwise."""
    if name != "other-prototype":
        return {}
    protos = [i["prototype"] for i in infos]
    return {"prototypes": protos, "prototype": protos[0] if len(set(protos)) == 1 else None}


def _train_schedule(model, sched: str, seed: int, sets: dict, y_e, lr: float, bs: int, dev) -> None:
    """One schedule ("curated+full": one epoch per stage) with one Adam kept across its stages; ``sets``:
    each stage name's (images, rows of E) — E itself, or E with cells perturbed."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, leave it as it was
        torch.manual_seed(seed)
        model.train()
        for stage, set_name in enumerate(sched.split("+")):
            x_e, rows = sets[set_name]
            perm = rows[torch.randperm(len(rows), generator=seeded_generator(seed, stage)).numpy()]  # batch order
            ipe = iterations_per_epoch(len(perm), bs)
            for b in range(ipe):
                idx = torch.from_numpy(batch_rows(perm, b, ipe, bs))
                loss = torch.nn.functional.cross_entropy(class_scores(model(x_e[idx].to(dev))), y_e[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


__all__ = ["finetune", "tune", "perturbed_images"]
