"""Saliency throughput: i2x vs pytorch-grad-cam vs captum vs a plain inference forward pass.

Each contender explains one batch (default 128 images, random weights, eval mode, fixed random
target classes) of ResNet-50 with the small-input stem (28x28x1, target layer ``layer4``, 4x4),
of the small CNN (28x28x1, ``features``, 7x7) and of timm's ViT-Tiny with patch 4 on 32x32x3
(``vit``: ``blocks.11.norm1``, tokens on an 8x8 grid, issue 25):

* ``forward``  -- ``with torch.no_grad(): model(x)``, the floor every method pays once;
* ``fwd+bwd``  -- one forward and a full backward of the summed target scores (what a gradient
                  method pays without i2x's cut at the target layer);
* ``i2x``      -- ``i2x.saliency(model, x, targets, layer)`` (raw GradCAM maps);
* ``captum``   -- ``LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)``;
* ``pgc``      -- pytorch-grad-cam ``GradCAM(model, [layer])(x, targets)`` (its usual API,
                  which also normalises and upsamples; a full backward through the model), with
                  the layer's ``reshape_transform`` on the ViT; captum is left out on the ViT (its
                  LayerGradCam averages a token output's gradient over the channels).

The machine is shared and noisy, so contenders run interleaved (rotating order) in every
repeat and the table reports medians (and min/max) of images per second.

    .venv/bin/python benchmarks/bench_saliency.py              # batch 128, 3 repeats
    .venv/bin/python benchmarks/bench_saliency.py --quick      # batch 32, 2 repeats
    .venv/bin/python benchmarks/bench_saliency.py --models smallcnn --repeats 10
    .venv/bin/python benchmarks/bench_saliency.py --models vit --batch 64
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from i2x.nn.models import SmallCNN, resnet50_small
from i2x.nn.saliency import saliency

TARGETS = {"pgc": 3.0, "captum": 1.0, "forward": 0.85}  # required speed of i2x relative to each


MODELS = ("resnet50", "smallcnn", "vit")


def build(name: str) -> tuple[torch.nn.Module, str, tuple[int, int, int]]:
    """(model, target layer, image shape)."""
    torch.manual_seed(0)
    if name == "resnet50":
        return resnet50_small(in_channels=1, num_classes=10).eval(), "layer4", (1, 28, 28)
    if name == "smallcnn":
        return SmallCNN(in_channels=1, num_classes=10).eval(), "features", (1, 28, 28)
    if name == "vit":
        import timm

        m = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
        return m.eval(), "blocks.11.norm1", (3, 32, 32)
    raise SystemExit(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")


def contenders(model: torch.nn.Module, layer: str, x: torch.Tensor, t: torch.Tensor) -> dict:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from i2x.nn.layers import resolve_layer

    target = resolve_layer(model, layer, x[:1])
    module, grid = target.module, target.grid
    reshape = None if grid.layout == "nchw" else grid.to_map
    t_list = [ClassifierOutputTarget(int(c)) for c in t]

    def forward():
        with torch.no_grad():
            return model(x)

    def fwd_bwd():
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
        return g

    def i2x():
        return saliency(model, x, t, layer=layer, batch_size=len(x))

    def captum():
        return LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)

    def pgc():
        cam = GradCAM(model=model, target_layers=[module], reshape_transform=reshape)
        try:
            return cam(input_tensor=x, targets=t_list)
        finally:
            cam.activations_and_grads.release()

    out = {"forward": forward, "fwd+bwd": fwd_bwd, "i2x": i2x, "captum": captum, "pgc": pgc}
    if grid.layout != "nchw":
        del out["captum"]
    return out


def bench_model(name: str, batch: int, repeats: int, skip: set[str]) -> dict[str, list[float]]:
    model, layer, shape = build(name)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=g)  # (B, C, H, W)
    t = torch.randint(0, 10, (batch,), generator=g)  # (B,)
    fns = {k: f for k, f in contenders(model, layer, x, t).items() if k not in skip}

    # sanity: the fast path computes what captum computes (raw maps at layer resolution)
    if "captum" in fns:
        ours = saliency(model, x[:8], t[:8], layer=layer)
        from captum.attr import LayerGradCam

        ref = (
            LayerGradCam(model, dict(model.named_modules())[layer])
            .attribute(x[:8], target=t[:8], relu_attributions=True)[:, 0]
            .detach()
            .numpy()
        )
        print(
            f"[{name}] max |i2x - captum| on 8 images: {np.abs(ours - ref).max():.2e} "
            f"(map max {np.abs(ref).max():.2e})",
            flush=True,
        )

    for f in fns.values():  # warm-up: allocator, oneDNN primitive caches
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]  # rotate to spread drift
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
        print(
            f"[{name}] repeat {r + 1}/{repeats}: " + "  ".join(f"{k} {batch / times[k][-1]:.1f}/s" for k in keys),
            flush=True,
        )
    return times


def report(results: dict[str, dict[str, list[float]]], batch: int) -> bool:
    ok = True
    print()
    print(f"images/s, batch {batch}, median over repeats [min..max]")
    heads = ["forward (no_grad)", "forward + full backward", "i2x", "captum LayerGradCam", "pytorch-grad-cam GradCAM"]
    print(f"| model | {' | '.join(heads)} |")
    print("|---|---|---|---|---|---|")
    for name, times in results.items():
        cells = []
        for k in ("forward", "fwd+bwd", "i2x", "captum", "pgc"):
            if k not in times:
                cells.append("-")
                continue
            ips = [batch / s for s in times[k]]
            cells.append(f"{statistics.median(ips):.1f} [{min(ips):.1f}..{max(ips):.1f}]")
        print(f"| {name} | {' | '.join(cells)} |")
    print()
    print("i2x speed relative to each (median time of other / median time of i2x):")
    print("| model | vs pytorch-grad-cam (>= 3) | vs captum (>= 1) | vs forward (>= 0.85) | vs forward + backward |")
    print("|---|---|---|---|---|")
    for name, times in results.items():
        cells = []
        mi = statistics.median(times["i2x"])
        for k in ("pgc", "captum", "forward", "fwd+bwd"):
            if k not in times:
                cells.append("-")
                continue
            ratio = statistics.median(times[k]) / mi
            if k not in TARGETS:  # no target: the ratio is the result
                cells.append(f"{ratio:.2f}x")
                continue
            hit = ratio >= TARGETS[k]
            ok &= hit
            cells.append(f"{ratio:.2f}x {'ok' if hit else 'MISSED'}")
        print(f"| {name} | {' | '.join(cells)} |")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="batch 32, 2 repeats (smoke run)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--skip", nargs="*", default=[], choices=["captum", "pgc"], help="leave out slow contenders")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.quick:
        a.batch, a.repeats = 32, 2
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"python {sys.version.split()[0]}; command: {' '.join(sys.argv)}",
        flush=True,
    )
    results = {m: bench_model(m, a.batch, a.repeats, set(a.skip)) for m in a.models}
    ok = report(results, a.batch)
    print("\nall targets met" if ok else "\nsome targets missed (see above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
