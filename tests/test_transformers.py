"""Vision transformers and any saliency source behind Eq. 1 (issue 25): token grids (ViT, DeiT: prefix
tokens dropped), Swin's NHWC maps, the layer found automatically, maps equal to pytorch-grad-cam's
GradCAM with the matching ``reshape_transform``, guards against layers that are no map of the image,
and a callable source (captum's LayerGradCam) equal to the built-in GradCAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from helpers import own_data, round_trip

import i2x
from i2x.errors import ConfigError, I2XError
from i2x.nn import layers as L
from i2x.nn.models import SmallCNN
from i2x.nn.saliency import method_name, saliency

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def vit(classes=10, **kw):
    """The issue's timm ViT (patch 4 on 32x32: an 8x8 grid and a class token), made small."""
    kw = {"depth": 2, "embed_dim": 32, "num_heads": 2, **kw}
    return timm.create_model("vit_tiny_patch16_224", num_classes=classes, img_size=32, patch_size=4, **kw)


def swin(classes=10):
    """A small timm Swin: NHWC stages of 8x8 and 4x4 on 32x32 images."""
    return timm.create_model(
        "swin_tiny_patch4_window7_224", num_classes=classes, img_size=32, window_size=4, embed_dim=16,
        depths=(2, 2), num_heads=(1, 2),
    )  # fmt: skip


def tv_vit(classes=10):
    """torchvision's VisionTransformer; its head starts at zero (no gradient anywhere), so it is re-drawn."""
    m = torchvision.models.VisionTransformer(
        image_size=32, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=classes
    )
    torch.nn.init.normal_(m.heads.head.weight, std=0.1)
    return m


def pgc_gradcam(model, module, x, t, reshape):
    """pytorch-grad-cam's GradCAM raw maps (before its normalisation) on ``module``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[module], reshape_transform=reshape)
    try:
        tg = [ClassifierOutputTarget(int(c)) for c in t]
        out = cam.activations_and_grads(x)
        model.zero_grad()
        sum(g(o) for g, o in zip(tg, out, strict=True)).backward()
        a = cam.activations_and_grads.activations[0].cpu().numpy()
        g = cam.activations_and_grads.gradients[0].cpu().numpy()
        return np.maximum(cam.get_cam_image(x, module, tg, a, g, False), 0)
    finally:
        cam.activations_and_grads.release()


@pytest.mark.parametrize(
    "build, layer, layout, grid, prefix",
    [
        (vit, "blocks.1.norm1", "tokens", [8, 8], 1),
        (lambda: vit(class_token=False, global_pool="avg"), "norm", "tokens", [8, 8], 0),
        (lambda: vit(reg_tokens=4), "blocks.1.norm1", "tokens", [8, 8], 5),
        (swin, "norm", "nhwc", [4, 4], 0),
        (tv_vit, "encoder.layers.encoder_layer_1.ln_1", "tokens", [8, 8], 1),
    ],
    ids=["timm-vit", "timm-vit-avgpool", "timm-vit-registers", "timm-swin", "torchvision-vit"],
)
def test_transformer_maps_are_found_and_equal_pytorch_grad_cam(build, layer, layout, grid, prefix):
    torch.manual_seed(0)
    m = build().eval()
    x, t = torch.randn(12, 3, 32, 32), torch.arange(12) % 10
    target = L.resolve_layer(m, None, x[:1])
    assert target.name == layer  # no layer= given: the last map the classifier's features depend on
    assert target.grid.info() == {
        "layout": layout,
        "grid": grid,
        "channels": target.grid.channels,
        "prefix_tokens": prefix,
    }
    ours = saliency(m, x, t)
    ref = pgc_gradcam(m, target.module, x, t, target.grid.to_map)
    assert ours.shape == (12, *grid)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    assert (np.ptp(ours.reshape(12, -1), axis=1) > 0).mean() >= 0.9  # not degenerate


def test_a_block_named_by_the_caller_works_and_torchvision_swin_too():
    torch.manual_seed(0)
    m = vit().eval()
    x = torch.randn(4, 3, 32, 32)
    assert saliency(m, x, [0, 1, 2, 3], layer="blocks.0").shape == (4, 8, 8)
    sw = torchvision.models.swin_t(num_classes=10).eval()
    t = L.resolve_layer(sw, None, torch.randn(1, 3, 128, 128))
    assert t.name == "permute" and t.grid.size == (4, 4)  # the final norm's map, put in NCHW by the model itself
    with pytest.warns(UserWarning, match="the deeper .* gives 2x2 maps"):  # on 64 px that map is 2x2: passed over
        t = L.resolve_layer(sw, None, torch.randn(1, 3, 64, 64))
    assert t.name == "features.5" and t.grid.size == (4, 4)
    assert L.resolve_layer(sw, "features.5", torch.randn(1, 3, 64, 64)).grid.layout == "nhwc"


def test_an_attention_internal_or_a_non_grid_is_refused_with_the_candidates():
    m = vit().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(I2XError) as e:  # heads x tokens x head-dim: not a map of the image
        L.resolve_layer(m, "blocks.1.attn.k_norm", x)
    msg = str(e.value)
    assert "blocks.1.attn.k_norm" in msg and "blocks.1 65x32" in msg and "reshape=" in msg
    with pytest.raises(I2XError, match="reshape="):  # 65 tokens read without a prefix: no grid
        L.resolve_layer(m, "blocks.1", x, reshape="nchw")
    with pytest.raises(ConfigError, match="reshape"):
        L.resolve_layer(m, "blocks.1", x, reshape="hwc")
    custom = L.resolve_layer(m, "blocks.1", x, reshape=lambda o: o[:, 1:].reshape(len(o), 8, 8, -1).permute(0, 3, 1, 2))
    assert custom.grid.layout == "custom" and custom.grid.size == (8, 8)


@pytest.mark.parametrize(
    "shape, hw, expected",
    [
        ((64, 7, 7), (28, 28), ("nchw", (7, 7), 0)),
        ((8, 8, 8), (32, 32), ("nchw", (8, 8), 0)),
        ((7, 7, 768), (224, 224), ("nhwc", (7, 7), 0)),
        ((512, 7, 5), (224, 160), ("nchw", (7, 5), 0)),
        ((7, 5, 768), (224, 160), ("nhwc", (7, 5), 0)),
        ((197, 384), (224, 224), ("tokens", (14, 14), 1)),
        ((198, 384), (224, 224), ("tokens", (14, 14), 2)),
        ((49, 768), (224, 224), ("tokens", (7, 7), 0)),
        ((3, 197, 64), (224, 224), None),  # attention heads x tokens x head-dim
        ((192,), (32, 32), None),
        ((512, 1, 1), (32, 32), None),
    ],
)
def test_grid_of_reads_the_layouts(shape, hw, expected):
    g = L.grid_of(shape, hw)
    assert (g if g is None else (g.layout, g.size, g.prefix)) == expected


def test_flat_saliency_is_flagged():
    from i2x.rundir import saliency_health

    rng = np.random.default_rng(0)
    assert saliency_health(rng.random((50, 4, 4)))[1] == []
    flat, reasons = saliency_health(rng.random((50, 4, 4)) * 1e-13)  # the k_norm case: ~0 everywhere
    assert flat == 1.0 and "flat" in reasons[0] and "layer=" in reasons[0]


def _captum_gradcam(model, images, targets):
    from captum.attr import LayerGradCam

    return LayerGradCam(model, model.features).attribute(images, target=targets, relu_attributions=True)


def test_a_callable_source_equals_the_built_in_gradcam():
    pytest.importorskip("captum")
    torch.manual_seed(0)
    m = SmallCNN(in_channels=1, num_classes=10).eval()
    x, t = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    ours = saliency(m, x, t, layer="features")
    theirs = saliency(m, x, t, layer="features", method=_captum_gradcam)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(ours).max()
    assert method_name(_captum_gradcam) == "callable:test_transformers._captum_gradcam"
    with pytest.raises(I2XError, match=r"\(N, H', W'\)"):
        saliency(m, x, t, method=lambda model, images, targets: torch.zeros(len(images)))


def test_a_vit_round_trip_run_explain_report_finetune_faithfulness_compare(tmp_path, capsys):
    torch.manual_seed(0)
    model = vit(classes=3)
    train, test = own_data(60), own_data(30, seed=1)
    kw = dict(train=train, test=test, epochs=1, batch_size=20, every=1, prototypes=4, min_cluster_size=3,
              explain_fraction=0.5, device="cpu", progress=False, stability_resamples=4)  # fmt: skip
    r = i2x.run(out=tmp_path / "vit", model=model, **kw)
    m = r.manifest
    assert m["model"]["layer"] == "blocks.1.norm1" and m["model"]["target"]["grid"] == [8, 8]
    assert m["model"]["feature_shape"] == [8, 8, 32]
    assert "tokens on a 8x8 grid" in (r.path / "report" / "index.html").read_text()
    round_trip(r, model, test, capsys)
    torch.manual_seed(1)
    r2 = i2x.run(out=tmp_path / "vit-captum", model=vit(classes=3), method=_captum_vit, **kw)
    assert r2.manifest["config"]["method"] == "callable:test_transformers._captum_vit"
    from i2x.cli import main

    assert main(["compare", str(r.path), str(r2.path), "--out", str(tmp_path / "cmp"), "--no-html"]) == 0
    assert "prototypes" in capsys.readouterr().out


def _captum_vit(model, images, targets):
    """captum's gradient x activation at a ViT block, its tokens put on the patch grid and summed over
    channels (captum's LayerGradCam averages a 3-D output's gradient over its last axis, not the tokens)."""
    from captum.attr import LayerGradientXActivation

    grid = L.resolve_layer(model, "blocks.1.norm1", images[:1]).grid
    attr = LayerGradientXActivation(model, model.blocks[1].norm1).attribute(images, target=targets)
    return grid.to_map(attr).sum(1)  # (N, 8, 8)
