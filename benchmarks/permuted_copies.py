"""The within-class permuted copies of docs/log/RESULTS-2026-12.md (issues 23-24): a copy of a finished run whose
confidence rows are permuted within each true class (one derangement per copy, the same for every
checkpoint: every class keeps its own trajectories, no sample its own), re-analysed, then the
uncertain / reliable / class-level items over the reported pairs and all pairs counted (with the samples
test, also every item it lists, beyond each pair's top ones).

    .venv/bin/python benchmarks/permuted_copies.py RUN_DIR --seeds 1 2 3       # copies next to RUN_DIR
    .venv/bin/python benchmarks/permuted_copies.py RUN_DIR --count-only         # counts of RUN_DIR itself
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def permute(run: Path, seed: int) -> None:
    """Permute the confidences of every record within class; drop the files after the prototypes stage."""
    es = np.load(run / "record" / "explain_set.npz")
    idx, lab = es["indices"], es["labels"]
    rng, perm = np.random.default_rng(seed), np.arange(len(lab))
    for c in np.unique(lab):
        rows = np.flatnonzero(lab == c)
        q = rng.permutation(rows)
        while len(rows) > 1 and (q == rows).any():  # a derangement within the class
            q = rng.permutation(rows)
        perm[rows] = q
    for f in sorted((run / "record").glob("ckpt_it*.npz")):
        with np.load(f) as z:
            arrs = {k: z[k] for k in z.files}
        assert np.array_equal(arrs["sample_index"], idx), f
        arrs["confidences"] = arrs["confidences"][perm]
        np.savez(f, **arrs)
    for name in (
        "arrays/intensity.npz",
        "arrays/dynamics.npz",
        "arrays/stability.npz",
        "arrays/links.npz",
        "explanations.json",
    ):
        (run / name).unlink(missing_ok=True)


def count(run: Path) -> dict:
    import i2x

    r = i2x.Run(run)
    ex, C = r.explanations(), len(r.classes)
    rows = {"reported": {"uncertain": 0, "reliable": 0, "class_level": 0}, "all_pairs": {}}
    for p in ex["pairs"]:
        for k in rows["reported"]:
            rows["reported"][k] += len(p.get(k, []))
    total = {"uncertain": 0, "reliable": 0, "class_level": 0, "below_threshold": 0}
    for a, b in itertools.combinations(range(C), 2):
        pe = r.pair_explanation(a, b)
        for k in ("uncertain", "reliable", "class_level"):
            total[k] += len(pe.get(k, []))
        total["below_threshold"] += sum(pe.get("below_threshold", {}).values())
    rows["all_pairs"] = total
    links = r.links()  # the samples test: every listed item, not only each pair's top ones
    if links is not None:
        rows["samples_test"] = {"listed": int((links.role > 0).sum()), "uncertain": int((links.role == 2).sum()),
                                "selected_families": int((links.q <= links.fdr).sum()),
                                "tested_families": int(links.tested.sum())}  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--count-only", action="store_true")
    a = ap.parse_args()
    print(json.dumps({"run": str(a.run), **count(a.run)}))
    if a.count_only:
        return
    for s in a.seeds:
        copy = a.run.with_name(f"{a.run.name}-perm{s}")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(a.run, copy)
        permute(copy, s)
        subprocess.run([sys.executable, "-m", "i2x", "analyze", str(copy), "--device", "cpu"], check=True)
        print(json.dumps({"run": str(copy), "seed": s, **count(copy)}))


if __name__ == "__main__":
    main()
