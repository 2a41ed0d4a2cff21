"""A sanity check of the saliency (Adebayo et al. 2018, "Sanity checks for saliency maps"; Quantus' MPRT): maps
that explain the model must change when the model's weights do. The final model's maps of a few images
against those of a copy whose head (every layer the forward pass reaches after the target layer) is
re-initialised; a high rank correlation says the maps show the images (edges, contrast), not the model."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from .saliency import saliency

SIMILAR = 0.5  # mean rank correlation from which the maps count as independent of the head's weights


def head_modules(model: nn.Module, layer: str, example: torch.Tensor) -> list[nn.Module]:
    """The modules with parameters that the forward pass of ``example`` runs after the module ``layer``
    (finished after it, and not inside it): the model's head above the target layer."""
    target = dict(model.named_modules())[layer]
    inside = set(map(id, target.modules()))
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    hooks.append(target.register_forward_hook(lambda mod, _i, _o: order.append(mod)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    after = order[len(order) - 1 - order[::-1].index(target) + 1 :] if target in order else []
    return [m for m in dict.fromkeys(after) if id(m) not in inside]


def randomisation_check(
    model: nn.Module,
    images: torch.Tensor,
    targets,
    layer: str,
    method: str | Callable = "gradcam",
    device=None,
    reshape="auto",
    seed: int = 0,
) -> dict:
    """{"rank_correlation": the mean Spearman correlation of the final model's maps and the head-randomised
    copy's over the images whose maps both vary, "images": how many, "randomised": the head's modules,
    "passed": correlation < SIMILAR}. ``model`` is not changed (the copy is randomised)."""
    twin = copy.deepcopy(model).eval()
    head = head_modules(twin, layer, images[:1].to(next(twin.parameters()).device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in head:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            else:
                for p in m.parameters(recurse=False):
                    nn.init.normal_(p, std=0.02)
    kw = dict(layer=layer, method=method, device=device, reshape=reshape)
    a = saliency(model, images, targets, **kw).reshape(len(images), -1)
    b = saliency(twin, images, targets, **kw).reshape(len(images), -1)
    vary = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    ra, rb = rankdata(a[vary], axis=1), rankdata(b[vary], axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    r = (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    corr = float(r.mean()) if len(r) else float("nan")
    return {
        "rank_correlation": round(corr, 4),
        "images": int(vary.sum()),
        "randomised": len(head),
        "passed": bool(not np.isfinite(corr) or corr < SIMILAR),
    }


__all__ = ["randomisation_check", "head_modules", "SIMILAR"]
