"""Stage 8: explanation-guided fine-tuning (paper §3.5, Table 1).

For a confused class pair (a, b) and its top uncertain prototype k*, the *curated set* is the
explanation set E minus the samples of class a or b that contain k* (:func:`curated_indices`,
pure numpy). Starting from the run's final weights each time, the model is fine-tuned one
epoch per stage for every schedule (``full``, ``curated``, ``full+full``, ``curated+curated``,
``curated+full``) and every seed, then evaluated on the test set. Results go to
``DIR/finetune/results.json`` and ``DIR/finetune/table.md``; the run's weights are only read.

Choices the paper leaves open (its learning rate did not survive extraction):

- optimiser Adam, lr 1e-4, no weight decay, constant: 1/30 of the training peak (3e-3), so a
  fine-tuning epoch nudges the trained model instead of retraining it;
- batch size = the run's, no augmentation (the curated set is used exactly as selected);
- one optimiser per schedule, kept across its stages (the stages continue one fine-tuning);
- repeat r uses seed ``seed + r`` for *every* schedule, so schedules can be compared paired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from . import store
from .errors import I2XError

SETS = ("full", "curated")
DEFAULT_SCHEDULES = ("full", "curated", "full+full", "curated+curated", "curated+full")
DEFAULT_LR = 1e-4  # Adam; 1/30 of the training peak lr (3e-3): nudge, do not retrain


def curated_indices(contain: np.ndarray, labels: np.ndarray, a: int, b: int, k: int) -> np.ndarray:
    """Rows of E that stay in the curated set: all but the class-a/b samples containing ``k``.

    ``contain`` (N, K) bool, ``labels`` (N,) int. Returns sorted int64 row indices into E.
    """
    contain = np.asarray(contain, dtype=bool)
    labels = np.asarray(labels)
    drop = np.isin(labels, (a, b)) & contain[:, k]                # (N,)
    return np.flatnonzero(~drop).astype(np.int64)


def parse_schedules(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"full,curated+full"`` -> ``["full", "curated+full"]``; every stage is full or curated."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n.replace("→", "+").replace("->", "+") for n in names if n]
    if not names:
        raise I2XError("--schedules is empty: give e.g. full,curated,full+full,curated+curated,curated+full")
    for n in names:
        bad = [s for s in n.split("+") if s not in SETS]
        if bad:
            raise I2XError(f"--schedules {n!r}: stage {bad[0]!r} is not one of {', '.join(SETS)}; "
                           "join stages with '+', e.g. curated+full")
    if len(set(names)) != len(names):
        raise I2XError(f"--schedules lists a schedule twice ({','.join(names)}): give each once")
    return names


def pair_counts(confusion: np.ndarray, a: int, b: int) -> dict:
    """a→b (true a predicted b), b→a, and their sum a↔b from a confusion matrix (rows = true)."""
    cm = np.asarray(confusion)
    return {"a_to_b": int(cm[a, b]), "b_to_a": int(cm[b, a]), "ab": int(cm[a, b] + cm[b, a])}


def summarize(repeats: list[dict]) -> dict:
    """Mean and sample std (ddof=1, as for the paper's ± over 5 repeats) of each metric."""
    out = {}
    for m in ("accuracy", "a_to_b", "b_to_a", "ab"):
        v = np.array([r[m] for r in repeats], dtype=float)
        out[f"{m}_mean"] = float(v.mean())
        out[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def paired_comparison(x: list[float], y: list[float]) -> dict:
    """Paired x − y over seeds: mean difference, its std, wins/losses/ties, two-sided sign test
    (exact binomial on the non-tied pairs) and paired t-test p-values (None when undefined)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    d = x - y
    wins, losses = int((d < 0).sum()), int((d > 0).sum())  # "win" = x has fewer errors than y
    n = wins + losses
    sign_p = float(stats.binomtest(wins, n, 0.5).pvalue) if n else None
    t_p = None
    if len(d) > 1 and d.std(ddof=1) > 0:
        t_p = float(stats.ttest_rel(x, y).pvalue)
    return {"mean_diff": float(d.mean()), "std_diff": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
            "x_fewer": wins, "x_more": losses, "ties": int((d == 0).sum()),
            "sign_test_p": sign_p, "paired_t_p": t_p}


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` measured; ``to_dict()`` is ``results.json``."""

    pair: tuple[int, int]
    names: tuple[str, str]
    prototype: int
    explain_size: int
    curated_indices: np.ndarray          # rows of E (record/explain_set.npz) kept
    lr: float
    batch_size: int
    seeds: tuple[int, ...]
    schedules: dict                      # name -> {"repeats": [...], "<metric>_mean": ..., ...}
    baseline: dict                       # the final model, not fine-tuned
    test_size: int
    timings: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def curated_size(self) -> int:
        return int(len(self.curated_indices))

    def comparison(self, x: str = "curated+full", y: str = "full+full", metric: str = "ab") -> dict | None:
        if x not in self.schedules or y not in self.schedules:
            return None
        rx = {r["seed"]: r[metric] for r in self.schedules[x]["repeats"]}
        ry = {r["seed"]: r[metric] for r in self.schedules[y]["repeats"]}
        seeds = [s for s in rx if s in ry]
        return {"x": x, "y": y, "metric": metric, "seeds": seeds,
                **paired_comparison([rx[s] for s in seeds], [ry[s] for s in seeds])}

    def to_dict(self) -> dict:
        removed = np.setdiff1d(np.arange(self.explain_size), self.curated_indices)
        return {"pair": list(self.pair), "names": list(self.names), "prototype": int(self.prototype),
                "curated_size": self.curated_size, "explain_size": int(self.explain_size),
                "curated_indices": self.curated_indices.tolist(), "removed_indices": removed.tolist(),
                "lr": self.lr, "optimizer": "Adam", "batch_size": self.batch_size, "epochs_per_stage": 1,
                "seeds": list(self.seeds), "test_size": self.test_size, "baseline": self.baseline,
                "schedules": self.schedules, "comparison": self.comparison(), "timings": self.timings}

    def table(self) -> str:
        """Markdown in the layout of the paper's Table 1 (mean ± std over the repeats)."""
        a, b = self.names
        lines = [f"Pair {a}↔{b}, prototype P-{self.prototype}; curated set {self.curated_size} of "
                 f"{self.explain_size} (removed {self.explain_size - self.curated_size} samples of class {a} or {b} "
                 f"containing P-{self.prototype}); Adam lr {self.lr:g}, batch {self.batch_size}, one epoch per stage; "
                 f"seeds {list(self.seeds)}; test set {self.test_size} images; mean ± std (ddof=1).", "",
                 f"| schedule | acc % | {a}→{b} | {b}→{a} | {a}↔{b} |", "|---|---|---|---|---|"]
        bl = self.baseline
        lines.append(f"| (final model, no fine-tuning) | {100 * bl['accuracy']:.2f} | {bl['a_to_b']} | {bl['b_to_a']} | {bl['ab']} |")
        for name, s in self.schedules.items():
            lines.append(f"| {name.replace('+', '→')} | {100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f} "
                         f"| {s['a_to_b_mean']:.2f} ± {s['a_to_b_std']:.2f} | {s['b_to_a_mean']:.2f} ± {s['b_to_a_std']:.2f} "
                         f"| {s['ab_mean']:.2f} ± {s['ab_std']:.2f} |")
        c = self.comparison()
        if c is not None:
            def p(v):
                return "n/a" if v is None else f"{v:.3g}"

            lines += ["", f"Paired over seeds {c['seeds']}: {a}↔{b} errors of curated→full minus full→full = "
                          f"{c['mean_diff']:+.2f} ± {c['std_diff']:.2f}; curated→full fewer in {c['x_fewer']}, more in "
                          f"{c['x_more']}, tied in {c['ties']}; sign test p = {p(c['sign_test_p'])}, paired t p = {p(c['paired_t_p'])}."]
        return "\n".join(lines) + "\n"

    def save(self, out: str | Path) -> Path:
        """results.json (arrays and numbers) first, then table.md; both written atomically."""
        out = Path(out)
        store.save_json(out / "results.json", self.to_dict())
        data = self.table().encode()
        store._atomic_write(out / "table.md", lambda fh: fh.write(data))
        return out


def _resolve_pair(run, pair, names: list[str]) -> tuple[int, int]:
    from .cli import _class_index

    if pair is None or pair == "auto" or (isinstance(pair, (list, tuple)) and list(pair) == ["auto"]):
        pairs = run.explanations().get("pairs", [])
        if not pairs:
            raise I2XError("--pair auto: the final model confuses no pair of classes on the test set; give --pair A B")
        return int(pairs[0]["a"]), int(pairs[0]["b"])
    if isinstance(pair, str) or len(pair) != 2:
        raise I2XError(f"--pair {pair!r}: give two classes (--pair A B) or auto")
    a, b = (_class_index(names, str(c), "--pair") for c in pair)
    if a == b:
        raise I2XError("--pair needs two different classes")
    return a, b


def _resolve_prototype(run, prototype, a: int, b: int, names: list[str], K: int) -> int:
    from .explain import ExplainConfig, pair_explanation

    if prototype is None or prototype == "auto":
        ex = run.explanations()
        pe = next((p for p in ex.get("pairs", []) if {p["a"], p["b"]} == {a, b}), None)
        if pe is None:
            lab = run.explain_set()["labels"]
            pe = pair_explanation(run.dynamics().W, run.arrays("intensity")["contain"], lab, a, b,
                                  ExplainConfig(**ex.get("config", {})))
        if not pe["uncertain"]:
            raise I2XError(f"--prototype auto: the pair {names[a]}↔{names[b]} has no uncertain prototype (none in both "
                           "classes changes sign over training); give --prototype K explicitly or another --pair")
        return int(pe["uncertain"][0]["prototype"])
    try:
        k = int(prototype)
    except (TypeError, ValueError):
        raise I2XError(f"--prototype {prototype!r}: give a prototype index 0..{K - 1} or auto") from None
    if not 0 <= k < K:
        raise I2XError(f"--prototype {k} is out of range: this run has prototypes 0..{K - 1}")
    return k


def finetune(run_dir: str | Path, pair=None, prototype=None, schedules=DEFAULT_SCHEDULES, repeats: int = 5,
             lr: float = DEFAULT_LR, seed: int = 0, batch_size: int | None = None, test=None,
             out: str | Path | None = None, device: str = "cpu", progress: bool = True) -> FinetuneResult:
    """Guided fine-tuning of a finished run; writes ``out`` (default ``DIR/finetune``).

    ``pair``: (a, b) as names or indices, or None/"auto" (most confused test pair).
    ``prototype``: int, or None/"auto" (top uncertain prototype of the pair).
    ``test``: an :class:`i2x.data.Dataset` to evaluate on; default: the run's test set reloaded
    with ``load_splits`` from its config (needed when the run was made with custom ``splits``).
    """
    import torch
    from tqdm.auto import tqdm

    from .config import resolve_device
    from .data import Dataset, load_splits
    from .pipeline import Run, check_complete, load_model
    from .train import _gen, predict

    t_start = time.perf_counter()
    run = Run(run_dir)
    check_complete(run)
    names = run.classes
    scheds = parse_schedules(schedules)
    if int(repeats) < 1:
        raise I2XError(f"--repeats must be ≥ 1, got {repeats}")
    if not (lr > 0 and np.isfinite(lr)):
        raise I2XError(f"--lr must be a positive number, got {lr}")
    cfg = run.config
    bs = int(batch_size or cfg.batch_size)
    if bs < 1:
        raise I2XError(f"batch_size must be ≥ 1, got {bs}")
    a, b = _resolve_pair(run, pair, names)
    contain = run.arrays("intensity")["contain"]                                   # (N, K) bool
    k = _resolve_prototype(run, prototype, a, b, names, contain.shape[1])

    es = run.explain_set()
    labels = es["labels"]
    keep = curated_indices(contain, labels, a, b, k)
    if len(keep) == len(labels):
        raise I2XError(f"--prototype {k} is in no sample of class {names[a]} or {names[b]}: the curated set would equal "
                       "the explanation set; pick a prototype contained in the pair (see `i2x explain DIR --pair A B`)")
    if len(keep) == 0:
        raise I2XError(f"--prototype {k}: removing its {names[a]}/{names[b]} samples empties the explanation set")
    m = run.manifest["data"]
    eset = Dataset(es["images"], labels, names, tuple(m["mean"]), tuple(m["std"]))
    x_e, y_e = eset.tensors()                                                      # (N, C, H, W), (N,)

    t0 = time.perf_counter()
    if test is None:
        test = load_splits(cfg.dataset, cfg.data_dir, seed=cfg.seed, test_subset=cfg.test_subset,
                           subset_seed=cfg.explain_seed).test  # the run's own test subset, as i2x.run draws it
        if len(test) != m["test_size"]:
            raise I2XError(f"the run was evaluated on {m['test_size']} test images but reloading {cfg.dataset!r} gives "
                           f"{len(test)}: pass the run's own test set (finetune(..., test=Dataset))")
    x_t, y_t = test.tensors()
    y_t = y_t.numpy()
    t_load = time.perf_counter() - t0

    dev = resolve_device(device)
    model = load_model(run.path, device=dev)
    base = {n: v.detach().clone() for n, v in model.state_dict().items()}  # final weights, in memory only
    C = len(names)

    def evaluate() -> dict:
        pred = predict(model, x_t, device=dev).argmax(1)
        cm = confusion_matrix(y_t, pred, labels=np.arange(C))   # (C, C), rows = true class
        return {"accuracy": float((pred == y_t).mean()), "confusion": cm.tolist(), **pair_counts(cm, a, b)}

    baseline = evaluate()
    sets = {"full": np.arange(len(labels)), "curated": keep}
    seeds = tuple(int(seed) + r for r in range(int(repeats)))
    results = {s: {"repeats": []} for s in scheds}
    bar = tqdm(total=len(scheds) * len(seeds), desc="finetune", disable=not progress, leave=False)
    for sched in scheds:
        for s in seeds:
            t1 = time.perf_counter()
            model.load_state_dict(base)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seed it, leave it as it was
                torch.manual_seed(s)
                model.train()
                for stage, set_name in enumerate(sched.split("+")):
                    rows = sets[set_name]
                    perm = rows[torch.randperm(len(rows), generator=_gen(s, stage)).numpy()]  # seeded batch order
                    for i in range(0, len(perm), bs):
                        idx = torch.from_numpy(perm[i : i + bs])
                        loss = torch.nn.functional.cross_entropy(model(x_e[idx].to(dev)), y_e[idx].to(dev))
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
            t_ft = time.perf_counter() - t1
            r = evaluate()
            results[sched]["repeats"].append({"seed": s, **r, "seconds": round(time.perf_counter() - t1, 3),
                                              "finetune_seconds": round(t_ft, 3)})
            bar.update(1)
        results[sched].update(summarize(results[sched]["repeats"]))
    bar.close()
    model.load_state_dict(base)

    res = FinetuneResult(pair=(a, b), names=(names[a], names[b]), prototype=k, explain_size=len(labels),
                         curated_indices=keep, lr=float(lr), batch_size=bs, seeds=seeds, schedules=results,
                         baseline=baseline, test_size=len(y_t),
                         timings={"load_test": round(t_load, 3), "total": round(time.perf_counter() - t_start, 3)})
    out = Path(out) if out is not None else run.path / "finetune"
    res.save(out)
    return replace(res, path=out)


# CLI ------------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="explanation-guided fine-tuning (paper Table 1) of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--pair", nargs="+", default=["auto"], metavar="A B",
                   help="two classes (names or indices), or auto = most confused test pair (default)")
    p.add_argument("--prototype", default="auto", help="prototype index K, or auto = top uncertain prototype of the pair")
    p.add_argument("--schedules", default=",".join(DEFAULT_SCHEDULES),
                   help="comma-separated schedules; stages full|curated joined by '+' (one epoch each)")
    p.add_argument("--repeats", type=int, default=5, help="seeds per schedule: seed, seed+1, ...")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's batch size")
    p.add_argument("--out", default=None, help="output folder (default DIR/finetune)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd(a) -> int:
    pair = a.pair
    if pair == ["auto"]:
        pair = "auto"
    elif len(pair) != 2:
        raise I2XError(f"--pair {' '.join(pair)}: give two classes (--pair A B) or --pair auto")
    res = finetune(a.run_dir, pair=pair, prototype=a.prototype, schedules=a.schedules, repeats=a.repeats,
                   lr=a.lr, seed=a.seed, batch_size=a.batch_size, out=a.out, device=a.device, progress=not a.quiet)
    print(res.table(), end="")
    print(f"wrote {res.path / 'results.json'} and {res.path / 'table.md'} ({res.timings['total']:.1f} s)")
    return 0


__all__ = ["finetune", "curated_indices", "parse_schedules", "pair_counts", "paired_comparison", "FinetuneResult",
           "DEFAULT_SCHEDULES", "DEFAULT_LR"]
