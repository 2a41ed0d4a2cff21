"""Target layer detection and resolution (spec §Terms: h = last spatial block)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from i2x.errors import I2XError
from i2x.nn import layers as L
from i2x.nn.models import SmallCNN, resnet50_small


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs on a shared 2-core machine: one thread is faster
    yield
    torch.set_num_threads(n)


def _ex(c=1, size=28):
    return torch.zeros(1, c, size, size)


def _seq():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )


@pytest.mark.parametrize(
    "build, example, expected",
    [
        (lambda: SmallCNN(), _ex(), "features"),
        (lambda: resnet50_small(), _ex(), "layer4"),
        (_seq, _ex(3, 10), "3"),
    ],
)
def test_find_target_layer(build, example, expected):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deepest map is at least 4x4: nothing passed over, no warning
        assert L.find_target_layer(build(), example) == expected


def test_inception_branch_is_not_the_target():
    tv = pytest.importorskip("torchvision.models")
    m = tv.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    # on 75x75, Mixed_7a pools to 1x1: its inner branches must not be chosen; Mixed_6e's 3x3 is passed over
    with pytest.warns(UserWarning, match="target layer Mixed_5d .7x7. chosen: the deeper Mixed_6e gives 3x3"):
        assert L.find_target_layer(m, _ex(3, 75)) == "Mixed_5d"
    assert L.find_target_layer(m, _ex(3, 171)) == "Mixed_7c"  # 4x4: the paper's layer (paper-mnist-inceptionv3)


def test_no_spatial_layer_raises():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(I2XError, match="layer=..."):
        L.find_target_layer(m, torch.zeros(1, 1, 2, 2))


def test_detection_is_cached_per_input_signature(monkeypatch):
    m = SmallCNN()
    assert L.find_target_layer(m, _ex()) == "features"
    calls = []
    monkeypatch.setattr(L, "_outputs", lambda *a: calls.append(a) or [])
    assert L.find_target_layer(m, _ex()) == "features"  # cached: no forward pass
    assert calls == []
    with pytest.raises(I2XError):
        L.find_target_layer(m, _ex(size=32))  # new signature: detects again
    assert len(calls) == 1


def test_spatial_layers_restores_mixed_modes_and_hooks():
    m = SmallCNN().train()
    m.head.eval()
    modes = [x.training for x in m.modules()]
    hooks = [len(x._forward_hooks) for x in m.modules()]
    order = L.spatial_layers(m, _ex())
    assert ("features", (64, 7, 7)) in order
    assert [x.training for x in m.modules()] == modes
    assert [len(x._forward_hooks) for x in m.modules()] == hooks


def test_resolve_layer_by_name_module_and_none():
    m = SmallCNN()
    assert L.resolve_layer(m, "features").module is m.features
    assert L.resolve_layer(m, m.features[3])[:2] == ("features.3", m.features[3])
    t = L.resolve_layer(m, None, _ex())
    assert t.name == "features" and t.grid.info() == {
        "layout": "nchw",
        "grid": [7, 7],
        "channels": 64,
        "prefix_tokens": 0,
    }


def test_resolve_layer_errors_name_meaningful_candidates():
    m = resnet50_small()
    with pytest.raises(I2XError) as e:
        L.resolve_layer(m, "layer5", _ex())
    msg = str(e.value)
    assert "layer5" in msg and "layer4 2048x4x4" in msg
    # candidates are spatial outputs, last first: not the classifier head
    assert "fc" not in msg.split("one of")[1] and msg.index("layer4 ") < msg.index("layer4.2.relu")
    with pytest.raises(I2XError, match="layer1"):  # without example: children
        L.resolve_layer(m, "nope")
    with pytest.raises(I2XError, match="not part of the model"):
        L.resolve_layer(m, nn.Conv2d(1, 1, 1))
    with pytest.raises(I2XError, match="model itself"):
        L.resolve_layer(m, m)
    with pytest.raises(I2XError, match="needs an example"):
        L.resolve_layer(m, None)


def test_nested_torchvision_models_find_a_main_path_layer():
    import torchvision

    # MobileNetV3's `features` ends in 1x1 on 32x32, while features.8 is still 2x2: a Sequential's
    # children are the main path, not branches of a block (the bug: "no layer ... larger than 1x1"); 2x2 maps
    # are passed over for the deepest whole block of at least 4x4 (not half a block: features.4.block.0)
    m = torchvision.models.mobilenet_v3_small(num_classes=3)
    with pytest.warns(UserWarning, match="features.3 .4x4. chosen: the deeper features.8 gives 2x2"):
        assert L.find_target_layer(m, torch.zeros(1, 3, 32, 32)) == "features.3"
    with pytest.warns(UserWarning, match="layer='layer3' to use it anyway"):
        assert L.find_target_layer(torchvision.models.resnet18(num_classes=3), torch.zeros(1, 3, 32, 32)) == "layer2"
    assert L.find_target_layer(_seq(), _ex(3, 3)) == "3"  # no map of 4x4: the deepest (2x2), as before

    class Pooled(nn.Module):  # the only spatial output lies inside a block that pools: the error lists it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x).mean((2, 3), keepdim=True)

    m2 = nn.Sequential(Pooled(), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(I2XError, match=r"spatial outputs, last first: 0\.conv 2x4x4"):
        L.find_target_layer(m2, torch.zeros(1, 1, 4, 4))
