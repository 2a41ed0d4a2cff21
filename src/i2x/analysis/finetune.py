"""Stage 8, explanation-guided fine-tuning (paper §3.5, Table 1): the torch-free part (the
curated set, the schedules, the statistics, the result); the training loop is :mod:`i2x.nn.finetune`.

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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import store
from ..config import CONTROLS, PERTURB_CONTROLS
from ..errors import ConfigError
from .explain import confused_pairs
from .faithfulness import deletion_cells, random_cells
from .stats import format_p, holm, mean_std, paired_comparison

SETS = ("full", "curated")


def curated_indices(contain: np.ndarray, labels: np.ndarray, a: int, b: int, k: int) -> np.ndarray:
    """Rows of E that stay in the curated set: all but the class-a/b samples containing ``k``.

    ``contain`` (N, K) bool, ``labels`` (N,) int. Returns sorted int64 row indices into E.
    """
    contain = np.asarray(contain, dtype=bool)
    labels = np.asarray(labels)
    drop = np.isin(labels, (a, b)) & contain[:, k]  # (N,)
    return np.flatnonzero(~drop).astype(np.int64)


def control_removals(
    name: str,
    contain: np.ndarray,
    labels: np.ndarray,
    a: int,
    b: int,
    k: int,
    n_removed: int,
    seed: int,
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Rows of E a control arm removes instead of the I2X choice, for one seed, and what it drew.

    ``random-pair``: ``n_removed`` random samples of class a or b (a fresh draw per seed);
    ``random-matched``: from each of class a and class b, as many random samples as the I2X removal
    takes from that class (the same class mix; a draw may include I2X's own samples); nothing when
    the I2X removal is all of both classes' samples (the draw could only repeat it);
    ``other-prototype``: the a/b samples containing another non-background prototype of the pair,
    the one whose count is closest to ``n_removed`` (ties drawn with the seed);
    ``random-any``: ``n_removed`` random samples of any class.
    """
    contain, labels = np.asarray(contain, dtype=bool), np.asarray(labels)
    rng = np.random.default_rng([seed, CONTROLS.index(name)])
    pair = np.flatnonzero(np.isin(labels, (a, b)))
    if name == "random-pair":
        return np.sort(rng.choice(pair, size=min(n_removed, len(pair)), replace=False)), {}
    if name == "random-any":
        return np.sort(rng.choice(len(labels), size=min(n_removed, len(labels)), replace=False)), {}
    if name == "random-matched":
        i2x = np.isin(labels, (a, b)) & contain[:, k]  # the I2X removal, whose class counts are matched
        if (i2x == np.isin(labels, (a, b))).all():
            return np.zeros(0, dtype=np.int64), {}
        rows = [
            rng.choice(np.flatnonzero(labels == c), size=int((i2x & (labels == c)).sum()), replace=False)
            for c in (a, b)
        ]
        return np.sort(np.concatenate(rows)).astype(np.int64), {}
    counts = contain[pair].sum(0)  # (K,) pair samples containing each prototype
    ok = (counts > 0) & (np.arange(len(counts)) != k)
    if background is not None:
        ok &= ~np.asarray(background, dtype=bool)
    if not ok.any():
        return np.zeros(0, dtype=np.int64), {"prototype": None}
    gap = np.where(ok, np.abs(counts - n_removed), np.iinfo(np.int64).max)
    other = int(rng.choice(np.flatnonzero(gap == gap.min())))
    return pair[contain[pair, other]], {"prototype": other}


def perturb_cells(assignments: np.ndarray, contain: np.ndarray, labels: np.ndarray, a: int, b: int, k: int):
    """intervention=perturb: the rows of E whose cells are imputed — the samples the removal drops
    (class a or b, containing ``k``) — and those cells, k's assigned cells in each ((rows,), (rows, H', W') bool)."""
    rows = np.setdiff1d(np.arange(len(labels)), curated_indices(contain, labels, a, b, k))
    return rows, deletion_cells(np.asarray(assignments)[rows], np.full(len(rows), k))


def control_perturbations(
    name: str,
    assignments: np.ndarray,
    contain: np.ndarray,
    labels: np.ndarray,
    a: int,
    b: int,
    k: int,
    seed: int,
    background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows of E and the cells (rows, H', W') a perturbation control imputes instead of the I2X choice,
    for one seed, and what it drew.

    ``random-cells``: the I2X samples, in each as many random cells as k has there, drawn among the
    cells not assigned to k (the null of ``i2x faithfulness``); ``other-prototype``: the a/b samples
    containing another non-background prototype of the pair (the one closest in count, as for
    removal), that prototype's cells; ``random-matched``: from each of class a and b, as many random
    samples as I2X perturbs from that class, k's cells in them (none where k has no cell; nothing
    when I2X perturbs every sample of both classes).
    """
    rows, own = perturb_cells(assignments, contain, labels, a, b, k)
    rng = np.random.default_rng([seed, 100 + PERTURB_CONTROLS.index(name)])
    assign = np.asarray(assignments)
    if name == "random-cells":
        return rows, random_cells(assign[rows], np.full(len(rows), k), 1, rng)[:, 0], {}
    if name == "random-matched":
        drawn, _ = control_removals("random-matched", contain, labels, a, b, k, len(rows), seed)
        return drawn, deletion_cells(assign[drawn], np.full(len(drawn), k)), {}
    other_rows, info = control_removals("other-prototype", contain, labels, a, b, k, len(rows), seed, background)
    if info["prototype"] is None:
        return other_rows, np.zeros((0, *assign.shape[1:]), bool), info
    return other_rows, deletion_cells(assign[other_rows], np.full(len(other_rows), info["prototype"])), info


def parse_schedules(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"full,curated+full"`` -> ``["full", "curated+full"]``; every stage is full or curated."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n.replace("→", "+").replace("->", "+") for n in names if n]
    if not names:
        raise ConfigError(
            "schedules", spec, "is empty: give e.g. schedules=full,curated,full+full,curated+curated,curated+full"
        )
    for n in names:
        bad = [s for s in n.split("+") if s not in SETS]
        if bad:
            raise ConfigError(
                "schedules",
                n,
                f"stage {bad[0]!r} is not one of {', '.join(SETS)}; join stages with '+', e.g. curated+full",
            )
    if len(set(names)) != len(names):
        raise ConfigError("schedules", ",".join(names), "lists a schedule twice: give each once")
    return names


def pair_counts(confusion: np.ndarray, a: int, b: int) -> dict:
    """a→b (true a predicted b), b→a, and their sum a↔b from a confusion matrix (rows = true)."""
    cm = np.asarray(confusion)
    return {"a_to_b": int(cm[a, b]), "b_to_a": int(cm[b, a]), "ab": int(cm[a, b] + cm[b, a])}


def summarize(repeats: list[dict]) -> dict:
    """Mean and sample std (:func:`~i2x.analysis.stats.mean_std`: ddof=1, as for the paper's ± over
    5 repeats) of each metric, as ``<metric>_mean`` / ``<metric>_std``."""
    out = {}
    for m in ("accuracy", "a_to_b", "b_to_a", "ab"):
        out[f"{m}_mean"], out[f"{m}_std"] = mean_std([r[m] for r in repeats])
    return out


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` measured; ``to_dict()`` is ``results.json``."""

    pair: tuple[int, int]
    names: tuple[str, str]
    prototype: int
    explain_size: int
    curated_indices: np.ndarray  # rows of E (record/explain_set.npz) kept
    lr: float
    batch_size: int
    seeds: tuple[int, ...]
    schedules: dict  # name -> {"repeats": [...], "<metric>_mean": ..., ...}
    baseline: dict  # the final model, not fine-tuned
    test_size: int
    timings: dict = field(default_factory=dict)
    path: Path | None = None
    controls: dict = field(default_factory=dict)  # name -> {"schedules": {...}, "removed": [per seed], ...}
    controls_left_out: tuple[str, ...] = ()  # asked for, but with nothing to remove that differs from I2X's
    intervention: str = "remove"  # or perturb: the curated samples kept with k's cells imputed by ``fill``
    fill: str | None = None  # perturb: noisy-linear, mean or blur
    perturbed_indices: np.ndarray | None = None  # perturb: rows of E whose cells were imputed
    perturbed_cells: int = 0  # perturb: cells imputed over those rows

    @property
    def curated_size(self) -> int:
        return int(len(self.curated_indices))

    @property
    def acted_on(self) -> int:
        """Samples the intervention changed: removed from E, or perturbed in it."""
        if self.intervention == "perturb":
            return int(len(self.perturbed_indices if self.perturbed_indices is not None else []))
        return self.explain_size - self.curated_size

    def comparison(self, x: str = "curated+full", y: str = "full+full", metric: str = "ab") -> dict | None:
        if x not in self.schedules or y not in self.schedules:
            return None
        rx = {r["seed"]: r[metric] for r in self.schedules[x]["repeats"]}
        ry = {r["seed"]: r[metric] for r in self.schedules[y]["repeats"]}
        seeds = [s for s in rx if s in ry]
        return {
            "x": x,
            "y": y,
            "metric": metric,
            "seeds": seeds,
            **paired_comparison([rx[s] for s in seeds], [ry[s] for s in seeds]),
        }

    def control_comparisons(self, metric: str = "ab") -> list[dict]:
        """The I2X arm against each control arm, schedule by schedule, paired over seeds
        (x = I2X, y = control: a negative mean difference = I2X leaves fewer errors)."""
        out = []
        for name, c in self.controls.items():
            for sched, arm in c["schedules"].items():
                rx = {r["seed"]: r[metric] for r in self.schedules[sched]["repeats"]}
                ry = {r["seed"]: r[metric] for r in arm["repeats"]}
                seeds = [s for s in rx if s in ry]
                pc = paired_comparison([rx[s] for s in seeds], [ry[s] for s in seeds])
                out.append({"control": name, "schedule": sched, "metric": metric, "seeds": seeds, **pc})
        adj = holm(np.array([_verdict_p(c) for c in out], dtype=float))
        for c, a in zip(out, adj, strict=True):
            c["holm_p"] = None if np.isnan(a) else float(a)  # over all the comparisons listed here
        return out

    def verdict(self, alpha: float = 0.05, metric: str = "ab") -> dict | None:
        """Does the I2X removal (or perturbation) beat the controls? See :func:`verdict_of`."""
        return verdict_of(self.control_comparisons(metric), alpha, self.intervention)

    def to_dict(self) -> dict:
        removed = np.setdiff1d(np.arange(self.explain_size), self.curated_indices)
        comps = self.control_comparisons()
        perturb = {}
        if self.intervention == "perturb" and self.perturbed_indices is not None:
            perturb = {"fill": self.fill, "perturbed_indices": self.perturbed_indices.tolist(),
                       "perturbed_cells": self.perturbed_cells}  # fmt: skip
        return {
            "pair": list(self.pair),
            "names": list(self.names),
            "prototype": int(self.prototype),
            "intervention": self.intervention,
            **perturb,
            "curated_size": self.curated_size,
            "explain_size": int(self.explain_size),
            "curated_indices": self.curated_indices.tolist(),
            "removed_indices": removed.tolist(),
            "lr": self.lr,
            "optimizer": "Adam",
            "batch_size": self.batch_size,
            "epochs_per_stage": 1,
            "seeds": list(self.seeds),
            "test_size": self.test_size,
            "baseline": self.baseline,
            "schedules": self.schedules,
            "comparison": self.comparison(),
            "controls": self.controls,
            "controls_left_out": list(self.controls_left_out),
            "control_comparisons": comps,
            "verdict": verdict_of(comps, intervention=self.intervention),
            "timings": self.timings,
        }

    def table(self) -> str:
        """Markdown in the layout of the paper's Table 1 (mean ± std over the repeats)."""
        a, b = self.names
        what = (
            f"curated set {self.curated_size} of {self.explain_size} (removed {self.acted_on} samples of class {a} "
            f"or {b} containing P-{self.prototype})"
            if self.intervention == "remove"
            else f"curated set: all {self.explain_size} samples of E, the {self.acted_on} of class {a} or {b} "
            f"containing P-{self.prototype} with its {self.perturbed_cells} cells imputed ({self.fill})"
        )
        lines = [
            f"Pair {a}↔{b}, prototype P-{self.prototype}; {what}; Adam lr {self.lr:g}, batch {self.batch_size}, "
            "one epoch per stage; "
            f"seeds {list(self.seeds)}; test set {self.test_size} images; mean ± std (ddof=1).",
            "",
            f"| schedule | acc % | {a}→{b} | {b}→{a} | {a}↔{b} |",
            "|---|---|---|---|---|",
        ]
        bl = self.baseline
        lines.append(
            f"| (final model, no fine-tuning) | {100 * bl['accuracy']:.2f} | {bl['a_to_b']} | {bl['b_to_a']} "
            f"| {bl['ab']} |"
        )
        for name, s in self.schedules.items():
            lines.append(_row(name.replace("+", "→"), s))
        for name, c in self.controls.items():
            for sched, s in c["schedules"].items():
                lines.append(_row(f"{sched.replace('+', '→')} [control: {name}]", s))
        c = self.comparison()
        if c is not None:
            lines += [
                "",
                f"Paired over seeds {c['seeds']}: {a}↔{b} errors of curated→full minus full→full = "
                f"{c['mean_diff']:+.2f} ± {c['std_diff']:.2f}; curated→full fewer in {c['x_fewer']}, more in "
                f"{c['x_more']}, tied in {c['ties']}; sign test p = {_p(c['sign_test_p'])}, "
                f"paired t p = {_p(c['paired_t_p'])}.",
            ]
        return "\n".join(lines + self._control_lines()) + "\n"

    def _control_lines(self) -> list[str]:
        left_out = (
            [
                "",
                "Left out (nothing to remove, or only the I2X removal itself): "
                + ", ".join(self.controls_left_out)
                + ".",
            ]
            if self.controls_left_out
            else []
        )
        if not self.controls:
            return left_out
        a, b = self.names
        comps = self.control_comparisons()
        lines = [
            "",
            f"Controls (same seeds; what each {'removed' if self.intervention == 'remove' else 'perturbed'} instead "
            f"of the {self.acted_on} I2X samples): "
            + "; ".join(f"{n}: {_removed_text(c)}" for n, c in self.controls.items())
            + ".",
            "",
            f"| I2X arm vs control | schedule | {a}↔{b} errors, I2X − control | I2X fewer / more / tied "
            "| sign test p | paired t p | Holm p |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in comps:
            lines.append(
                f"| {c['control']} | {c['schedule'].replace('+', '→')} | {c['mean_diff']:+.2f} ± "
                f"{c['std_diff']:.2f} | {c['x_fewer']} / {c['x_more']} / {c['ties']} | "
                f"{_p(c['sign_test_p'])} | {_p(c['paired_t_p'])} | {_p(c['holm_p'])} |"
            )
        v = verdict_of(comps, intervention=self.intervention)
        return lines + left_out + (["", verdict_text(v)] if v is not None else [])

    @classmethod
    def load(cls, path: str | Path) -> FinetuneResult:
        """A saved result again (``DIR/finetune`` or its ``results.json``): e.g. to print its table
        with this version's columns and verdict."""
        path = Path(path)
        f = path / "results.json" if path.is_dir() else path
        d = store.load_json(f)
        return cls(
            pair=tuple(d["pair"]),
            names=tuple(d["names"]),
            prototype=int(d["prototype"]),
            explain_size=int(d["explain_size"]),
            curated_indices=np.asarray(d["curated_indices"], dtype=np.int64),
            lr=float(d["lr"]),
            batch_size=int(d["batch_size"]),
            seeds=tuple(d["seeds"]),
            schedules=d["schedules"],
            baseline=d["baseline"],
            test_size=int(d["test_size"]),
            timings=d.get("timings", {}),
            path=f.parent,
            controls=d.get("controls", {}),
            controls_left_out=tuple(d.get("controls_left_out", ())),
            intervention=d.get("intervention", "remove"),
            fill=d.get("fill"),
            perturbed_indices=np.asarray(d["perturbed_indices"], np.int64) if "perturbed_indices" in d else None,
            perturbed_cells=int(d.get("perturbed_cells", 0)),
        )

    def save(self, out: str | Path) -> Path:
        """results.json (arrays and numbers) first, then table.md; both written atomically."""
        out = Path(out)
        store.save_json(out / "results.json", self.to_dict())
        store.atomic_write(out / "table.md", self.table())
        return out


def verdict_of(comps: list[dict], alpha: float = 0.05, intervention: str = "remove") -> dict | None:
    """The verdict on control comparisons (:meth:`FinetuneResult.control_comparisons`, with their
    Holm p): the I2X removal (perturbation) *beats* a control where Holm p < ``alpha`` and it leaves
    fewer errors, *loses* where it leaves more; the I2X choice is *supported* on a schedule only where
    it beats every control run on that schedule. None without controls."""
    if not comps:
        return None

    def sig(c):
        return c["holm_p"] is not None and c["holm_p"] < alpha

    beats = [c for c in comps if sig(c) and c["mean_diff"] < 0]
    loses = [c for c in comps if sig(c) and c["mean_diff"] > 0]
    scheds = list(dict.fromkeys(c["schedule"] for c in comps))
    won = {(c["control"], c["schedule"]) for c in beats}
    supported = [s for s in scheds if all((c["control"], s) in won for c in comps if c["schedule"] == s)]
    return {
        "intervention": intervention,
        "alpha": alpha,
        "test": "paired t over seeds (sign test where t is undefined), Holm over the control comparisons",
        "comparisons": len(comps),
        "untested": sum(c["holm_p"] is None for c in comps),  # one seed: no p-value, never significant
        "beats": [[c["control"], c["schedule"]] for c in beats],
        "loses_to": [[c["control"], c["schedule"]] for c in loses],
        "supported_on": supported,
    }


def _verdict_p(c: dict) -> float:
    """The p-value a control comparison enters Holm's correction with: the paired t-test's; where t
    is undefined (the same difference in every seed) the sign test's; 1 when every seed is tied;
    NaN (no test) with one seed."""
    if len(c["seeds"]) < 2:
        return np.nan
    if c["paired_t_p"] is not None:
        return c["paired_t_p"]
    return c["sign_test_p"] if c["ties"] == 0 else 1.0


def verdict_text(v: dict) -> str:
    """One sentence of :meth:`FinetuneResult.verdict`."""
    perturb = v.get("intervention") == "perturb"
    noun, what, control = ("perturbation", "cells", "perturbing other cells") if perturb else (
        "removal", "samples", "random removal"
    )  # fmt: skip

    def arms(pairs):
        listed = ", ".join(f"{c} on {s.replace('+', '→')}" for c, s in pairs)
        return f"{len(pairs)} ({listed})" if pairs else "none"

    head = (
        f"Verdict ({v['test']}, {v['comparisons']} comparison{'s' * (v['comparisons'] != 1)}"
        + (f", {v['untested']} without a p-value (one seed)" if v.get("untested") else "")
        + f", α = {v['alpha']:g}): "
        f"the I2X {noun} beats {arms(v['beats'])} and loses to {arms(v['loses_to'])}; "
    )
    if v["supported_on"]:
        on = ", ".join(s.replace("+", "→") for s in v["supported_on"])
        return head + f"it beats every control on {on}: the guided choice of {what} beats {control} there."
    return head + f"it beats every control on no schedule: the guided choice of {what} is not shown to help here."


def _p(v) -> str:
    """A p-value in the table: three significant digits, n/a when there is none."""
    return format_p(v, digits=3, missing="n/a")


def _row(label: str, s: dict) -> str:
    return (
        f"| {label} | {100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f} "
        f"| {s['a_to_b_mean']:.2f} ± {s['a_to_b_std']:.2f} | {s['b_to_a_mean']:.2f} ± {s['b_to_a_std']:.2f} "
        f"| {s['ab_mean']:.2f} ± {s['ab_std']:.2f} |"
    )


def _removed_text(c: dict) -> str:
    def span(v):
        n = sorted(set(v))
        return f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"

    cells = f" ({span(c['cells'])} cells)" if "cells" in c else ""
    n = c["removed"] if "removed" in c else c["perturbed"]
    return f"{span(n)} samples{cells}" + (f" (P-{c['prototype']})" if c.get("prototype") is not None else "")


def resolve_pair(run, pair) -> tuple[int, int]:
    """(a, b) from two class names/indices; for "auto"/None, the most confused test pair that has a
    significant uncertain prototype (the one the curated set can act on)."""
    if pair is None or pair == "auto" or (isinstance(pair, (list, tuple)) and list(pair) == ["auto"]):
        cm = run.arrays("evaluate")["confusion"]
        labels = run.explain_set()["labels"]
        pairs = [(a, b) for a, b, _ in confused_pairs(cm, top=len(cm) ** 2) if {a, b} <= set(labels.tolist())]
        if not pairs:
            raise ConfigError(
                "pair", "auto", "the final model confuses no pair of classes on the test set; name two classes instead"
            )
        for a, b in pairs:
            if run.pair_explanation(a, b)["uncertain"]:
                return a, b
        raise ConfigError(
            "pair",
            "auto",
            f"none of the {len(pairs)} confused pairs has a significant uncertain prototype (see each pair's "
            "explanation); name two classes and give prototype=K to fine-tune anyway",
        )
    if isinstance(pair, str) or len(pair) != 2:
        raise ConfigError("pair", pair, "give two classes (names or indices) or auto")
    a, b = (run.class_index(c, "pair") for c in pair)
    if a == b:
        raise ConfigError("pair", list(pair), "needs two different classes")
    return a, b


def resolve_prototype(run, prototype, a: int, b: int, K: int) -> int:
    """Prototype index from an int, or the pair's top significant uncertain prototype for "auto"/None."""
    names = run.classes
    if prototype is None or prototype == "auto":
        pe = run.pair_explanation(a, b)
        if not pe["uncertain"]:
            raise ConfigError(
                "prototype",
                "auto",
                f"the pair {names[a]}↔{names[b]} has no significant uncertain prototype (none in both classes "
                "favours each class at a significant step); give prototype=K explicitly or another pair",
            )
        return int(pe["uncertain"][0]["prototype"])
    try:
        k = int(prototype)
    except (TypeError, ValueError):
        raise ConfigError("prototype", prototype, f"give a prototype index 0..{K - 1} or auto") from None
    if not 0 <= k < K:
        raise ConfigError("prototype", k, f"is out of range: this run has prototypes 0..{K - 1}")
    return k


__all__ = [
    "curated_indices",
    "parse_schedules",
    "pair_counts",
    "summarize",
    "FinetuneResult",
    "resolve_pair",
    "resolve_prototype",
    "perturb_cells",
    "control_perturbations",
    "SETS",
]
