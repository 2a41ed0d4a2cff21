"""Find and resolve the target layer h of a model f = g ∘ h (spec §Terms)."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..errors import I2XError
from .utils import eval_mode


def _outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...] | None]]:
    """(name, output shape without the batch axis, or None when not a tensor) of every named
    module that ran on ``example``, in the order their forward finished."""
    order: list[tuple[str, tuple[int, ...] | None]] = []
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, _i, out, name=name):
            order.append((name, tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None))

        handles.append(mod.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


def _is_spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 3 and shape[1] * shape[2] > 1


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Named modules whose output on ``example`` is a 4-D map larger than 1x1, in the order
    their forward finished (a container finishes after its children)."""
    return [(n, s) for n, s in _outputs(model, example) if _is_spatial(s)]


def _main_path_spatial(
    outputs: list[tuple[str, tuple[int, ...] | None]], model: nn.Module | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """Spatial modules none of whose enclosing *blocks* produced a non-spatial output: a branch
    inside a block that pools to 1x1 (InceptionV3's Mixed_7a on 75x75 input) is not on the main
    path of h, so it must not be chosen as the target layer. Sequential containers do not count
    as blocks: their children are the stages of the main path (torchvision's MobileNet/EfficientNet
    ``features`` ends in 1x1 on small inputs while ``features.8`` is still 2x2)."""
    mods = dict(model.named_modules()) if model is not None else {}
    chains = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    flat = {n for n, s in outputs if not _is_spatial(s) and not isinstance(mods.get(n), chains)}
    keep = []
    for n, s in outputs:
        if not _is_spatial(s):
            continue
        parts = n.split(".")
        if any(".".join(parts[:i]) in flat for i in range(1, len(parts))):
            continue
        keep.append((n, s))
    return keep


# Auto-detected layer per model and input signature: detection runs a hooked forward pass,
# and the recorder asks at every checkpoint. Weak keys: the cache never keeps a model alive.
_DETECTED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last module whose output is still spatial (ResNet ``layer4``,
    InceptionV3 ``Mixed_7c``, the ``features`` block of a Sequential CNN)."""
    key = (tuple(example.shape[1:]), example.dtype, example.device.type)
    cached = _DETECTED.get(model, {}).get(key)
    if cached is not None and cached in dict(model.named_modules()):
        return cached
    outputs = _outputs(model, example)
    order = _main_path_spatial(outputs, model)
    if not order:
        spatial = [f"{n} {'x'.join(map(str, s))}" for n, s in outputs if _is_spatial(s)][::-1][:12]
        raise I2XError(
            "no layer on the model's main path outputs a spatial map larger than 1x1 on this input: "
            + (
                f"name one with layer=... (spatial outputs, last first: {', '.join(spatial)})"
                if spatial
                else "pass a larger image size, or name a convolutional block with layer=..."
            )
        )
    try:
        _DETECTED.setdefault(model, {})[key] = order[-1][0]
    except TypeError:  # a model that cannot be weakly referenced: just do not cache
        pass
    return order[-1][0]


def candidate_layers(model: nn.Module, example: torch.Tensor | None = None, limit: int = 12) -> list[str]:
    """Meaningful choices for ``layer=``: modules with a spatial 4-D output on ``example``
    (last ones first, with their (D, H, W)); without an example, the top-level children."""
    if example is not None:
        try:
            order = spatial_layers(model, example)
        except Exception:  # noqa: BLE001 - the example itself may be what is wrong
            order = []
        seen: dict[str, tuple[int, ...]] = {}
        for name, shape in order:  # a module called twice appears once
            seen.setdefault(name, shape)
        if seen:
            items = list(seen.items())[::-1][:limit]
            return [f"{n} {'x'.join(map(str, s))}" for n, s in items]
    return [n for n, _ in model.named_children()][:limit]


def resolve_layer(
    model: nn.Module, layer: str | nn.Module | None, example: torch.Tensor | None = None
) -> tuple[str, nn.Module]:
    """Turn ``layer`` (a name, a module of ``model``, or None = auto-detect) into (name, module)."""
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, mod in modules.items():
            if mod is layer:
                if name == "":
                    raise I2XError("layer= is the model itself: pass one of its submodules (the last spatial block)")
                return name, mod
        raise I2XError("layer= is a module that is not part of the model: pass one of model's submodules or its name")
    if layer is None:
        if example is None:
            raise I2XError("layer=None needs an example input to detect the target layer: name the layer")
        layer = find_target_layer(model, example)
    if not isinstance(layer, str) or layer not in modules or layer == "":
        cands = candidate_layers(model, example)
        raise I2XError(
            f"layer {layer!r} does not exist in the model; pass layer= one of "
            f"(last spatial layers first): {', '.join(cands)}"
        )
    return layer, modules[layer]
