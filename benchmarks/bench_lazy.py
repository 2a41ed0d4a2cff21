"""Training from the caller's torch Dataset without materialising it (issue 26): peak memory and
images/s of ``i2x.run(train=<Dataset>)`` against the same images given in memory as tensors.

The dataset makes 20,000 images of 3x128x128 (3.9 GB as float32) on the fly, each a seeded function
of its index (the same bytes at every read), so that nothing but the batch being read exists; the
in-memory path gets the same images as one (N, 3, 128, 128) float32 tensor. The model is a small
strided CNN, so that the time is the data path's, not the convolutions'. Each path runs in its own
process (peak RSS = ``ru_maxrss`` of that process): one epoch, batch 64, E = 1 %, the prototypes
fitted on E.

    .venv/bin/python benchmarks/bench_lazy.py                 # 20,000 images, both paths
    .venv/bin/python benchmarks/bench_lazy.py --n 2000        # a quick look
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


class Generated:
    """``n`` images of ``shape`` made at read time from the index (seeded), labels i % 10."""

    def __init__(self, n: int, shape=(3, 128, 128)):
        self.n, self.shape = n, shape
        self.targets = [i % 10 for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import torch

        g = torch.Generator().manual_seed(int(i))
        x = torch.rand(self.shape, generator=g) * 0.5
        x[:, : 8 * (i % 10 + 1)] += 0.5  # the class is how far a bright band reaches
        return x, self.targets[i]


def model():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def one(path: str, n: int) -> dict:
    import torch

    import i2x

    torch.manual_seed(0)
    ds = Generated(n)
    if path == "memory":
        t0 = time.perf_counter()
        x = torch.stack([ds[i][0] for i in range(n)])  # (N, 3, 128, 128) float32
        train = (x, torch.tensor(ds.targets))
        t_build = time.perf_counter() - t0
    else:
        train, t_build = ds, 0.0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = i2x.run(out=f"{d}/run", model=model(), train=train, test=Generated(500), epochs=1, batch_size=64,
                    every=10_000, explain_fraction=0.01, prototypes=8, prototype_fit="explain", device="cpu",
                    progress=False, report=False, stability_resamples=0, permutations=99)  # fmt: skip
        wall = time.perf_counter() - t0
        record = r.manifest["timings"]["record"]
    return {
        "path": path,
        "n": n,
        "build_s": round(t_build, 1),
        "run_s": round(wall, 1),
        "record_s": round(record, 1),  # training + recording
        "train_images_per_s": round(n / record, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--one", choices=["lazy", "memory"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.n)))
        return 0
    print(f"command: {' '.join(sys.argv)}; {a.n} images of 3x128x128 ({a.n * 3 * 128 * 128 * 4 / 1e9:.1f} GB float32)")
    rows = []
    for path in ("lazy", "memory"):
        out = subprocess.run([sys.executable, __file__, "--n", str(a.n), "--one", path], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lazy, mem = rows
    print("\n| path | peak RSS GiB | train + record s | images/s | building the tensor s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['peak_rss_gib']} | {r['record_s']} | {r['train_images_per_s']} | {r['build_s']} |")
    print(f"\nlazy / in-memory images/s: {lazy['train_images_per_s'] / mem['train_images_per_s']:.2f}; "
          f"lazy peak RSS {lazy['peak_rss_gib']} GiB (target <= 2)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
