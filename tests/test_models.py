"""Built-in models: output shapes, target layers and their spatial size on small images."""

from __future__ import annotations

import pytest
import torch

from i2x.errors import I2XError
from i2x.nn.layers import resolve_layer
from i2x.nn.models import MODELS, TARGET_LAYERS, build_model


def _target_shape(model, x):
    name, mod, _ = resolve_layer(model, None, x[:1])
    out = {}
    h = mod.register_forward_hook(lambda m, i, o: out.update(shape=tuple(o.shape)))
    try:
        model.eval()
        with torch.no_grad():
            y = model(x)
    finally:
        h.remove()
    return name, out["shape"], y


@pytest.mark.parametrize(
    "name, shape, grid",
    [
        ("smallcnn", (1, 28, 28), 7),
        ("smallcnn", (3, 32, 32), 8),
        ("resnet50", (1, 28, 28), 4),
        ("resnet50", (3, 32, 32), 4),
    ],
)
def test_builtin_models_target_layer(name, shape, grid):
    torch.manual_seed(0)
    m = build_model(name, in_channels=shape[0], num_classes=10)
    layer, fshape, y = _target_shape(m, torch.randn(2, *shape))
    assert layer == TARGET_LAYERS[name]
    assert fshape[-2:] == (grid, grid) and y.shape == (2, 10)


@pytest.mark.parametrize("shape, grid", [((1, 28, 28), 7), ((3, 32, 32), 8)])
def test_builtin_vit_finds_its_layer_on_the_patch_grid(shape, grid):
    torch.manual_seed(0)
    m = build_model("vit", in_channels=shape[0], num_classes=10, image_size=shape[-1])
    t = resolve_layer(m, None, torch.randn(1, *shape))  # its head starts at zero: found through the head's input
    assert t.name == TARGET_LAYERS["vit"] and t.grid.size == (grid, grid) and t.grid.prefix == 1
    assert m(torch.randn(2, *shape)).shape == (2, 10)


def test_inceptionv3_upsamples_inside():
    torch.manual_seed(0)
    m = build_model("inceptionv3", in_channels=1, num_classes=7)
    assert set(MODELS) >= {"smallcnn", "resnet50", "inceptionv3"}
    layer, fshape, y = _target_shape(m, torch.randn(2, 1, 28, 28))  # data stays 28x28
    assert layer == "Mixed_7c" and fshape == (2, 2048, 4, 4) and y.shape == (2, 7)
    m.train()
    out = m(torch.randn(2, 1, 28, 28))
    assert isinstance(out, torch.Tensor)  # no InceptionOutputs tuple in training mode (no aux head)
    m3 = build_model("inceptionv3", in_channels=3, num_classes=10)
    assert m3.Conv2d_1a_3x3.conv.in_channels == 3


def test_unknown_model():
    from i2x.cli import cli_message

    with pytest.raises(I2XError, match="^model='vgg': is not a built-in model") as e:
        build_model("vgg")
    assert cli_message(e.value).startswith("--model vgg: is not a built-in model")
