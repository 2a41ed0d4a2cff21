"""Model zoo: the CPU default ``smallcnn`` and torchvision backbones adapted to small images.

Every builder returns an ``nn.Module`` whose target layer (the last spatial block, spec §Terms)
is named in :data:`TARGET_LAYERS`; :func:`i2x.layers.find_target_layer` finds it for any
other model. :func:`load_model` rebuilds a run's final model from ``weights/final.pt``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, I2XError

# Name of the target layer of each built-in model (the last block whose output is spatial).
TARGET_LAYERS = {
    "smallcnn": "features",
    "resnet50": "layer4",
    "inceptionv3": "Mixed_7c",
    "vit": "encoder.layers.encoder_layer_5.ln_1",
}


class SmallCNN(nn.Module):
    """Four 3x3 conv layers, two 2x pools: a 7x7x64 target map on 28x28 input.

    Small enough to train on 5,000 digits in about a minute on two CPU cores, large enough
    to pass 97 % on the official MNIST test set. The head is global average pooling and one
    linear layer, so GradCAM on ``features`` is exactly CAM (Zhou et al. 2016).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),  # 28 -> 14
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),  # 14 -> 7
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, C, H, W) -> (N, 2w, H/4, W/4) -> (N, classes)


def resnet50_small(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """torchvision ResNet-50 with a stem for small images.

    The stock stem (7x7 stride-2 conv + max-pool) shrinks 28x28 to a 1x1 ``layer4``, which
    leaves no spatial prototypes. A 3x3 stride-1 first conv and no max-pool give a 4x4
    ``layer4`` on 28x28 (and on 32x32). Weights are random: nothing is downloaded.
    """
    from torchvision.models import resnet50

    m = resnet50(weights=None, num_classes=num_classes)
    m.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    m.maxpool = nn.Identity()
    return m


def _inception_cls():
    from torchvision.models.inception import Inception3

    class InceptionV3Small(Inception3):
        """torchvision InceptionV3 (random weights, no aux head) for small images of any channel count.

        InceptionV3 needs ≥ 75x75 input, and at 75x75 its ``Mixed_7c`` is 1x1 (no spatial
        prototypes). The wrapper upsamples every input bilinearly to ``input_size`` inside
        ``forward`` (the data stays 28x28 / 32x32): 171x171 gives a 4x4 ``Mixed_7c``, the same grid
        as ``resnet50`` on 28x28 (299 would give torchvision's 8x8 at 3x the cost). The first conv
        takes ``in_channels`` directly (no channel repetition).
        """

        def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 171):
            super().__init__(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=True)
            from torchvision.models.inception import BasicConv2d

            if input_size < 75:
                raise I2XError(f"input_size={input_size}: InceptionV3 needs at least 75x75")
            self.Conv2d_1a_3x3 = BasicConv2d(in_channels, 32, kernel_size=3, stride=2)
            self.input_size = input_size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2:] != (self.input_size, self.input_size):
                x = nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
            return super().forward(x)  # (N, C, s, s) -> (N, classes); a tensor, as aux_logits=False

    return InceptionV3Small


def inceptionv3_small(in_channels: int = 1, num_classes: int = 10, input_size: int = 171) -> nn.Module:
    """InceptionV3 upsampling its input to ``input_size`` (target layer ``Mixed_7c``, 4x4 at 171)."""
    return _inception_cls()(in_channels=in_channels, num_classes=num_classes, input_size=input_size)


def vit_small(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """torchvision's ``VisionTransformer`` sized for a CPU: patch 4 (a 7x7 grid on 28x28, 8x8 on
    32x32), 6 layers, 4 heads, width 96 (0.46 M parameters), a class token, any channel count. Its
    head starts at zero, as torchvision's does, so the untrained model's saliency is 0 everywhere.
    The target layer is the last block's ``ln_1``: the class-token head leaves the last block's
    patch tokens without gradient (docs/METHOD.md)."""
    from torchvision.models import VisionTransformer

    if image_size % 4:
        raise I2XError(f"image_size={image_size}: the built-in vit needs a multiple of its patch size 4")
    m = VisionTransformer(
        image_size=image_size, patch_size=4, num_layers=6, num_heads=4, hidden_dim=96, mlp_dim=192,
        num_classes=num_classes,
    )  # fmt: skip
    if in_channels != 3:
        m.conv_proj = nn.Conv2d(in_channels, 96, kernel_size=4, stride=4)
    return m


MODELS = {"smallcnn": SmallCNN, "resnet50": resnet50_small, "inceptionv3": inceptionv3_small, "vit": vit_small}


def build_model(name: str, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """Build a built-in model by name (see :data:`MODELS`) for images of ``in_channels`` x ``image_size``²."""
    if name not in MODELS:
        raise ConfigError("model", name, f"is not a built-in model; choose one of: {', '.join(sorted(MODELS))}")
    if name == "vit":  # the only one whose shape depends on the image size
        return vit_small(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    return MODELS[name](in_channels=in_channels, num_classes=num_classes)


def load_model(run_dir: str | Path, device="cpu") -> nn.Module:
    """Rebuild the final model of a run directory (built-in models only), in eval mode (for inference)."""
    from ..rundir import Run
    from .train import load_state

    r = Run(run_dir)
    if r.config.model not in MODELS:
        raise I2XError(
            f"{r.path} was made with your own model ({r.manifest['model']['name']}), which i2x cannot "
            "rebuild from weights/final.pt: load it yourself and pass it from Python, e.g. "
            "i2x.finetune(DIR, model=my_model) or i2x.analyze(DIR, my_model)"
        )
    ck = load_state(Path(run_dir) / "weights" / "final.pt", map_location=device)
    shape = r.manifest["data"]["image_shape"]
    m = build_model(r.config.model, in_channels=shape[0], num_classes=len(r.classes), image_size=shape[-1])
    m.load_state_dict(ck["model"])
    return m.to(torch.device(device)).eval()


def built_in_model(name: str, data) -> nn.Module:
    """The built-in model ``name`` shaped for ``data`` (an :class:`i2x.data.Dataset`: its channels and classes)."""
    return build_model(name, in_channels=data.shape[0], num_classes=len(data.classes), image_size=data.shape[-1])
