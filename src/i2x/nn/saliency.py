"""Saliency maps at the target layer (spec Eq. 1). Torch lives here, behind the boundary.

Hot path of the recorder: one saliency map per explanation sample per checkpoint. Per batch
the engine runs one forward pass and one backward pass *from the class scores to the target
layer only*:

* parameters are frozen for the call, and the target layer's output is replaced by a fresh
  leaf (``detach().requires_grad_()``), so autograd records nothing below the target layer:
  the forward below it costs what an inference forward costs;
* ``torch.autograd.grad(score, leaf)`` differentiates the head only (for ResNet / the small CNN:
  global average pool + linear) and writes nothing to ``.grad``.

The CAM formulas are small pure functions on (activations, gradients) so that they can be
checked one by one against the ``grad-cam`` package's ``get_cam_weights`` / ``get_cam_image``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..analysis.prototypes import FeatureStream
from ..data import LazyImages, read_batches
from ..errors import I2XError
from .layers import Grid, class_scores, resolve_layer
from .utils import eval_mode, kept_parameters

# Methods computed natively (exact, one forward + partial backward per batch).
METHODS = ("gradcam", "gradcam++", "layercam", "xgradcam")
# Any CAM class of the ``grad-cam`` package can be used as "pgc:<ClassName>" (slow path).
PGC_PREFIX = "pgc:"
# Any other source: a callable (model, images (B, C, H, W), targets (B,)) -> maps (B, H', W'),
# e.g. captum's LayerGradCam(model, layer).attribute(images, target=targets) (docs/METHOD.md).
CALLABLE_PREFIX = "callable:"  # how a run records a callable source
SaliencyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | np.ndarray"]


# --------------------------------------------------------------------------- CAM math
# act, grad: (N, D, H, W) float tensors at the target layer; every map below is (N, H, W).


def gradcam_weights(grad: torch.Tensor) -> torch.Tensor:
    """GradCAM (Selvaraju et al. 2017): channel weight = spatial mean of the gradient."""
    return grad.mean(dim=(2, 3))  # (N, D)


def gradcampp_weights(act: torch.Tensor, grad: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GradCAM++ (Chattopadhay et al. 2018, Eq. 19) with the exp(score) trick, as ``grad-cam``:
    alpha = g^2 / (2 g^2 + sum_ij(A) g^3), zeroed where g == 0; weight = sum_ij relu(g) alpha."""
    g2 = grad * grad  # (N, D, H, W)
    g3 = g2 * grad  # (N, D, H, W)
    sum_act = act.sum(dim=(2, 3), keepdim=True)  # (N, D, 1, 1)
    alpha = g2 / (2 * g2 + sum_act * g3 + eps)  # (N, D, H, W)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    return (torch.relu(grad) * alpha).sum(dim=(2, 3))  # (N, D)


def xgradcam_weights(act: torch.Tensor, grad: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """XGradCAM (Fu et al. 2020): weight = sum_ij g * A / sum_ij A."""
    sum_act = act.sum(dim=(2, 3), keepdim=True)  # (N, D, 1, 1)
    return (grad * act / (sum_act + eps)).sum(dim=(2, 3))  # (N, D)


def weighted_sum(weights: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """sum_d w_d A_d; einsum avoids materialising the (N, D, H, W) product."""
    return torch.einsum("nd,ndhw->nhw", weights, act)  # (N, H, W)


def layercam_map(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): per-position weights relu(g), summed over channels."""
    return (torch.relu(grad) * act).sum(dim=1)  # (N, H, W)


def cam(method: str, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Raw map of ``method``: at the layer's resolution, ReLU'd, not normalised."""
    if method == "gradcam":
        m = weighted_sum(gradcam_weights(grad), act)
    elif method == "gradcam++":
        m = weighted_sum(gradcampp_weights(act, grad), act)
    elif method == "xgradcam":
        m = weighted_sum(xgradcam_weights(act, grad), act)
    elif method == "layercam":
        m = layercam_map(act, grad)
    else:
        raise I2XError(_method_message(method))
    return torch.relu(m)  # (N, H, W)


def normalize_maps(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-image min-max to [0, 1] for display (as ``grad-cam``'s ``scale_cam_image``).
    Never used for analysis: it destroys comparability across checkpoints."""
    lo = maps.amin(dim=(1, 2), keepdim=True)  # (N, 1, 1)
    m = maps - lo
    return m / (m.amax(dim=(1, 2), keepdim=True) + eps)  # (N, H, W)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (N, H', W') maps to ``size`` = (H, W) for overlays."""
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


# --------------------------------------------------------------------------- hooks


@contextmanager
def _capture(model: nn.Module, module: nn.Module) -> Iterator[dict]:
    """Hook ``module`` so its output becomes a fresh leaf that requires grad.

    Cutting the graph at the target layer means backward runs from the class scores to the
    target layer only. The leaf is cloned before it goes on, so an in-place op after the
    layer (ReLU(inplace=True)) cannot modify the saved activation (and autograd's version
    check cannot fail, the known trap of backward hooks on in-place models). Parameters are
    frozen for the call and everything (mode, requires_grad, hooks) is restored in ``finally``;
    ``.grad`` is never written because only ``torch.autograd.grad`` to the leaf is used.
    """
    store: dict = {}

    def hook(_m, _i, out):
        if not isinstance(out, torch.Tensor):
            raise I2XError(
                f"the target layer must output a tensor, got {type(out).__name__}: name a block with layer= "
                "(i2x.nn.layers.spatial_layers(model, example) lists the candidates)"
            )
        a = out.detach().requires_grad_(True)
        store["act"] = a
        return a.clone()

    flags = [(p, p.requires_grad) for p in model.parameters()]
    handle = module.register_forward_hook(hook)
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        # eval: BatchNorm uses running statistics, so sample i's score depends on sample i
        # only, which makes the gradient of the summed scores per-sample exact.
        with eval_mode(model):
            yield store
    finally:
        handle.remove()
        for p, f in flags:
            p.requires_grad_(f)


# --------------------------------------------------------------------------- input checks


def _method_message(method) -> str:
    return (
        f"method={method!r} is not supported; choose one of: {', '.join(METHODS)} "
        f"(or '{PGC_PREFIX}<ClassName>' for a class of the grad-cam package, e.g. '{PGC_PREFIX}ScoreCAM')"
    )


def _check_method(method) -> None:
    if callable(method):
        return
    if isinstance(method, str) and method.startswith(CALLABLE_PREFIX):
        raise I2XError(
            f"method={method!r}: this run's saliency came from a Python callable; pass the function itself "
            "again as method= (i2x.run(..., method=fn, resume=True))"
        )
    if not isinstance(method, str):
        raise I2XError(_method_message(method))
    if method in METHODS:
        return
    if method.startswith(PGC_PREFIX):
        _pgc_class(method)  # raises I2XError with the fix
        return
    raise I2XError(_method_message(method))


def _first_conv(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    return None


def _check_images(model: nn.Module, images) -> torch.Tensor:
    if isinstance(images, LazyImages):  # the caller's Dataset, read a batch at a time: check its first image
        _check_images(model, images[:1])
        return images
    images = torch.as_tensor(images)
    if images.dim() != 4:
        raise I2XError(
            f"images must be a (N, C, H, W) tensor, got shape {tuple(images.shape)}: "
            "add the channel axis (e.g. images[:, None]) or the batch axis (images[None])"
        )
    if not images.is_floating_point():
        raise I2XError(f"images must be floating point (got {images.dtype}): convert with images.float() / 255")
    conv = _first_conv(model)
    if conv is not None and conv.in_channels != images.shape[1]:
        raise I2XError(
            f"images have {images.shape[1]} channels but the model's first convolution expects "
            f"{conv.in_channels}: pass images of shape (N, {conv.in_channels}, H, W)"
        )
    return images


def _check_targets(targets, n: int) -> torch.Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(np.asarray(targets))
    if t.dim() == 0:
        raise I2XError(f"targets must have one class index per image ({n}), got a scalar: pass a sequence")
    if t.is_floating_point() or t.dtype == torch.bool:
        if t.is_floating_point() and t.numel() and not bool((t == t.round()).all()):
            raise I2XError("targets must be integer class indices, got non-integer values")
    t = t.to(torch.long)
    if t.shape != (n,):
        raise I2XError(
            f"targets must have one class index per image ({n}), got shape {tuple(t.shape)}: "
            "pass a 1-D sequence of length N, or targets=None for the predicted class"
        )
    if n and int(t.min()) < 0:
        raise I2XError(f"targets must be class indices >= 0, got {int(t.min())}")
    return t


def _check_range(t: torch.Tensor, num_classes: int) -> None:
    if t.numel() and int(t.max()) >= num_classes:
        raise I2XError(
            f"targets contains class {int(t.max())} but the model outputs {num_classes} classes: "
            f"pass class indices in 0..{num_classes - 1}"
        )


def _logits(out) -> torch.Tensor:
    out = class_scores(out)  # (logits, aux) and {"logits": ...} outputs
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise I2XError(
            "the model must return class scores of shape (N, classes), got "
            f"{type(out).__name__}{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}"
        )
    return out


# --------------------------------------------------------------------------- engine


def _batches(n: int, batch_size: int) -> range:
    if int(batch_size) < 1:
        raise I2XError(f"batch_size must be >= 1, got {batch_size}")
    return range(0, n, int(batch_size))


def _act_grad(model, store, x, t, grid: Grid):
    """One forward, one backward to the leaf: (logits (B, C), act, grad (B, D, H', W'), t); the
    layer's output and its gradient are put on the grid by the same selection (:meth:`Grid.to_map`)."""
    logits = _logits(model(x))  # (B, C)
    act = store.pop("act", None)
    if act is None:
        raise I2XError(
            "the target layer did not run during the forward pass: pass layer=... naming a module the model calls"
        )
    if t is None:
        t = logits.detach().argmax(1)  # (B,)
    _check_range(t, logits.shape[1])
    # Summing the chosen scores is exact per sample: in eval mode sample i's score depends on
    # sample i's activation only, so d(sum)/dA_i = d score_i / dA_i (one backward per batch).
    score = logits.gather(1, t[:, None]).sum()
    if not score.requires_grad:
        raise I2XError(
            "the class scores do not depend on the target layer: "
            "pass layer=... naming a module on the path to the output"
        )
    (grad,) = torch.autograd.grad(score, act)  # the layer's own layout
    return logits.detach(), grid.to_map(act.detach()), grid.to_map(grad), t  # (B, D, H', W')


def _prepare(model, images, targets, layer, method, batch_size, device, reshape="auto"):
    _check_method(method)
    images = _check_images(model, images)
    targets = _check_targets(targets, images.shape[0])
    _batches(images.shape[0], batch_size)
    p = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    dtype = p.dtype if p is not None and p.is_floating_point() else images.dtype
    # the one-image example is only run to auto-detect the layer or to list candidates on error
    target = resolve_layer(model, layer, images[:1].to(device, dtype) if len(images) else None, reshape)
    return images, targets, target, device, dtype


def saliency_and_confidence(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | np.ndarray | None,
    layer: str | nn.Module | None = None,
    method: str | SaliencyFn = "gradcam",
    batch_size: int = 128,
    device: str | torch.device | None = None,
    *,
    normalize: bool = False,
    output_size: tuple[int, int] | None = None,
    reshape: str | Callable = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """One forward and one partial backward per batch: returns (confidences (N, C), maps (N, H', W')).

    ``targets=None`` explains the predicted class. Maps are raw (ReLU'd, at the layer's
    resolution, float32) unless ``normalize`` (per-image min-max, display only) or
    ``output_size=(H, W)`` (bilinear upsampling) ask otherwise. Memory is bounded by one
    batch: results are written into preallocated arrays batch by batch. ``reshape``: how the
    layer's output is a map (:func:`i2x.nn.layers.resolve_layer`; ViT tokens and Swin's NHWC are
    found by ``auto``). ``method``: a built-in name, ``pgc:<Class>``, or a callable
    ``(model, images, targets) -> (N, H', W')`` (:data:`SaliencyFn`; its maps are taken as given).
    """
    images, targets, target, device, dtype = _prepare(
        model, images, targets, layer, method, batch_size, device, reshape
    )
    n = images.shape[0]
    if callable(method):
        return _callable_saliency(model, images, targets, method, batch_size, device, dtype, normalize, output_size)
    if method.startswith(PGC_PREFIX):
        with eval_mode(model):  # the package puts the model in eval mode and leaves it there
            return _pgc_saliency(
                model, target, images, targets, method, batch_size, device, dtype, normalize, output_size
            )
    probs = maps = None
    with _capture(model, target.module) as store, torch.enable_grad():
        for i in _batches(n, batch_size):
            x = images[i : i + batch_size].to(device, dtype)  # (B, C, H, W)
            t = None if targets is None else targets[i : i + batch_size].to(device)
            logits, act, grad, t = _act_grad(model, store, x, t, target.grid)
            with torch.no_grad():
                m = _post(cam(method, act, grad), normalize, output_size)  # (B, H', W')
                p = torch.softmax(logits.float(), 1)  # (B, C)
            probs, maps = _put(probs, maps, n, i, p, m)
            del act, grad, logits
    return _done(probs, maps)


def _put(probs, maps, n: int, i: int, p: torch.Tensor, m: torch.Tensor):
    """Write one batch's confidences (B, C) and maps (B, H', W') at row ``i`` of the (N, ...) outputs."""
    if maps is None:
        maps = torch.empty((n, *m.shape[1:]), dtype=torch.float32)  # (N, H', W')
        probs = torch.empty((n, p.shape[1]), dtype=torch.float32)  # (N, C)
    maps[i : i + len(m)] = m
    probs[i : i + len(p)] = p
    return probs, maps


def _done(probs, maps) -> tuple[np.ndarray, np.ndarray]:
    if maps is None:  # N == 0
        return np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32)
    return probs.numpy(), maps.numpy()


def _post(m: torch.Tensor, normalize: bool, output_size) -> torch.Tensor:
    m = m.float()
    if output_size is not None:
        m = upsample_maps(m, output_size)
    if normalize:
        m = normalize_maps(m)
    return m


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    targets,
    layer: str | nn.Module | None = None,
    method: str | SaliencyFn = "gradcam",
    batch_size: int = 128,
    device: str | torch.device | None = None,
    *,
    normalize: bool = False,
    output_size: tuple[int, int] | None = None,
    reshape: str | Callable = "auto",
) -> np.ndarray:
    """Raw saliency maps (N, H', W') float32 at the target layer; ReLU'd, not normalised."""
    return saliency_and_confidence(
        model,
        images,
        targets,
        layer,
        method,
        batch_size,
        device,
        normalize=normalize,
        output_size=output_size,
        reshape=reshape,
    )[1]


def activations_and_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets,
    layer: str | nn.Module | None = None,
    device: str | torch.device | None = None,
    reshape: str | Callable = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target-layer activations and d score_target / d activation, both (N, D, H', W') on the
    layer's grid, for one batch (no batching: meant for tests and for checking the CAM formulas)."""
    images, targets, target, device, dtype = _prepare(model, images, targets, layer, "gradcam", 1, device, reshape)
    with _capture(model, target.module) as store, torch.enable_grad():
        t = None if targets is None else targets.to(device)
        _, act, grad, _ = _act_grad(model, store, images.to(device, dtype), t, target.grid)
    return act, grad


def features(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    reshape: str | Callable = "auto",
) -> np.ndarray:
    """Target-layer activations h(x) as (N, H', W', D) float32 (stage 2 input), written batch by
    batch into one array (no second copy of all of them)."""
    out, i = None, 0
    for a in _feature_batches(model, images, layer, batch_size, device, reshape=reshape):
        if out is None:
            out = np.empty((len(images), *a.shape[1:]), np.float32)
        out[i : i + len(a)] = a
        i += len(a)
    return out if out is not None else np.zeros((0, 0, 0, 0), np.float32)


def feature_stream(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    reshape: str | Callable = "auto",
) -> FeatureStream:
    """The activations of :func:`features`, a batch at a time (:class:`~i2x.analysis.prototypes.FeatureStream`):
    prototypes fitted on a whole training set never hold its features in memory."""
    return FeatureStream(
        len(images), lambda idx: _feature_batches(model, images, layer, batch_size, device, idx, reshape)
    )


def _feature_batches(model, images, layer, batch_size: int, device, indices=None, reshape="auto"):
    """(B, H', W', D) float32 numpy arrays of consecutive batches of ``images`` (of ``images[indices]``)."""
    images, _, target, device, dtype = _prepare(model, images, None, layer, "gradcam", batch_size, device, reshape)
    n = images.shape[0] if indices is None else len(indices)
    rows = [slice(i, i + batch_size) if indices is None else torch.as_tensor(indices[i : i + batch_size])
            for i in range(0, n, batch_size)]  # fmt: skip
    with _capture(model, target.module) as store, torch.no_grad():
        for x in read_batches(images, rows):  # the caller's DataLoader workers read the caller's Dataset ahead
            model(x.to(device, dtype))
            yield target.grid.to_map(store.pop("act")).permute(0, 2, 3, 1).float().cpu().numpy()


# --------------------------------------------------------------------------- a callable source


def method_name(method: str | SaliencyFn) -> str:
    """How a run records its saliency source: the built-in's name, or ``callable:<qualified name>``."""
    if isinstance(method, str):
        return method
    fn = getattr(method, "func", method)  # functools.partial
    return f"{CALLABLE_PREFIX}{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def _callable_saliency(model, images, targets, fn, batch_size, device, dtype, normalize, output_size):
    """Maps from the caller's ``fn(model, images, targets)``: confidences from one no-grad forward
    (eval mode), targets the labels or the prediction; (N, 1, H', W') outputs (captum's layer
    attributions) lose the channel axis. The parameters' requires_grad and .grad are restored."""
    n, probs, maps = images.shape[0], None, None
    with eval_mode(model), kept_parameters(model):
        for i in _batches(n, batch_size):
            x = images[i : i + batch_size].to(device, dtype)
            with torch.no_grad():
                logits = _logits(model(x))
            t = logits.argmax(1) if targets is None else targets[i : i + batch_size].to(device)
            _check_range(t, logits.shape[1])
            with torch.enable_grad():
                m = fn(model, x, t)
            m = torch.as_tensor(m.detach() if isinstance(m, torch.Tensor) else np.asarray(m))
            if m.dim() == 4 and m.shape[1] == 1:
                m = m[:, 0]
            if m.dim() != 3 or m.shape[0] != len(x):
                raise I2XError(
                    f"method {method_name(fn)} returned shape {tuple(m.shape)} for {len(x)} images: "
                    "a saliency callable must return (N, H', W') maps (or (N, 1, H', W'))"
                )
            probs, maps = _put(
                probs, maps, n, i, torch.softmax(logits.float(), 1).cpu(), _post(m.cpu(), normalize, output_size)
            )
    return _done(probs, maps)


# --------------------------------------------------------------------------- grad-cam package


def _pgc_class(method: str):
    name = method[len(PGC_PREFIX) :]
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.base_cam import BaseCAM
    except ImportError as e:  # optional dependency
        raise I2XError(f"method={method!r} needs the grad-cam package: pip install grad-cam") from e
    cls = getattr(pytorch_grad_cam, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseCAM)):
        valid = sorted(
            n
            for n in dir(pytorch_grad_cam)
            if isinstance(getattr(pytorch_grad_cam, n), type) and issubclass(getattr(pytorch_grad_cam, n), BaseCAM)
        )
        raise I2XError(
            f"method={method!r}: grad-cam has no CAM class {name!r}; choose one of: "
            + ", ".join(PGC_PREFIX + v for v in valid)
        )
    return cls


def _pgc_saliency(model, target, images, targets, method, batch_size, device, dtype, normalize, output_size):
    """Any grad-cam class through its own hooks and backward (the layer's grid as its
    ``reshape_transform``), raw maps taken from its ``get_cam_image`` (before its normalisation and
    upsampling). Slow path: the package runs a full backward through the model. requires_grad and
    .grad are restored (the mode by the caller)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls, module = _pgc_class(method), target.module
    reshape = None if target.grid is None or target.grid.layout == "nchw" else target.grid.to_map
    n = images.shape[0]
    probs = maps = None
    engine = None
    with kept_parameters(model):
        try:
            # the package's gradient hook needs the layer output to require grad: via the params
            for p in model.parameters():
                p.requires_grad_(True)
            engine = cls(model=model, target_layers=[module], reshape_transform=reshape)
            for i in _batches(n, batch_size):
                x = images[i : i + batch_size].to(device, dtype)
                with torch.enable_grad():
                    logits = _logits(engine.activations_and_grads(x))  # (B, C)
                    t = logits.detach().argmax(1) if targets is None else targets[i : i + batch_size].to(device)
                    _check_range(t, logits.shape[1])
                    tgts = [ClassifierOutputTarget(int(c)) for c in t]
                    if engine.uses_gradients:
                        model.zero_grad()
                        sum(tg(o) for tg, o in zip(tgts, logits, strict=True)).backward()
                act = engine.activations_and_grads.activations[0].cpu().numpy()
                grads = engine.activations_and_grads.gradients
                grad = grads[0].cpu().numpy() if grads else None
                raw = engine.get_cam_image(x, module, tgts, act, grad, False)  # (B, H', W')
                m = _post(torch.relu(torch.as_tensor(np.asarray(raw))), normalize, output_size)
                probs, maps = _put(probs, maps, n, i, torch.softmax(logits.detach().float(), 1).cpu(), m)
        finally:
            if engine is not None:
                engine.activations_and_grads.release()
    return _done(probs, maps)
