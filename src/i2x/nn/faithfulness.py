"""``i2x faithfulness``: are the prototypes the explanation names used by the final model?

Deletes each non-background prototype's input region in the explanation-set images that contain
it, against deleting as many random cells of the same image (the null), and writes
``DIR/faithfulness.json``. The masks, ROAD's imputation and the statistics are torch-free
(:mod:`i2x.analysis.faithfulness`); the settings and their reasons are
:class:`i2x.config.FaithfulnessConfig`. The run directory is only read.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from .. import store
from ..analysis.faithfulness import (
    ROAD_NOISE,
    TEST,
    deletion_cells,
    deletion_jobs,
    faithfulness_summary,
    noisy_linear_impute,
    pixel_masks,
    random_cells,
    uncertain_pairs,
)
from ..config import FaithfulnessConfig, command_config
from ..errors import I2XError
from ..rundir import Run, run_lock
from .layers import class_scores
from .models import load_model
from .train import predict
from .utils import callers_model, eval_mode, resolve_device

OUTPUT = "faithfulness.json"
METHOD = {
    "cells": "cell (u, v) of the H'xW' assignment map covers input rows floor(u*H/H')..floor((u+1)*H/H')-1 "
    "and columns floor(v*W/W')..floor((v+1)*W/W')-1",
    "deletion": "the pixels under prototype k's cells in an image of E that contains k are replaced by the fill",
    "null": "per image, random_draws deletions of as many cells drawn without replacement among the cells not "
    "assigned to k; the per-image null is the mean change over the draws",
    "effect": "mean over k's images of Δconf_c(delete k) − null mean Δconf_c (softmax confidences of the final "
    "model); negative = deleting k lowers class c more than deleting random cells",
    "test": TEST,
    "rank_correlation": "Spearman between S[k,c] = Σ_t W_t[k,c] (dynamics.npz) and −effect[k,c] over the "
    "non-background prototypes with ≥ 1 image and every class",
    "pairs": "top uncertain prototype of each reported pair (explanations.json); flips among the images of the "
    "source class that contain k and are predicted correctly before deletion",
}


def faithfulness(
    run_dir: str | Path,
    config: FaithfulnessConfig | None = None,
    *,
    model: torch.nn.Module | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Prototype deletion on a finished run's final model; writes ``out`` (default
    ``DIR/faithfulness.json``) and returns its contents (plus ``path``, where it was written).

    Settings (:class:`~i2x.config.FaithfulnessConfig`) from ``config`` and keywords: ``fill``
    (noisy-linear, mean, blur), ``random_draws``, ``seed``, ``batch_size``, ``device``.
    ``model``: your own ``nn.Module`` for a run made with it (default: the run's built-in model
    rebuilt from ``weights/final.pt``); with ``device="auto"`` it stays on its own device.
    """
    fc = command_config(FaithfulnessConfig, config, **overrides)
    with run_lock(Run(run_dir).path), callers_model(model) if model is not None else nullcontext():
        return _faithfulness(Run(run_dir).check_complete("faithfulness"), fc, model, out, progress)


def _faithfulness(run: Run, fc: FaithfulnessConfig, model, out, progress: bool) -> dict:
    """:func:`faithfulness` with the run directory locked."""
    t_start = time.perf_counter()
    x, labels, assign, bg = _inputs(run)
    pairs = uncertain_pairs(run.explanations())
    jobs = deletion_jobs(run.arrays("intensity")["contain"], bg, tuple(k for _, _, k in pairs))
    own_model = model is None
    model, dev = _model(run, model, fc.device, x)
    t_load = time.perf_counter() - t_start
    settings = {"fill": fc.fill, "draws": fc.random_draws, "seed": fc.seed, "batch_size": fc.batch_size}
    rec = deletion_record(model, x, assign, jobs, device=dev, progress=progress, **settings)
    t0 = time.perf_counter()
    res = faithfulness_summary(rec, labels, run.dynamics().W.sum(0), bg, pairs, alpha=run.config.explain.alpha)
    for p in res["pairs"]:
        p["names"] = [run.classes[p["a"]], run.classes[p["b"]]]
    timings = {"load": t_load, **rec["timings"], "statistics": time.perf_counter() - t0}
    timings["total"] = time.perf_counter() - t_start
    doc = {
        "run": str(run.path),
        "config": fc.to_dict(),
        "fill": fill_settings(fc.fill, x.shape[-2:], assign.shape[1:]),
        "model": "the run's final model (weights/final.pt)" if own_model else f"given: {type(model).__name__}",
        "method": METHOD,
        "classes": run.classes,
        "n_images": int(len(labels)),
        "image_shape": list(x.shape[1:]),
        "map_shape": list(assign.shape[1:]),
        "background": np.flatnonzero(bg).tolist(),
        "n_images_per_prototype": np.bincount(rec["prototype"], minlength=jobs.shape[1]).tolist(),
        **res,
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
    }
    path = Path(out) if out is not None else run.path / OUTPUT
    store.save_json(path, doc)
    return {**doc, "path": path}


def _inputs(run: Run):
    """E's normalised images (tensor), labels, assignment maps and background flags."""
    es = run.explain_set()
    x = torch.from_numpy(es["images"])  # stored as the model saw them
    assign = np.asarray(run.prototypes().assignments)
    if len(assign) != len(x):
        raise I2XError(f"{run.path}: {len(assign)} assignment maps for {len(x)} images of E; re-run `i2x analyze`")
    return x, np.asarray(es["labels"]), assign, np.asarray(run.arrays("intensity")["background"], bool)


def _model(run: Run, model, device: str, x: torch.Tensor):
    """The model on its device: the run's own (rebuilt), or the caller's (moved unless device=auto)."""
    if model is None:
        dev = resolve_device(device)
        model = load_model(run.path, device=dev)
    elif device == "auto":
        p = next(model.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = resolve_device(device)
        model = model.to(dev)
    with eval_mode(model), torch.inference_mode():
        width = class_scores(model(x[:1].to(dev))).shape[-1]
    if width != len(run.classes):
        raise I2XError(f"model= gives {width} outputs but the run has {len(run.classes)} classes: pass the run's model")
    return model, dev


def fill_settings(fill: str, image_hw, map_hw) -> dict:
    """What replaces a deleted region, as written in the JSON."""
    if fill == "noisy-linear":
        return {
            "method": fill,
            "noise": ROAD_NOISE,
            "reference": "ROAD (Rong et al. 2022), NoisyLinearImputer of pytorch_grad_cam.metrics.road: 8 neighbours, "
            "weights 1/6 direct, 1/12 diagonal; noise std 0.01 in normalised input units",
        }
    if fill == "mean":
        return {"method": fill, "value": 0.0, "units": "normalised (the dataset mean)"}
    kernel, sigma = blur_params(image_hw, map_hw)
    return {"method": fill, "sigma": sigma, "kernel_size": kernel, "units": "input pixels (sigma = one cell)"}


def blur_params(image_hw, map_hw) -> tuple[int, float]:
    """Gaussian blur of the ``blur`` fill: sigma = one target-layer cell in input pixels, kernel
    2·⌈2σ⌉ + 1 (at most 2·min(H, W) − 1, what reflect padding allows)."""
    (h, w), (hp, wp) = tuple(image_hw), tuple(map_hw)
    sigma = float(max(h / hp, w / wp))
    kernel = min(2 * math.ceil(2 * sigma) + 1, 2 * min(h, w) - 1)
    return kernel, sigma


def deletion_record(
    model: torch.nn.Module,
    x: torch.Tensor,
    assignments: np.ndarray,
    jobs: np.ndarray,
    *,
    fill: str = "noisy-linear",
    draws: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Softmax confidences before and after every deletion (the input of
    :func:`i2x.analysis.faithfulness.faithfulness_summary`).

    ``x`` (N, C, H, W) normalised images, ``assignments`` (N, H', W') prototype maps, ``jobs``
    (N, K) bool, the (image, prototype) deletions to measure. Returns ``image``, ``prototype``,
    ``cells`` (M,) per deletion, ``conf_before`` (N, C), ``conf_deleted`` (M, C), ``conf_random``
    (M, draws, C) and ``timings``. Random cells from ``numpy.random.default_rng([seed, 0])``, the
    imputation noise from ``[seed, 1]``.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    img, proto = np.nonzero(np.asarray(jobs, bool))
    own = deletion_cells(assignments[img], proto)  # (M, H', W')
    present = own.any((1, 2))  # a prototype without a cell in the image has nothing to delete
    img, proto, own = img[present], proto[present], own[present]
    rnd = random_cells(assignments[img], proto, draws, np.random.default_rng([seed, 0]))  # (M, R, H', W')
    cells = np.concatenate([own[:, None], rnd], 1).reshape(-1, *own.shape[1:])  # per image: k, then the draws
    owner = np.repeat(img, 1 + draws)
    t_masks = time.perf_counter() - t0
    base = blurred(x, assignments.shape[1:]) if fill == "blur" else None  # timed with the fill
    t_blur = time.perf_counter() - t0 - t_masks
    conf_before = predict(model, x, batch_size, device)
    conf, t_fill = _perturbed(
        model, x.detach().cpu().numpy(), owner, cells, fill, base, seed, batch_size, device, progress
    )
    t_fill += t_blur
    conf = conf.reshape(len(img), 1 + draws, conf_before.shape[1])
    t_total = time.perf_counter() - t0
    return {
        "image": img,
        "prototype": proto,
        "cells": own.sum((1, 2)),
        "conf_before": conf_before,
        "conf_deleted": conf[:, 0],
        "conf_random": conf[:, 1:],
        "timings": {"masks": t_masks, "fill": t_fill, "forward": t_total - t_masks - t_fill},
    }


def _perturbed(model, xn, owner, cells, fill, base, seed, batch_size, device, progress):
    """Confidences of every perturbed image, in batches; also the seconds spent filling."""
    from ..progress import bar as tqdm

    h, w = xn.shape[-2:]
    rng = np.random.default_rng([seed, 1])
    conf, t_fill = None, 0.0
    bar = tqdm(total=len(cells), desc="faithfulness", unit="img", disable=not progress, leave=False)
    with eval_mode(model), torch.inference_mode():
        for s in range(0, len(cells), batch_size):
            t = time.perf_counter()
            rows = owner[s : s + batch_size]
            xb = fill_pixels(xn, rows, pixel_masks(cells[s : s + batch_size], h, w), fill, base, rng)
            t_fill += time.perf_counter() - t
            p = torch.softmax(class_scores(model(torch.from_numpy(xb).to(device))).float(), 1).cpu().numpy()
            if conf is None:
                conf = np.empty((len(cells), p.shape[1]), np.float32)
            conf[s : s + len(rows)] = p
            bar.update(len(rows))
    bar.close()
    return (conf if conf is not None else np.zeros((0, 0), np.float32)), t_fill


def fill_pixels(xn: np.ndarray, rows: np.ndarray, masks: np.ndarray, fill: str, base, rng) -> np.ndarray:
    """Images ``xn[rows]`` with the pixels of ``masks`` (B, H, W) replaced by the fill (``base``: the
    :func:`blurred` images for ``blur``; ``rng``: the imputation noise of ``noisy-linear``)."""
    xb = xn[rows]
    if fill == "noisy-linear":
        return noisy_linear_impute(xb, masks, ROAD_NOISE, rng)
    value = 0.0 if fill == "mean" else base[rows]
    return np.where(masks[:, None], value, xb).astype(np.float32, copy=False)


def blurred(x: torch.Tensor, map_hw) -> np.ndarray:
    """A Gaussian-blurred copy of every image (the ``blur`` fill)."""
    from torchvision.transforms.functional import gaussian_blur

    kernel, sigma = blur_params(x.shape[-2:], map_hw)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma]).numpy()


__all__ = ["faithfulness", "deletion_record", "fill_pixels", "blurred"]
