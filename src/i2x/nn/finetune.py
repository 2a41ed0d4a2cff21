"""Stage 8, the training loop of explanation-guided fine-tuning (paper §3.5, Table 1).

The curated set, the schedules and the statistics are torch-free (:mod:`i2x.analysis.finetune`);
the settings and their reasons are :class:`i2x.config.FinetuneConfig`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from ..analysis.finetune import (
    FinetuneResult,
    curated_indices,
    pair_counts,
    parse_schedules,
    resolve_pair,
    resolve_prototype,
    summarize,
)
from ..config import FinetuneConfig, finetune_config
from ..data import Dataset, load_splits
from ..errors import I2XError
from ..rundir import Run
from .pipeline import load_model
from .train import predict
from .utils import resolve_device, seeded_generator


def finetune(
    run_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    test: Dataset | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **overrides,
) -> FinetuneResult:
    """Guided fine-tuning of a finished run; writes ``out`` (default ``DIR/finetune``).

    Settings (:class:`~i2x.config.FinetuneConfig`) from ``config`` and keywords: ``pair`` (a, b) as
    names or indices, or "auto" (most confused test pair); ``prototype`` an int or "auto" (top
    uncertain prototype of the pair); ``schedules``, ``repeats``, ``lr``, ``seed``, ``batch_size``,
    ``device``. ``test``: an :class:`i2x.data.Dataset` to evaluate on; default: the run's test set
    reloaded from its config (needed when the run was made with custom ``splits``).
    """
    t_start = time.perf_counter()
    fc = finetune_config(config, **overrides)
    run = Run(run_dir).check_complete("finetune")
    scheds = parse_schedules(fc.schedules)
    a, b = resolve_pair(run, fc.pair)
    contain = run.arrays("intensity")["contain"]  # (N, K) bool
    k = resolve_prototype(run, fc.prototype, a, b, contain.shape[1])
    es = run.explain_set()
    keep = _curated(contain, es["labels"], a, b, k, run.classes)
    m = run.manifest["data"]
    x_e, y_e = Dataset(es["images"], es["labels"], run.classes, tuple(m["mean"]), tuple(m["std"])).tensors()
    t0 = time.perf_counter()
    x_t, y_t = _test_set(run, test).tensors()
    t_load = time.perf_counter() - t0
    dev = resolve_device(fc.device)
    model = load_model(run.path, device=dev)
    base = {n: v.detach().clone() for n, v in model.state_dict().items()}  # final weights, in memory only
    bs = int(fc.batch_size or run.config.batch_size)

    def evaluate() -> dict:
        pred = predict(model, x_t, device=dev).argmax(1)
        cm = confusion_matrix(y_t.numpy(), pred, labels=np.arange(len(run.classes)))  # (C, C), rows = true
        return {"accuracy": float((pred == y_t.numpy()).mean()), "confusion": cm.tolist(), **pair_counts(cm, a, b)}

    baseline = evaluate()
    sets = {"full": np.arange(len(y_e)), "curated": keep}
    seeds = tuple(int(fc.seed) + r for r in range(int(fc.repeats)))
    results = _run_schedules(model, base, scheds, seeds, sets, x_e, y_e, fc.lr, bs, dev, evaluate, progress)
    model.load_state_dict(base)
    res = FinetuneResult(
        pair=(a, b),
        names=(run.classes[a], run.classes[b]),
        prototype=k,
        explain_size=len(y_e),
        curated_indices=keep,
        lr=float(fc.lr),
        batch_size=bs,
        seeds=seeds,
        schedules=results,
        baseline=baseline,
        test_size=len(y_t),
        timings={"load_test": round(t_load, 3), "total": round(time.perf_counter() - t_start, 3)},
    )
    out = Path(out) if out is not None else run.path / "finetune"
    res.save(out)
    return replace(res, path=out)


def _curated(contain, labels, a: int, b: int, k: int, names: list[str]) -> np.ndarray:
    keep = curated_indices(contain, labels, a, b, k)
    if len(keep) == len(labels):
        raise I2XError(
            f"--prototype {k} is in no sample of class {names[a]} or {names[b]}: the curated set would "
            "equal the explanation set; pick a prototype contained in the pair "
            "(see `i2x explain DIR --pair A B`)"
        )
    if len(keep) == 0:
        raise I2XError(f"--prototype {k}: removing its {names[a]}/{names[b]} samples empties the explanation set")
    return keep


def _test_set(run: Run, test: Dataset | None) -> Dataset:
    """The caller's test set, or the run's own test subset reloaded as ``i2x.run`` drew it."""
    if test is not None:
        return test
    cfg, m = run.config, run.manifest["data"]
    test = load_splits(
        cfg.dataset, cfg.data_dir, seed=cfg.seed, test_subset=cfg.test_subset, subset_seed=cfg.explain_seed
    ).test
    if len(test) != m["test_size"]:
        raise I2XError(
            f"the run was evaluated on {m['test_size']} test images but reloading {cfg.dataset!r} gives "
            f"{len(test)}: pass the run's own test set (finetune(..., test=Dataset))"
        )
    return test


def _run_schedules(
    model,
    base: dict,
    scheds: list[str],
    seeds: tuple[int, ...],
    sets: dict,
    x_e,
    y_e,
    lr: float,
    bs: int,
    dev,
    evaluate,
    progress: bool,
) -> dict:
    """Every schedule x seed from the final weights; per schedule its repeats and their summary."""
    from tqdm.auto import tqdm

    results = {s: {"repeats": []} for s in scheds}
    bar = tqdm(total=len(scheds) * len(seeds), desc="finetune", disable=not progress, leave=False)
    for sched in scheds:
        for s in seeds:
            t1 = time.perf_counter()
            model.load_state_dict(base)
            _train_schedule(model, sched, s, sets, x_e, y_e, lr, bs, dev)
            t_ft = time.perf_counter() - t1
            r = evaluate()
            results[sched]["repeats"].append(
                {"seed": s, **r, "seconds": round(time.perf_counter() - t1, 3), "finetune_seconds": round(t_ft, 3)}
            )
            bar.update(1)
        results[sched].update(summarize(results[sched]["repeats"]))
    bar.close()
    return results


def _train_schedule(model, sched: str, seed: int, sets: dict, x_e, y_e, lr: float, bs: int, dev) -> None:
    """One schedule ("curated+full": one epoch per stage) with one Adam kept across its stages."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, leave it as it was
        torch.manual_seed(seed)
        model.train()
        for stage, set_name in enumerate(sched.split("+")):
            rows = sets[set_name]
            perm = rows[torch.randperm(len(rows), generator=seeded_generator(seed, stage)).numpy()]  # batch order
            for i in range(0, len(perm), bs):
                idx = torch.from_numpy(perm[i : i + bs])
                loss = torch.nn.functional.cross_entropy(model(x_e[idx].to(dev)), y_e[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


__all__ = ["finetune"]
