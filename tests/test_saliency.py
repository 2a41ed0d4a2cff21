"""Saliency engine: exactness against captum / grad-cam, model state restored, bad input."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from i2x.errors import I2XError
from i2x.nn.models import SmallCNN, resnet50_small

S = importlib.import_module("i2x.nn.saliency")

captum_attr = pytest.importorskip("captum.attr")
pgc = pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny batches on a shared 2-core machine: a second intra-op thread only adds waiting
    (per-op synchronisation with a descheduled thread), so run this file single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PGC_NAMES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "xgradcam": "XGradCAM"}


def _seeded(builder, seed=0, **kw):
    torch.manual_seed(seed)
    m = builder(**kw)
    # non-trivial BatchNorm statistics so eval mode differs from train mode
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def cnn():
    return _seeded(SmallCNN)


@pytest.fixture(scope="module")
def resnet():
    return _seeded(resnet50_small)


def _x(n, c=1, size=28, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g)  # (N, C, H, W)


def _captum(model, layer, x, t):
    module = dict(model.named_modules())[layer]
    out = captum_attr.LayerGradCam(model, module).attribute(
        x, target=t, relu_attributions=True, attribute_to_layer_input=False
    )  # (N, 1, H', W')
    return out[:, 0].detach().numpy()


def _close(a, b, atol=1e-5, rtol=1e-5):
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, atol=atol * scale, rtol=rtol)


# --------------------------------------------------------------------------- exactness


def test_gradcam_equals_captum_small_cnn(cnn):
    x, t = _x(6), torch.tensor([0, 1, 2, 3, 4, 9])
    ours = S.saliency(cnn, x, t, layer="features")
    ref = _captum(cnn, "features", x, t)
    assert ours.shape == ref.shape == (6, 7, 7) and ours.dtype == np.float32
    assert ours.max() > 0  # not vacuous
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_gradcam_equals_captum_resnet50(resnet):
    x, t = _x(2), torch.tensor([3, 7])
    ours = S.saliency(resnet, x, t, layer="layer4")
    ref = _captum(resnet, "layer4", x, t)
    assert ours.shape == ref.shape == (2, 4, 4)
    assert ours.max() > 0
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "xgradcam"])
@pytest.mark.parametrize("which", ["cnn", "resnet"])
def test_methods_equal_grad_cam_package_on_same_act_and_grad(method, which, cnn, resnet):
    model, layer = (cnn, "features") if which == "cnn" else (resnet, "layer4")
    x, t = _x(3), torch.tensor([1, 5, 8])
    act, grad = S.activations_and_gradients(model, x, t, layer=layer)  # (N, D, H', W')
    a, g = act.numpy(), grad.numpy()
    cls = getattr(pgc, PGC_NAMES[method])
    engine = cls(model=model, target_layers=[dict(model.named_modules())[layer]])
    try:
        raw = engine.get_cam_image(x, None, None, a, g, False)  # before its scaling
    finally:
        engine.activations_and_grads.release()
    ref = np.maximum(raw, 0)
    ours = S.saliency(model, x, t, layer=layer, method=method)
    _close(ours, ref)
    _close(S.cam(method, act, grad).numpy(), ref)


@pytest.mark.parametrize("method", ["gradcam++", "layercam", "xgradcam"])
def test_pgc_path_equals_native(method, cnn):
    """The package's own hooks and full backward give the same raw maps as the fast path."""
    x, t = _x(4), torch.tensor([2, 2, 6, 0])
    native = S.saliency(cnn, x, t, layer="features", method=method)
    via_pgc = S.saliency(cnn, x, t, layer="features", method="pgc:" + PGC_NAMES[method], batch_size=3)
    _close(native, via_pgc)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 5), st.integers(1, 4))
def test_cam_weights_match_grad_cam_formulas(seed, n, d, hw):
    g = torch.Generator().manual_seed(seed)
    act = torch.relu(torch.randn(n, d, hw, hw, generator=g))  # post-ReLU activations
    grad = torch.randn(n, d, hw, hw, generator=g)
    grad[grad.abs() < 0.3] = 0  # exercise the g == 0 branch
    a, gr = act.double().numpy(), grad.double().numpy()
    _close(S.gradcam_weights(grad).numpy(), pgc.GradCAM.get_cam_weights(None, None, None, None, a, gr))
    _close(
        S.gradcampp_weights(act, grad).numpy(),
        pgc.GradCAMPlusPlus.get_cam_weights(None, None, None, None, a, gr),
        atol=1e-4,
        rtol=1e-4,
    )
    _close(
        S.xgradcam_weights(act, grad).numpy(),
        pgc.XGradCAM.get_cam_weights(None, None, None, None, a, gr),
        atol=1e-4,
        rtol=1e-4,
    )
    _close(S.layercam_map(act, grad).numpy(), pgc.LayerCAM.get_cam_image(None, None, None, None, a, gr, False))


def test_targets_none_explains_prediction_and_batching_is_invariant(cnn):
    x = _x(7)
    with torch.no_grad():
        pred = cnn(x).argmax(1)
    full = S.saliency(cnn, x, None, layer="features", batch_size=7)
    batched = S.saliency(cnn, x, pred.numpy(), layer="features", batch_size=3)
    np.testing.assert_allclose(full, batched, atol=1e-6, rtol=1e-5)


def test_saliency_and_confidence(cnn):
    x, t = _x(5), [1, 2, 3, 4, 5]
    probs, maps = S.saliency_and_confidence(cnn, x, t, "features", "gradcam", 2, None)
    with torch.no_grad():
        ref = torch.softmax(cnn(x), 1).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(maps, S.saliency(cnn, x, t, layer="features"), atol=1e-7)


def test_features_are_the_target_layer_activations(cnn):
    x = _x(3)
    f = S.features(cnn, x, "features", batch_size=2)
    with torch.no_grad():
        ref = cnn.features(x).permute(0, 2, 3, 1).numpy()
    assert f.shape == (3, 7, 7, 64)
    np.testing.assert_allclose(f, ref, atol=1e-6)


def test_normalize_and_output_size(cnn):
    x, t = _x(3), [0, 1, 2]
    m = S.saliency(cnn, x, t, layer="features", normalize=True, output_size=(28, 28))
    assert m.shape == (3, 28, 28)
    assert m.min() >= 0 and m.max() <= 1 + 1e-6
    np.testing.assert_allclose(m.reshape(3, -1).max(1), 1, atol=1e-2)  # eps 1e-7 vs tiny maps


# --------------------------------------------------------------------------- model zoo / traps


def test_inplace_relu_after_target_layer():
    """The output of features.1 (BatchNorm) is modified in place by features.2 = ReLU(inplace):
    the saved activation must be the BatchNorm output, as in a copy without in-place ops."""
    model = _seeded(SmallCNN)
    ref_model = copy.deepcopy(model)
    for mod in ref_model.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    x, t = _x(3), torch.tensor([4, 1, 0])
    for method in ("gradcam", "gradcam++", "layercam", "xgradcam"):
        ours = S.saliency(model, x, t, layer="features.1", method=method)
        act, grad = S.activations_and_gradients(ref_model, x, t, layer="features.1")
        assert (act < 0).any()  # pre-ReLU values survived the in-place ReLU
        _close(ours, S.cam(method, act, grad).numpy())
    np.testing.assert_allclose(
        S.saliency(model, x, t, layer="features.1"), _captum(ref_model, "features.1", x, t), atol=1e-5
    )


def test_plain_sequential_cnn_autodetects_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()
    x, t = _x(4, c=3, size=12), torch.tensor([0, 1, 2, 3])
    ours = S.saliency(model, x, t)  # layer auto-detected: "3"
    assert ours.shape == (4, 6, 6)
    np.testing.assert_allclose(ours, _captum(model, "3", x, t), atol=1e-6)


def test_inception_v3_mixed_7c():
    tv = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = tv.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=5).eval()
    x, t = _x(2, c=3, size=107), torch.tensor([1, 4])  # 107x107 -> a 2x2 Mixed_7c (75 -> 1x1)
    probs, maps = S.saliency_and_confidence(model, x, t, "Mixed_7c", "gradcam", 2, None)  # auto: Mixed_6e (5x5)
    assert maps.shape == (2, 2, 2)
    np.testing.assert_allclose(maps, _captum(model, "Mixed_7c", x, t), atol=1e-5)
    assert probs.shape == (2, 5)


def test_no_gradient_below_the_target_layer():
    """Backward stops at the target layer: a probe below it never sees a backward call."""
    calls = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return g

    class ProbeMod(nn.Module):
        def forward(self, x):
            return Probe.apply(x)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        ProbeMod(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    x = _x(2, size=8).requires_grad_(True)  # even an input requiring grad is not differentiated
    S.saliency(model, x, [0, 2], layer="3")
    assert calls == [] and x.grad is None


def _state(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "hooks": [
            (
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_backward_pre_hooks", {})),
            )
            for m in model.modules()
        ],
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
    }


@pytest.mark.parametrize("method", ["gradcam", "layercam", "pgc:GradCAM"])
def test_model_exactly_restored(method):
    model = _seeded(SmallCNN)
    model.train()
    model.head.eval()  # mixed modes must survive
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)  # mixed flags must survive
        if i % 3 == 0:
            p.grad = torch.full_like(p, 0.5)  # existing grads must survive
    model.features[0].register_forward_hook(lambda *a: None)  # a user's hook stays, alone
    before = _state(model)
    S.saliency(model, _x(3), [1, 2, 3], layer="features", method=method)
    after = _state(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    assert after["grad_ids"] == before["grad_ids"]
    for a, b in zip(after["grad"], before["grad"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(after["params"] + after["buffers"], before["params"] + before["buffers"], strict=True):
        assert torch.equal(a, b)  # eval mode: BatchNorm stats untouched


def test_model_restored_after_an_error(cnn):
    before = _state(cnn)
    with pytest.raises(I2XError):
        S.saliency(cnn, _x(2), [0, 99], layer="features")  # fails inside the hooked call
    after = _state(cnn)
    assert after["hooks"] == before["hooks"] and after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "gradcamx"}, "gradcam\\+\\+, layercam, xgradcam"),
        ({"method": "pgc:NoSuchCAM"}, "pgc:ScoreCAM"),
        ({"images": torch.zeros(1, 28, 28)}, "images must be a \\(N, C, H, W\\)"),
        ({"images": torch.zeros(2, 3, 28, 28)}, "expects 1"),
        ({"images": torch.zeros(2, 1, 28, 28, dtype=torch.uint8)}, "floating point"),
        ({"targets": [1, 2, 3]}, "one class index per image \\(2\\)"),
        ({"targets": [1, 10]}, "outputs 10 classes"),
        ({"targets": [1, -1]}, ">= 0"),
        ({"layer": "nope"}, "features 64x7x7"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_input_raises_i2x_error(cnn, kwargs, match):
    args = {"images": _x(2), "targets": [1, 2], "layer": "features", "method": "gradcam"}
    args.update(kwargs)
    with pytest.raises(I2XError, match=match):
        S.saliency(
            cnn,
            args["images"],
            args["targets"],
            layer=args["layer"],
            method=args["method"],
            batch_size=kwargs.get("batch_size", 128),
        )
