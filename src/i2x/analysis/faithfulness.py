"""Prototype deletion on the final model (``i2x faithfulness``), the torch-free part: deletion
masks, ROAD's noisy linear imputation, and the statistics; the forward passes are
:mod:`i2x.nn.faithfulness`.

For a prototype k and an image x of the explanation set that contains it, the *deletion* of k
replaces the input pixels under k's cells of the target-layer assignment map A(x) (cell (u, v) of
an H'xW' map covers rows ⌊uH/H'⌋..⌊(u+1)H/H'⌋ − 1 and the same for columns) by a fill; the
*null* deletes as many cells drawn at random among the cells of x not assigned to k, ``draws``
times. Per image and class c the paired difference is

    d_c(x) = Δconf_c(delete k) − mean over draws Δconf_c(delete random cells),

with Δconf the change of the softmax confidence. The effect of k on c is the mean of d_c over
k's images, with a 95 % t-interval and a two-sided one-sample t-test
(:func:`i2x.analysis.stats.paired_test`).

Agreement with the explanation: S[k, c] = Σ_t W_t[k, c] says what k did for class c during
training; a prototype that supports c should lower c's confidence when deleted, so S and
−effect should rank alike (:func:`rank_agreement`, Spearman over the (k, c) pairs measured).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats
from scipy.sparse.linalg import spsolve

from .stats import ALPHA, holm, paired_test

STATS = ("mean", "ci_low", "ci_high", "p_value")
ROAD_NOISE = 0.01  # ROAD's NoisyLinearImputer(noise=0.01), absolute, on the model's (normalised) input
# ROAD's neighbour weights (row offset, column offset, weight): 1/6 direct, 1/12 diagonal
NEIGHBOURS = (
    (1, 1, 1 / 12),
    (0, 1, 1 / 6),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (0, -1, 1 / 6),
    (-1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
)
TEST = (
    "two-sided one-sample t-test (scipy.stats.ttest_1samp) of the per-image paired differences "
    "d = Δconf(delete k) − mean over draws Δconf(delete random cells); 95 % t-interval of their mean; "
    "identical differences: p = 1 when all are 0, else 0"
)


# ---------------------------------------------------------------------------- deletion masks
def pixel_cells(n_cells: int, n_pixels: int) -> np.ndarray:
    """The target-layer cell of each input row (or column): cell u covers ⌊u·n/n'⌋..⌊(u+1)·n/n'⌋ − 1."""
    starts = (np.arange(n_cells + 1) * n_pixels) // n_cells  # (n' + 1,) floor(u * n / n')
    return np.searchsorted(starts, np.arange(n_pixels), side="right") - 1


def pixel_masks(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, H', W') bool cell masks -> (B, H, W) bool input-pixel masks."""
    cells = np.asarray(cells, bool)
    rows, cols = pixel_cells(cells.shape[1], height), pixel_cells(cells.shape[2], width)
    return cells[:, rows][:, :, cols]


def deletion_jobs(contain: np.ndarray, background: np.ndarray, extra: tuple[int, ...] = ()) -> np.ndarray:
    """(N, K) bool: the (image, prototype) deletions to measure, every non-background prototype in
    the images that contain it, plus the prototypes ``extra`` (e.g. a pair's, even if background)."""
    keep = ~np.asarray(background, bool)
    keep[list(extra)] = True
    return np.asarray(contain, bool) & keep[None, :]


def deletion_cells(assignments: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(M, H', W') bool: the cells of ``prototypes[j]`` in ``assignments[j]`` (M, H', W')."""
    return np.asarray(assignments) == np.asarray(prototypes)[:, None, None]


def random_cells(assignments: np.ndarray, prototypes: np.ndarray, draws: int, rng) -> np.ndarray:
    """(M, draws, H', W') bool: per row j and draw, as many cells as prototype ``prototypes[j]`` has
    in ``assignments[j]``, drawn without replacement among the cells *not* assigned to it (all
    of them when fewer are left)."""
    shape = np.shape(assignments)[1:]
    own = deletion_cells(assignments, prototypes).reshape(len(prototypes), 1, int(np.prod(shape)))  # (M, 1, H'W')
    n = own.sum(2, keepdims=True)  # (M, 1, 1)
    keys = rng.random((own.shape[0], draws, own.shape[2]))
    keys = np.where(own, np.inf, keys)  # k's own cells are never drawn
    rank = keys.argsort(2).argsort(2)  # rank of each cell's key within its row
    picked = (rank < n) & ~own
    return picked.reshape(own.shape[0], draws, *shape)


# ---------------------------------------------------------------------------- ROAD imputation
def noisy_linear_impute(images: np.ndarray, masks: np.ndarray, noise: float = ROAD_NOISE, rng=None) -> np.ndarray:
    """ROAD's noisy linear imputation (Rong et al. 2022; pytorch_grad_cam.metrics.road.NoisyLinearImputer).

    ``images`` (B, C, H, W) float, ``masks`` (B, H, W) bool, True = delete. Each deleted pixel is
    the weighted mean of its in-image 8 neighbours (1/6 direct, 1/12 diagonal, normalised by the
    weights present), known or deleted: one sparse linear system per image, solved here as one
    block-diagonal system for the batch (the same solution); then ``noise`` × N(0, 1) is added to
    each imputed value. An image deleted entirely has no known pixel to impute from: it gets 0
    (the dataset mean in normalised units) plus the noise.
    """
    images = np.asarray(images)
    b, c, h, w = images.shape
    masks = np.asarray(masks, bool).copy()
    whole = masks.reshape(b, -1).all(1)
    masks[whole] = False  # solved separately: a system without a known pixel is singular
    vals = images.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)  # (B·H·W, C)
    idx = np.flatnonzero(masks)  # unknowns, as flat pixel indices
    out = vals.copy()
    out[np.flatnonzero(np.repeat(whole, h * w))] = 0.0
    if len(idx):
        out[idx] = _solve_system(vals, masks.ravel(), idx, h, w)
    filled = np.flatnonzero(masks.ravel() | np.repeat(whole, h * w))
    if noise and len(filled):
        rng = rng if rng is not None else np.random.default_rng()
        out[filled] += noise * rng.standard_normal((len(filled), c))
    return out.reshape(b, h, w, c).transpose(0, 3, 1, 2).astype(images.dtype, copy=False)


def _solve_system(vals: np.ndarray, unknown: np.ndarray, idx: np.ndarray, h: int, w: int) -> np.ndarray:
    """Solve Σ_j w_j · (x_i − x_j) = 0 over the in-image neighbours j of every unknown pixel i."""
    n = len(idx)
    vid = np.full(len(unknown), -1)
    vid[idx] = np.arange(n)
    r, col = (idx % (h * w)) // w, idx % w
    diag, rhs = np.zeros(n), np.zeros((n, vals.shape[1]))
    rows, cols, data = [np.arange(n)], [np.arange(n)], []
    for dr, dc, wt in NEIGHBOURS:
        inside = (r + dr >= 0) & (r + dr < h) & (col + dc >= 0) & (col + dc < w)
        i = np.flatnonzero(inside)
        j = idx[i] + dr * w + dc  # the neighbour's flat index (same image: it is inside)
        diag[i] += wt
        free = unknown[j]
        rows.append(i[free])
        cols.append(vid[j[free]])
        data.append(np.full(int(free.sum()), -wt))
        rhs[i[~free]] += wt * vals[j[~free]]
    a = sparse.csc_matrix((np.concatenate([diag, *data]), (np.concatenate(rows), np.concatenate(cols))), (n, n))
    return np.asarray(spsolve(a, rhs)).reshape(n, -1)


# ---------------------------------------------------------------------------- statistics
def rank_agreement(score: np.ndarray, effect: np.ndarray, valid: np.ndarray) -> dict:
    """Spearman's ρ (and its two-sided p) between the explanation's S[k, c] and −effect[k, c] over
    the ``valid`` (k, c) pairs; None where fewer than 3 pairs or a constant side."""
    s, e = np.asarray(score)[valid], -np.asarray(effect)[valid]
    out = {"method": "spearman(S[k,c], -effect[k,c])", "n_pairs": int(len(s)), "rho": None, "p_value": None}
    if len(s) >= 3 and np.ptp(s) > 0 and np.ptp(e) > 0:
        r = stats.spearmanr(s, e)
        out.update(rho=float(r.statistic), p_value=float(r.pvalue))
    return out


def paired_differences(rec: dict) -> np.ndarray:
    """(M, C): per deletion row, Δconf after deleting k minus the mean Δconf of its random draws."""
    before = np.asarray(rec["conf_before"], np.float64)[rec["image"]]  # (M, C)
    deleted = np.asarray(rec["conf_deleted"], np.float64) - before
    null = np.asarray(rec["conf_random"], np.float64).mean(1) - before
    return deleted - null


def prototype_effects(rec: dict, labels: np.ndarray, n_prototypes: int) -> dict[str, np.ndarray]:
    """Per prototype k: ``n`` images, mean ``cells`` deleted, and :func:`paired_test` of its paired
    differences on every class (``mean``, ``ci_low``, ``ci_high``, ``p_value``: (K, C)) and on
    each image's own class (``own_mean``, ...: (K,)); NaN where k has no image."""
    d = paired_differences(rec)
    own = d[np.arange(len(d)), np.asarray(labels)[rec["image"]]]
    protos = np.asarray(rec["prototype"])
    out = {"n": np.bincount(protos, minlength=n_prototypes), "cells": np.full(n_prototypes, np.nan)}
    for key in STATS:
        out[key] = np.full((n_prototypes, d.shape[1]), np.nan)
        out["own_" + key] = np.full(n_prototypes, np.nan)
    for k in np.flatnonzero(out["n"]):
        rows = protos == k
        out["cells"][k] = float(np.mean(np.asarray(rec["cells"])[rows]))
        for prefix, t in (("", paired_test(d[rows])), ("own_", paired_test(own[rows]))):
            for key in STATS:
                out[prefix + key][k] = t[key]
    return out


def beats_random(eff: dict, background: np.ndarray, alpha: float = ALPHA) -> dict:
    """Share of the testable prototypes (non-background, ≥ 2 images) whose deletion lowers the own
    class's confidence more than random deletion: own-class effect < 0 and p < alpha (also
    counted with Holm's correction over the testable prototypes)."""
    tested = ~np.asarray(background, bool) & (eff["n"] >= 2)
    p, mean = eff["own_p_value"], eff["own_mean"]
    beats = tested & (mean < 0) & (np.nan_to_num(p, nan=1.0) < alpha)
    adj = np.full(len(p), np.nan)
    adj[tested] = holm(p[tested])
    beats_holm = beats & (np.nan_to_num(adj, nan=1.0) < alpha)
    n = int(tested.sum())
    return {
        "rule": f"own-class effect < 0 and p < {alpha} (testable: non-background, >= 2 images)",
        "share": float(beats.sum() / n) if n else None,
        "count": int(beats.sum()),
        "tested": n,
        "prototypes": np.flatnonzero(beats).tolist(),
        "count_holm": int(beats_holm.sum()),
        "no_images": np.flatnonzero(~np.asarray(background, bool) & (eff["n"] == 0)).tolist(),
    }


def uncertain_pairs(explanations: dict) -> list[tuple[int, int, int]]:
    """(a, b, k) for each reported pair with an uncertain prototype; k = its top uncertain one."""
    return [
        (int(p["a"]), int(p["b"]), int(p["uncertain"][0]["prototype"]))
        for p in explanations.get("pairs", [])
        if p.get("uncertain")
    ]


def pair_flips(rec: dict, labels: np.ndarray, a: int, b: int, k: int, alpha: float = ALPHA) -> dict:
    """a→b and b→a flips after deleting k in the images of class a or b that contain it, against
    random deletion: among the images of the source class predicted correctly before, the share
    predicted as the other class after deleting k, the mean share over the random draws, and the
    paired t-test p of flip(k) − random flip rate over those images."""
    labels = np.asarray(labels)
    img = np.asarray(rec["image"])
    pred0 = np.asarray(rec["conf_before"]).argmax(1)[img]  # (M,)
    y = labels[img]
    mine = np.asarray(rec["prototype"]) == k
    out = {"a": a, "b": b, "prototype": k, "n_a": int((mine & (y == a)).sum()), "n_b": int((mine & (y == b)).sum())}
    d = paired_differences(rec)[mine & np.isin(y, (a, b))]
    out["effect_on_a"], out["effect_on_b"] = (float(d[:, c].mean()) if len(d) else None for c in (a, b))
    for src, dst, key in ((a, b, "a_to_b"), (b, a, "b_to_a")):
        r = mine & (y == src) & (pred0 == src)
        flip = (np.asarray(rec["conf_deleted"])[r].argmax(1) == dst).astype(np.float64)
        null = (np.asarray(rec["conf_random"])[r].argmax(2) == dst).mean(1)
        t = paired_test(flip - null, alpha)
        out[key] = {
            "n_images": int(r.sum()),
            "deleted_rate": _num(flip.mean()) if len(flip) else None,
            "random_rate": _num(null.mean()) if len(null) else None,
            "p_value": _num(t["p_value"]),
        }
    return out


def faithfulness_summary(
    rec: dict, labels: np.ndarray, score: np.ndarray, background: np.ndarray, pairs, alpha=ALPHA
) -> dict:
    """The ``prototypes``, ``summary`` and ``pairs`` sections of ``faithfulness.json`` from a
    deletion record ``rec`` (image, prototype, cells (M,); conf_before (N, C); conf_deleted (M, C);
    conf_random (M, R, C)), E's ``labels``, S = Σ_t W_t (K, C), ``background`` (K,) and
    ``pairs`` [(a, b, k)]."""
    score, background = np.asarray(score, np.float64), np.asarray(background, bool)
    eff = prototype_effects(rec, labels, score.shape[0])
    beats = beats_random(eff, background, alpha)
    valid = np.broadcast_to((~background & (eff["n"] >= 1))[:, None], score.shape)
    pred0 = np.asarray(rec["conf_before"]).argmax(1)
    summary = {
        "rank_correlation": rank_agreement(score, eff["mean"], valid),
        "beats_random": beats,
        "accuracy_before": float((pred0 == np.asarray(labels)).mean()),
        "deletions": int(len(rec["image"])),
        "alpha": alpha,
    }
    rows = [_prototype_row(eff, score, k, k in beats["prototypes"]) for k in np.flatnonzero(~background)]
    return {"prototypes": rows, "summary": summary, "pairs": [pair_flips(rec, labels, *p, alpha) for p in pairs]}


def _prototype_row(eff: dict, score: np.ndarray, k: int, beats: bool) -> dict:
    return {
        "prototype": int(k),
        "n_images": int(eff["n"][k]),
        "cells_mean": _num(eff["cells"][k]),
        "own_class": {key.replace("mean", "effect"): _num(eff["own_" + key][k]) for key in STATS},
        "beats_random": bool(beats),
        "effect": _nums(eff["mean"][k]),
        "ci_low": _nums(eff["ci_low"][k]),
        "ci_high": _nums(eff["ci_high"][k]),
        "p_value": _nums(eff["p_value"][k]),
        "explanation_S": _nums(score[k]),
    }


def _num(v) -> float | None:
    """A JSON-safe float: None for NaN and infinities."""
    v = float(v)
    return v if np.isfinite(v) else None


def _nums(a) -> list[float | None]:
    return [_num(v) for v in np.ravel(a)]
