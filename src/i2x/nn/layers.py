"""Find and resolve the target layer h of a model f = g ∘ h (spec §Terms)."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, I2XError
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


LAYOUTS = ("auto", "nchw", "nhwc", "tokens")  # the ``reshape`` setting: how a target layer's output is a map


@dataclass(frozen=True)
class Grid:
    """How a target layer's output lies on the image's positions: ``nchw`` (CNNs), ``nhwc``
    (Swin: timm stages, torchvision ``features``), ``tokens`` ((N, prefix + H'·W', D): ViT, DeiT;
    the class / distillation / register tokens before the grid dropped), or ``custom`` (a
    callable, as pytorch-grad-cam's ``reshape_transform``). :meth:`to_map` gives (N, D, H', W')."""

    layout: str
    size: tuple[int, int]  # (H', W')
    channels: int
    prefix: int = 0  # tokens before the grid
    fn: Callable | None = field(default=None, compare=False)  # the custom layout's transform

    def to_map(self, out: torch.Tensor) -> torch.Tensor:
        """(N, D, H', W') of the layer's output (or of its gradient: the same selection of elements)."""
        if self.layout == "nchw":
            return out
        if self.layout == "nhwc":
            return out.permute(0, 3, 1, 2)
        if self.layout == "tokens":
            h, w = self.size
            return out[:, self.prefix :].reshape(out.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return self.fn(out)

    def info(self) -> dict:
        """What the manifest records: layout, grid, channels, prefix tokens."""
        return {"layout": self.layout, "grid": list(self.size), "channels": self.channels, "prefix_tokens": self.prefix}


def grid_of(
    shape: tuple[int, ...] | None,
    image_hw: tuple[int, int],
    reshape: str | Callable = "auto",
    prefix: int | None = None,
) -> Grid | None:
    """The :class:`Grid` of an output of ``shape`` (no batch axis) on an ``image_hw`` input, or None
    when it is not a map of the image's positions larger than 1x1. ``auto``: a 4-D output is NCHW
    unless its first two axes (and not its last two) are the image's aspect (NHWC); a 3-D output
    is tokens whose count minus ``prefix`` (the model's, else the smallest 0-16 that fits) is an
    H'xW' grid of the image's aspect; maps bigger than the image or of another aspect (attention
    internals: heads x tokens x head-dim) are not maps. ``nchw`` / ``nhwc`` / ``tokens`` force a layout."""
    if shape is None:
        return None
    if callable(reshape):
        return None  # custom: measured on the transformed output (see _custom_grid)
    if len(shape) == 3 and reshape != "tokens":
        a, b, c = shape
        nchw = reshape == "nchw" or (reshape == "auto" and _nchw_first(shape, image_hw))
        g = Grid("nchw", (b, c), a) if nchw else Grid("nhwc", (a, b), c)
        ok = g.size[0] * g.size[1] > 1 and (reshape != "auto" or _fits(g.size, image_hw))
        return g if ok else None
    if len(shape) == 2 and reshape in ("auto", "tokens"):
        n, d = shape
        for p in range(17) if prefix is None else (prefix,):
            hw = _token_grid(n - p, image_hw)
            if hw is not None:
                return Grid("tokens", hw, d, p) if hw[0] * hw[1] > 1 else None
    return None


def _nchw_first(shape, image_hw) -> bool:
    a, b, c = shape
    H, W = image_hw
    if H == W:
        return b == c or a != b
    err = lambda h, w: abs(np.log(h / w) - np.log(H / W))  # noqa: E731
    return err(b, c) <= err(a, b)


def _fits(size, image_hw) -> bool:
    """A map of the image: no larger than it, of its aspect (within rounding)."""
    (h, w), (H, W) = size, image_hw
    return h <= H and w <= W and (abs(h * W - w * H) <= max(H, W) or 2 / 3 <= (h / w) / (H / W) <= 3 / 2)


def _token_grid(n: int, image_hw) -> tuple[int, int] | None:
    """(h, w) with h·w = n and h / w the image's aspect, if there is one."""
    H, W = image_hw
    if n < 1:
        return None
    h = max(1, round(float(np.sqrt(n * H / W))))
    return (h, n // h) if n % h == 0 and n // h == max(1, round(h * W / H)) else None


def prefix_tokens(model: nn.Module) -> int | None:
    """Tokens before the patch grid: timm's ``num_prefix_tokens``; 1 for torchvision's
    ``VisionTransformer`` (its class token); None when the model does not say."""
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    return 1 if isinstance(getattr(model, "class_token", None), torch.Tensor) else None


def _width(model: nn.Module) -> int | None:
    """The width of the model's token features (timm ``num_features`` / ``embed_dim``, torchvision ``hidden_dim``)."""
    for a in ("embed_dim", "hidden_dim", "num_features"):
        v = getattr(model, a, None)
        if isinstance(v, int):
            return v
    return None


def _outputs_grids(model, example, reshape) -> list[tuple[str, tuple[int, ...] | None, Grid | None]]:
    hw, pre = tuple(example.shape[-2:]), prefix_tokens(model)
    return [(n, s, grid_of(s, hw, reshape, pre)) for n, s in _outputs(model, example)]


def spatial_layers(model: nn.Module, example: torch.Tensor, reshape: str = "auto") -> list[tuple[str, tuple[int, ...]]]:
    """Named modules whose output on ``example`` is a map of the image larger than 1x1 (CNN
    feature maps, Swin's NHWC stages, ViT tokens on a patch grid), in the order their forward
    finished (a container finishes after its children), with their output shape."""
    return [(n, s) for n, s, g in _outputs_grids(model, example, reshape) if g is not None]


def _main_path_spatial(outputs, model: nn.Module | None = None) -> list[tuple[str, Grid]]:
    """Map modules none of whose enclosing *blocks* produced a non-map output: a branch
    inside a block that pools to 1x1 (InceptionV3's Mixed_7a on 75x75 input) is not on the main
    path of h, so it must not be chosen as the target layer. Sequential containers do not count
    as blocks: their children are the stages of the main path (torchvision's MobileNet/EfficientNet
    ``features`` ends in 1x1 on small inputs while ``features.8`` is still 2x2)."""
    mods = dict(model.named_modules()) if model is not None else {}
    chains = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    flat = {n for n, _, g in outputs if g is None and not isinstance(mods.get(n), chains)}
    keep = []
    for n, _, g in outputs:
        if g is None:
            continue
        parts = n.split(".")
        if any(".".join(parts[:i]) in flat for i in range(1, len(parts))):
            continue
        keep.append((n, g))
    return keep


# Auto-detected layer per model and input signature: detection runs a hooked forward pass,
# and the recorder asks at every checkpoint. Weak keys: the cache never keeps a model alive.
_DETECTED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def find_target_layer(model: nn.Module, example: torch.Tensor, reshape: str = "auto") -> str:
    """Name of the target layer h: for a CNN the last module whose output is still spatial
    (ResNet ``layer4``, InceptionV3 ``Mixed_7c``, the ``features`` block of a Sequential CNN); for
    a transformer (tokens or NHWC maps last) the last such module of the model's width whose grid
    positions the classifier's features depend on: with a class-token head the patch tokens of the
    last block's output reach no score, so timm's ViT gets ``blocks.11.norm1`` (pytorch-grad-cam's
    choice for ViT), a Swin its final ``norm``."""
    key = (tuple(example.shape[1:]), example.dtype, example.device.type, reshape)
    cached = _DETECTED.get(model, {}).get(key)
    if cached is not None and cached in dict(model.named_modules()):
        return cached
    outputs = _outputs_grids(model, example, reshape)
    order = _main_path_spatial(outputs, model)
    if not order:
        spatial = [f"{n} {'x'.join(map(str, s))}" for n, s, g in outputs if g is not None][::-1][:12]
        raise I2XError(
            "no layer on the model's main path outputs a spatial map larger than 1x1 on this input: "
            + (
                f"name one with layer=... (spatial outputs, last first: {', '.join(spatial)})"
                if spatial
                else "pass a larger image size, or name a convolutional block with layer=..."
            )
        )
    name = _deepest_fine(order, model)
    if order[-1][1].layout != "nchw":  # a transformer: the last map the scores depend on
        width, seen = _width(model), set()
        tried = [(n, g) for n, g in order[::-1] if not (g.layout == "tokens" and width and g.channels != width)]
        tried = [(n, g) for n, g in tried if not (n in seen or seen.add(n))][:32]
        tried = sorted(tried, key=lambda ng: min(ng[1].size) < MIN_SIDE)  # maps of ≥ 4x4 first, deepest first
        name = next((n for n, g in tried if _positions_matter(model, example, n, g)), None)
        if name is None:
            raise I2XError(
                "no map layer's positions change the class scores on this input (checked, last first: "
                + ", ".join(n for n, _ in tried[:8])
                + "): name the target layer with layer=..."
            )
    _say_skipped(order, name)
    try:
        _DETECTED.setdefault(model, {})[key] = name
    except TypeError:  # a model that cannot be weakly referenced: just do not cache
        pass
    return name


MIN_SIDE = 4  # an automatic target map has at least 4x4 positions where the model has one


def _deepest_fine(order: list[tuple[str, Grid]], model: nn.Module) -> str:
    """The deepest main-path map with at least :data:`MIN_SIDE` positions a side, else the deepest map: at
    2x2 a prototype has four places and GradCAM's ReLU leaves many maps all zero. Passing over deeper maps,
    only whole blocks count (a module inside a block that is not
    a Sequential container is half a block: MobileNet's features.3, not features.4.block.0)."""
    if min(order[-1][1].size) >= MIN_SIDE:
        return order[-1][0]
    mods = dict(model.named_modules())
    chains = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

    def whole(n: str) -> bool:
        parts = n.split(".")
        return all(isinstance(mods.get(".".join(parts[:i])), chains) for i in range(1, len(parts)))

    fine = [n for n, g in order if min(g.size) >= MIN_SIDE and whole(n)]
    return fine[-1] if fine else order[-1][0]


def _say_skipped(order: list[tuple[str, Grid]], name: str) -> None:
    """Warn, once per detection, when deeper maps were passed over for being smaller than 4x4: which, and why."""
    names = [n for n, _ in order]
    at = names.index(name) if name in names else len(order) - 1
    chosen = order[at][1].size
    coarse = [(n, g.size) for n, g in order[at + 1 :] if min(g.size) < MIN_SIDE]  # all of them, when chosen is fine
    if coarse and min(chosen) >= MIN_SIDE:
        n, (h, w) = coarse[-1]
        warnings.warn(
            f"target layer {name} ({chosen[0]}x{chosen[1]}) chosen: the deeper {n} gives {h}x{w} maps on these "
            f"images, too few positions for prototypes (often all zero); pass layer={n!r} to use it anyway",
            stacklevel=3,
        )


def _positions_matter(model: nn.Module, example: torch.Tensor, name: str, grid: Grid) -> bool:
    """Whether the model's output depends on some grid position of ``name``'s output: a non-zero
    gradient of a fixed random direction of the input of the model's last ``nn.Linear`` (the
    classifier's features: a head initialised to zeros, as torchvision's ViT, still tells), or of
    the top class score when there is no Linear."""
    modules = dict(model.named_modules())
    module, store = modules[name], {}

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            store["a"] = out.detach().requires_grad_(True)
            return store["a"].clone()
        return None

    def head_input(_m, inp):
        if inp and isinstance(inp[0], torch.Tensor):
            store["head"] = inp[0]

    handles = [module.register_forward_hook(hook)]
    handles += [m.register_forward_pre_hook(head_input) for m in modules.values() if isinstance(m, nn.Linear)]
    try:
        with eval_mode(model), torch.enable_grad():
            scores = class_scores(model(example))
            h = store.get("head")
            if h is not None and h.requires_grad:
                direction = torch.randn(h.shape, generator=torch.Generator().manual_seed(0)).to(h)
                probe = (h * direction).sum()
            elif isinstance(scores, torch.Tensor) and scores.requires_grad:
                probe = scores.max(1).values.sum()
            else:
                return False
            if "a" not in store:
                return False
            (g,) = torch.autograd.grad(probe, store["a"], allow_unused=True)
    finally:
        for hd in handles:
            hd.remove()
    return g is not None and bool(grid.to_map(g).abs().amax() > 0)


def class_scores(out) -> torch.Tensor:
    """The class scores of a model's output: the tensor itself, the first element of a tuple
    or list (``(logits, aux)``), or a dict's ``logits``."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    elif isinstance(out, dict) and "logits" in out:
        out = out["logits"]
    return out


def candidate_layers(model: nn.Module, example: torch.Tensor | None = None, limit: int = 12) -> list[str]:
    """Meaningful choices for ``layer=``: modules whose output on ``example`` is a map of the
    image (last ones first, with their output shape); without an example, the top-level children."""
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


class Target(NamedTuple):
    """The resolved target layer: its name, the module, and how its output lies on the image
    (:class:`Grid`; None when no example input was given to measure it)."""

    name: str
    module: nn.Module
    grid: Grid | None


_GRIDS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def resolve_layer(
    model: nn.Module,
    layer: str | nn.Module | None,
    example: torch.Tensor | None = None,
    reshape: str | Callable = "auto",
) -> Target:
    """Turn ``layer`` (a name, a module of ``model``, or None = auto-detect) into a :class:`Target`;
    ``reshape`` (:data:`LAYOUTS`, or a callable (N, ...) -> (N, D, H', W') as pytorch-grad-cam's
    ``reshape_transform``) says how its output is a map. A layer whose output is not a map of the
    image (an attention internal, a 1x1 map, tokens that are no grid) is refused with the candidates."""
    if not callable(reshape) and reshape not in LAYOUTS:
        raise ConfigError("reshape", reshape, f"must be one of {', '.join(LAYOUTS)} (or, in Python, a callable)")
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, mod in modules.items():
            if mod is layer:
                if name == "":
                    raise I2XError("layer= is the model itself: pass one of its submodules (the last spatial block)")
                layer = name
                break
        else:
            raise I2XError(
                "layer= is a module that is not part of the model: pass one of model's submodules or its name"
            )
    if layer is None:
        if example is None:
            raise I2XError("layer=None needs an example input to detect the target layer: name the layer")
        layer = find_target_layer(model, example, "auto" if callable(reshape) else reshape)
    if not isinstance(layer, str) or layer not in modules or layer == "":
        cands = candidate_layers(model, example)
        raise I2XError(
            f"layer {layer!r} does not exist in the model; pass layer= one of "
            f"(last spatial layers first): {', '.join(cands)}"
        )
    return Target(layer, modules[layer], None if example is None else _grid(model, layer, example, reshape))


def _grid(model: nn.Module, name: str, example: torch.Tensor, reshape) -> Grid:
    """The :class:`Grid` of ``name``'s output on ``example`` (cached per model, layer and input signature)."""
    key = (name, tuple(example.shape[1:]), example.dtype, example.device.type, reshape)
    cached = _GRIDS.get(model, {}).get(key)
    if cached is not None:
        return cached
    module, seen = dict(model.named_modules())[name], {}

    def hook(_m, _i, out):
        seen["out"] = out.detach() if isinstance(out, torch.Tensor) else out

    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        handle.remove()
    out, hw = seen.get("out"), tuple(example.shape[-2:])
    if "out" not in seen:
        raise I2XError(
            f"layer {name!r} did not run during the forward pass: pass layer=... naming a module the model calls"
        )
    if not isinstance(out, torch.Tensor):
        g = None
    elif callable(reshape):
        m = reshape(out)
        ok = isinstance(m, torch.Tensor) and m.dim() == 4 and m.shape[0] == out.shape[0]
        g = Grid("custom", tuple(m.shape[2:]), int(m.shape[1]), fn=reshape) if ok else None
    else:
        g = grid_of(tuple(out.shape[1:]), hw, reshape, prefix_tokens(model))
    if g is None:
        what = f"{type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}"
        raise I2XError(
            f"layer {name!r} outputs {what} on a {hw[0]}x{hw[1]} image: not a map of the image's positions larger "
            "than 1x1 (an attention internal, a pooled vector, tokens that are not a patch grid); name a block with "
            f"layer= (maps, last first: {', '.join(candidate_layers(model, example))}), or give the layout with "
            f"reshape= ({', '.join(LAYOUTS[1:])}; in Python also a callable (N, ...) -> (N, D, H, W))"
        )
    try:
        _GRIDS.setdefault(model, {})[key] = g
    except TypeError:
        pass
    return g
