"""Stability selection over the explanation set (issue 24): how often each listed item is selected
when the analysis is redone on random halves of E.

An explanation describes the model only if another sample of images tells the same story. Each
resample is a stratified half of E (every class halved, without replacement: no sample appears
twice, so the within-class permutation test stays exact on it, and halves are the resamples of
Meinshausen & Bühlmann's stability selection); on each, stages 4-7 run with the run's settings
(HDBSCAN, ridge, the permutation p-values, the explanation rules) on the same model, records and
prototypes. An item's frequency is the share of resamples that list it. Pure numpy / scikit-learn.
"""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from .dynamics import RIDGE_LAMBDA, dynamics
from .explain import explain
from .links import run_links

KINDS = ("uncertain", "reliable")


def half_subsamples(labels: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` stratified half-subsamples of the rows of E (each class: ceil(half) of its samples,
    drawn without replacement), as sorted row indices, seeded by (``seed``, 24)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 24])
    rows = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return [np.sort(np.concatenate([rng.choice(r, (len(r) + 1) // 2, replace=False) for r in rows])) for _ in range(n)]


def selection_frequencies(
    confidences: np.ndarray,
    intensities: np.ndarray,
    contain: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    settings: dict,
    explain_cfg,
    *,
    resamples: int = 50,
    seed: int = 0,
    background: np.ndarray | None = None,
    present: np.ndarray | None = None,
    n_jobs: int | None = None,
    progress=None,
) -> dict[str, np.ndarray]:
    """Selection frequencies of every item over ``resamples`` half-subsamples of E.

    confidences (T+1, N, C), intensities (T+1, N, K), contain (N, K), labels (N,). ``settings``:
    the keywords of :func:`i2x.analysis.dynamics.dynamics` (min_cluster_size, tau, lam, lam_scale,
    fallback, permutations, null); ``explain_cfg``: the run's :class:`~i2x.config.ExplainConfig`
    (``top`` is lifted, so that an item's frequency does not depend on its rank). Returns
    ``roles`` (C, C, K, 2): share of resamples listing prototype k as uncertain / reliable for the
    pair (a, b), a < b; ``key`` (C, T, K): k at a key checkpoint t of class c; ``shared`` (C, K);
    ``specialized`` (C, K): k in a specialized group of c (class-specific lists); ``resamples``.
    """
    from dataclasses import replace

    T, K = intensities.shape[0] - 1, intensities.shape[2]
    cfg = replace(explain_cfg, top=K)
    out = {
        "roles": np.zeros((n_classes, n_classes, K, 2)),
        "key": np.zeros((n_classes, max(T, 0), K)),
        "shared": np.zeros((n_classes, K)),
        "specialized": np.zeros((n_classes, K)),
    }
    subsamples = half_subsamples(labels, resamples, seed)
    one = partial(_one_half, confidences, intensities, contain, np.asarray(labels), n_classes, settings, cfg, seed,
                  background, present)  # fmt: skip
    jobs = _jobs(n_jobs, resamples)
    if jobs == 1:
        done = map(one, range(resamples), subsamples)
    else:  # each half is seeded by its index: the counts do not depend on n_jobs or the order of completion
        pool = Parallel(n_jobs=jobs, prefer="processes", return_as="generator_unordered")
        done = pool(delayed(one)(b, idx) for b, idx in enumerate(subsamples))
    for ex in done if progress is None else progress(done, resamples):
        _count(out, ex)
    for v in out.values():
        v /= max(resamples, 1)
    out["resamples"] = np.int64(resamples)
    return out


def _jobs(n_jobs: int | None, resamples: int) -> int:
    """Workers for the halves: ``n_jobs`` as in scikit-learn / joblib (None: 1, -1: every CPU)."""
    return max(1, min(effective_n_jobs(n_jobs), resamples))


def _one_half(confidences, intensities, contain, labels, n_classes, settings, cfg, seed, background, present, b, idx):
    """Stages 4-7 on the half ``idx`` (the ``b``-th): the explanation it lists."""
    y, half_seed = labels[idx], seed + 1000 * (b + 1)
    d = dynamics(confidences[:, idx], intensities[:, idx], y, seed=half_seed, class_level=False, **settings)
    present_classes = set(np.unique(y).tolist())
    in_half = [(a, c) for a, c in itertools.combinations(range(n_classes), 2) if {a, c} <= present_classes]
    links = None
    if cfg.pair_test == "samples" and settings.get("permutations"):
        links = run_links(
            confidences[:, idx], intensities[:, idx], contain[idx], y, cfg, lam=settings.get("lam", RIDGE_LAMBDA),
            permutations=settings["permutations"], seed=half_seed, background=background, bootstrap=0,
        )  # fmt: skip
    return explain(
        d.W, contain[idx], y, d.class_delta, flagged=d.flagged, pairs=in_half, cfg=cfg, p_W=d.p_W,
        p_pair=d.p_pair, background=background, classes=[str(c) for c in range(n_classes)],
        present=None if present is None else present[idx], links=links,
    )  # fmt: skip


def _count(out: dict, ex: dict) -> None:
    """Add one resample's listed items to the counts."""
    for p in ex["pairs"]:
        for j, kind in enumerate(KINDS):
            for r in p[kind]:
                out["roles"][p["a"], p["b"], r["prototype"], j] += 1
    for e in ex["classes"].values():
        c = e["index"]
        out["shared"][c, e["shared"]] += 1
        spec = sorted({k for g in e["specialized"] for k in g["prototypes"]})
        out["specialized"][c, spec] += 1
        for kc in e["key_checkpoints"]:
            for p in kc["prototypes"]:
                out["key"][c, kc["step"], p["prototype"]] += 1
