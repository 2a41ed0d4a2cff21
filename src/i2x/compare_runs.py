"""Two finished run directories side by side: ``i2x compare RUN_A RUN_B --out DIR`` and
:func:`i2x.compare` (paper §3.4, Fig. 6-8).

This module reads the runs (:class:`i2x.rundir.Run`), checks that they are comparable, hands their
arrays to the numpy comparison (:mod:`i2x.analysis.compare`: matching, naming, pairs; the method
is described there) and writes ``compare.json`` and, through :mod:`i2x.report.compare` (imported
on use: matplotlib), ``index.html``. No model is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import store
from .analysis.compare import (
    Names,
    by_difference,
    compare_classes,
    compare_pair,
    confused_in,
    confusion_difference,
    match_prototypes,
    matching_data,
    role_agreement,
)
from .errors import I2XError
from .rundir import Run


@dataclass
class Comparison:
    """The result of :func:`compare`: ``data`` is ``compare.json``; ``path`` the folder written (or None)."""

    data: dict
    path: Path | None = None

    def top_pairs(self, n: int = 3) -> list[dict]:
        """The ``n`` pairs whose strategy differs most (score > 0)."""
        return [p for p in self.data["pairs"] if p["difference"]["score"] > 0][:n]


def check_comparable(ra: Run, rb: Run) -> str:
    """Raise I2XError (one line: what differs and the fix) unless the runs share the classes, the model,
    the assignment-map shape and either E or the prototypes. Returns the basis of the prototype
    matching: ``"positions"`` (the same E: prototypes matched by the cells they share) or
    ``"identical prototypes"`` (another explanation set of the same model and prototypes, e.g.
    ``--explain-seed``: B's prototypes assign every cell as A's do, so each is its own match)."""
    a, b = ra.path, rb.path
    ea, eb = ra.explain_set(), rb.explain_set()
    basis = "positions"
    for key in ("indices", "labels", "images"):  # images: the same rows of another dataset are another E
        if key not in ea or key not in eb:
            continue
        if ea[key].shape != eb[key].shape or not np.array_equal(ea[key], eb[key]):
            if same_prototypes(ra, rb) is None:
                raise I2XError(
                    f"{a} and {b} explain different sets (record/explain_set.npz `{key}` differ) with different "
                    "prototypes: compare runs made with the same --explain-seed and --explain-fraction (vary "
                    "--data-seed only), or two explanation sets of one trained model"
                )
            basis = "identical prototypes"
            break
    if ra.classes != rb.classes:
        raise I2XError(
            f"{a} and {b} have different classes ({', '.join(ra.classes)} vs {', '.join(rb.classes)}): "
            "compare two runs of the same dataset"
        )
    ma = (ra.manifest["config"].get("model"), ra.manifest.get("model", {}).get("layer"))
    mb = (rb.manifest["config"].get("model"), rb.manifest.get("model", {}).get("layer"))
    if ma != mb:
        raise I2XError(
            f"{a} and {b} use different models (model {ma[0]}, layer {ma[1]} vs model {mb[0]}, layer {mb[1]}): "
            "compare two runs of the same --model and --layer (retrain with --data-seed to vary the data order)"
        )
    sa, sb = ra.prototypes().assignments.shape, rb.prototypes().assignments.shape
    if sa[1:] != sb[1:]:
        raise I2XError(
            f"{a} and {b} have assignment maps of different shapes (H', W' = {sa[1:]} vs {sb[1:]}): "
            "compare runs of the same model, layer and image size"
        )
    return basis


def same_prototypes(ra: Run, rb: Run) -> np.ndarray | None:
    """B's number of each of A's prototypes when both runs assign cells with the same prototypes (the
    same PCA and the same set of centroids, in any order: the same trained model and prototype fit,
    whatever images each run explained); None otherwise."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    pa, pb = (r.arrays("prototypes") for r in (ra, rb))
    for key in ("pca_components", "pca_mean"):
        if key in pa or key in pb:
            if key not in pa or key not in pb or pa[key].shape != pb[key].shape or not np.array_equal(pa[key], pb[key]):
                return None
    ca, cb = (np.asarray(p["centroids"], dtype=np.float64) for p in (pa, pb))
    if ca.shape != cb.shape:
        return None
    dist = cdist(ca, cb)
    ia, jb = linear_sum_assignment(dist)
    scale = max(float(np.abs(ca).max()), 1e-12)
    return jb[np.argsort(ia)] if dist[ia, jb].max() <= 1e-6 * scale else None


def compare_pairs(ra: Run, rb: Run, names: Names, cm_a: np.ndarray, cm_b: np.ndarray) -> tuple[list, list]:
    """Every pair confused in either run, evaluated in both; sorted by strategy difference (largest first).
    Returns (pairs, skipped pairs with a class absent from E)."""
    where = confused_in(ra.explanations(), rb.explanations())
    steps = max(len(ra.manifest["checkpoints"]), len(rb.manifest["checkpoints"])) - 1
    out, skipped = [], []
    for a, b in sorted(where):
        try:
            pa, pb = ra.pair_explanation(a, b), rb.pair_explanation(a, b)
        except I2XError:
            skipped.append([a, b])
            continue
        out.append(compare_pair(a, b, pa, pb, ra.classes, names, cm_a, cm_b, where[(a, b)], steps))
    return by_difference(out), skipped


def _run_info(r: Run) -> dict:
    m = r.manifest
    return {
        "path": str(r.path),
        "seeds": m.get("seeds", {}),
        "data_seed": m.get("config", {}).get("data_seed"),
        "model": m.get("config", {}).get("model"),
        "test_accuracy": m.get("metrics", {}).get("test_accuracy"),
        "checkpoints": m.get("checkpoints", []),
    }


def comparison(run_a: str | os.PathLike | Run, run_b: str | os.PathLike | Run) -> dict:
    """The numbers of ``compare.json`` (nothing written)."""
    ra, rb = (r if isinstance(r, Run) else Run(r).check_complete("compare") for r in (run_a, run_b))
    basis = check_comparable(ra, rb)
    m, pb = prototype_matching(ra, rb, basis), rb.prototypes()
    names = Names(m["a_to_b"], m["b_to_a"])
    cm_a, cm_b = (np.asarray(r.arrays("evaluate")["confusion"], dtype=np.int64) for r in (ra, rb))
    pairs, skipped = compare_pairs(ra, rb, names, cm_a, cm_b)
    return {
        "runs": {"a": _run_info(ra), "b": _run_info(rb)},
        "classes": ra.classes,
        "matching_basis": basis,
        **({"b_of_a": same_prototypes(ra, rb).tolist()} if basis == "identical prototypes" else {}),
        **matching_data(m),
        "key_prototypes": compare_classes(ra.explanations(), rb.explanations(), ra.classes, names),
        "pairs": pairs,
        "skipped_pairs": skipped,
        "confusion": confusion_difference(cm_a, cm_b),
        "agreement": agreement(ra, rb, m["a_to_b"], pb.k),
    }


def prototype_matching(ra: Run, rb: Run, basis: str | None = None) -> dict:
    """:func:`i2x.analysis.compare.match_prototypes` of two runs (``a_to_b``, ``b_to_a``, rows, overlap): by
    their own centroids when both have the same prototypes, else by the cells they cover on A's explanation
    set. ``basis``: :func:`check_comparable`'s answer, when already asked."""
    basis = basis or check_comparable(ra, rb)
    pa, pb = ra.prototypes(), rb.prototypes()
    return match_prototypes(
        pa.assignments,
        b_on_a(ra, rb) if basis == "identical prototypes" else pb.assignments,
        pa.k,
        pb.k,
        background_a=ra.arrays("intensity").get("background"),
        background_b=rb.arrays("intensity").get("background"),
    )


def b_on_a(ra: Run, rb: Run) -> np.ndarray:
    """Run B's prototypes on A's explanation set when both have the same prototypes (:func:`same_prototypes`):
    A's assignments in B's numbers (the same centroids assign every cell alike)."""
    return same_prototypes(ra, rb)[ra.prototypes().assignments]


def agreement(ra: Run, rb: Run, a_to_b: dict, k_b: int) -> dict:
    """Issue 24: the share of listed items both runs list after matching (Jaccard), beside what
    random one-to-one matchings give. Pair roles over every pair (uncertain, reliable and the class
    it favours; the items each run lists, stability threshold applied), and the class-specific
    shared / specialized prototypes of every class."""
    roles = [listed_roles(r) for r in (ra, rb)]
    classes = [listed_class_items(r) for r in (ra, rb)]
    return {
        "pair_roles": role_agreement(*roles, a_to_b, k_b),
        "class_lists": role_agreement(*classes, a_to_b, k_b),
        "note": "Jaccard index of the listed items after matching; random_matching: the same index when A's "
        "prototypes are matched to B's at random (200 draws): agreement a matching that knew nothing reaches",
    }


def listed_roles(r: Run, explain=None) -> set[tuple]:
    """Every pair's listed roles: (a, b, "uncertain" | "reliable->favoured class", prototype);
    ``explain``: other explanation rules than the run's (see :meth:`Run.pair_explanation`)."""
    out = set()
    for a in range(len(r.classes)):
        for b in range(a + 1, len(r.classes)):
            pe = r.pair_explanation(a, b, explain)
            out |= {(a, b, "uncertain", x["prototype"]) for x in pe["uncertain"]}
            out |= {(a, b, f"reliable->{x['favours']}", x["prototype"]) for x in pe["reliable"]}
    return out


def listed_class_items(r: Run) -> set[tuple]:
    """Every class's listed shared / specialized prototypes: (class, "shared" | "specialized", prototype)."""
    out = set()
    for e in r.explanations().get("classes", {}).values():
        c = e["index"]
        out |= {(c, "shared", k) for k in e["shared"]}
        out |= {(c, "specialized", k) for g in e["specialized"] for k in g["prototypes"]}
    return out


def compare(
    run_a: str | os.PathLike, run_b: str | os.PathLike, out: str | os.PathLike | None = None, *, html: bool = True
) -> Comparison:
    """Compare two finished runs of the same data and model (typically differing only in
    ``--data-seed``): match their prototypes, put their key prototypes, pair explanations and
    confusion matrices side by side in run A's numbering, and score each pair's strategy difference.
    With ``out``: write ``out/compare.json`` and (``html``) ``out/index.html`` with ``out/fig/*.png``."""
    ra, rb = Run(run_a).check_complete("compare"), Run(run_b).check_complete("compare")
    data = comparison(ra, rb)
    if out is None:
        return Comparison(data)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise I2XError(f"--out {out} is a file: give a folder for the comparison")
    out.mkdir(parents=True, exist_ok=True)
    store.save_json(out / "compare.json", data)
    if html:
        from .report.compare import write_page

        write_page(data, ra, rb, out)
    return Comparison(data, out)


__all__ = ["compare", "comparison", "Comparison", "check_comparable", "compare_pairs", "same_prototypes", "b_on_a"]
