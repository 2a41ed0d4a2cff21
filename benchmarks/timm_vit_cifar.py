"""Issue 25's first must-show as a command: the issue's timm ViT (``vit_tiny_patch16_224``, img_size 32, patch 4,
random init) through ``i2x.run`` with no ``layer=`` on a CIFAR-10 subset; prints the target the manifest names,
the accuracy, the largest relative difference of the recorded final maps from pytorch-grad-cam's ``GradCAM`` with
the matching ``reshape_transform`` on the same layer, and the share of E's final maps with spread > 0.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timm_vit_cifar.py --data-dir CIFAR --out runs/timm-vit \\
        --train-subset 6000 --epochs 6

``CIFAR``: a folder ``i2x run --dataset cifar10`` reads (the batches or the ImageFolder copy). Needs the test
extras (timm, pytorch-grad-cam).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import i2x
from i2x.nn.layers import resolve_layer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_transformers import pgc_gradcam  # noqa: E402


def main() -> None:
    import timm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-subset", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=6)
    a = ap.parse_args()
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
    t0 = time.time()
    r = i2x.run(out=a.out, overwrite=True, model=vit, dataset="cifar10", data_dir=a.data_dir,
                train_subset=a.train_subset, test_subset=500, epochs=a.epochs, explain_fraction=0.1, prototypes=16,
                lr=1e-3, device="cpu", progress=False, report=True, stability_resamples=20)  # fmt: skip
    m = r.manifest
    es = r.explain_set()
    x, y = torch.from_numpy(es["images"]), es["labels"]
    final = r.records()["saliency"][-1]
    vit.eval()
    tgt = resolve_layer(vit, None, x[:1])
    ref = np.concatenate(
        [pgc_gradcam(vit, tgt.module, x[i : i + 50], y[i : i + 50], tgt.grid.to_map) for i in range(0, len(x), 50)]
    )
    print(json.dumps({
        "wall_s": round(time.time() - t0, 1), "layer": m["model"]["layer"], "target": m["model"]["target"],
        "test_accuracy": m["metrics"]["test_accuracy"], "warnings": m.get("warnings"), "E": len(x),
        "rel_diff_vs_pgc": float(np.abs(final - ref).max() / np.abs(ref).max()),
        "spread_gt0_share": float((np.ptp(final.reshape(len(final), -1), 1) > 0).mean()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
