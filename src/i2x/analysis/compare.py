"""Two training runs side by side (paper §3.4, Fig. 6-8): ``i2x compare RUN_A RUN_B --out DIR``.

The paper retrains the model with another data order (``--data-seed``) and shows that the two
runs separate the same classes with different prototype strategies. Each run has its own K-Means,
so P-20 of run A and P-20 of run B are unrelated: prototypes are first **matched** by what they
cover, then every result of run B is written in run A's numbering ("B's P-11 = A's P-20").

Matching. On the shared explanation set E, the overlap of prototype i of A and j of B is the
Jaccard index of the (sample, cell) positions they cover::

    overlap(i, j) = |{(x, u, v): A(x)[u,v] = i and B(x)[u,v] = j}| / |{(x, u, v): A(x)[u,v] = i or B(x)[u,v] = j}|

The Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) pairs the prototypes one to
one so that the total overlap is largest; a pair whose overlap is below :data:`MATCH_THRESHOLD`
is reported as unmatched, with its best partner. A row's ``status`` says how it matched:
``matched``; ``split`` (matched, and unmatched prototypes of B have it as their best partner
with overlap ≥ the threshold: A's prototype is cut in several in B); ``merged`` (unmatched,
but its best partner in B, matched to another prototype of A, covers it with overlap ≥ the
threshold); ``unmatched``.

Threshold 0.1: for two unrelated partitions the expected overlap of prototypes covering shares
p and q of the positions is pq / (p + q − pq), 1/63 ≈ 0.016 for 32 equal prototypes (each row's
``chance`` holds it for the pair's real sizes), so 0.1 is about six times chance; and a prototype
cut evenly into m parts in the other run keeps an overlap of 1/m with each part, so 0.1 keeps
splits of up to ten parts matched to their largest part. Below it, fewer than one position in ten
of the two prototypes' union is shared: calling them the same would mislead.

Strategy difference of a pair (a, b), both runs evaluated on it (``Run.pair_explanation``)::

    score = evidence distance + onset gap                              (0 … 2)
    evidence distance = 1 − |S_A ∩ S_B| / |S_A ∪ S_B|                  (0 when both are empty)
    S = {(prototype in A's numbering, role)} over the uncertain and reliable prototypes,
        role = "uncertain" or "reliable→class it favours"; an unmatched prototype of B is its own item
    onset gap = |onset_A − onset_B| / T     (1 when only one run has an onset, 0 when neither)
    onset = the first step at which a reliable prototype of the pair has a significant sign
            (the run starts to separate a from b with one sign); T = number of steps

so a pair scores 0 when both runs use the same prototypes in the same roles and start to
separate it at the same step, and high when they separate it with other prototypes, or later.
Onsets are compared step by step: the runs should share their checkpoint schedule (the same
``--epochs`` and ``--every``, as runs differing only in ``--data-seed`` do).

numpy + scipy only, on arrays and dicts: the matching, the naming, the per-class and per-pair
comparisons and the sections of ``compare.json``. :mod:`i2x.compare_runs` reads the two run
directories, checks that they are comparable, and writes ``compare.json`` and (through
:mod:`i2x.report.compare`) ``index.html``. No model is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import I2XError

MATCH_THRESHOLD = 0.1  # overlap (Jaccard) below which a Hungarian pair is reported as unmatched
THRESHOLD_REASON = (
    "about 6x the overlap of two unrelated prototypes (1/63 for 32 equal ones; see each row's chance); "
    "a prototype cut into m equal parts keeps overlap 1/m with each, so splits of up to 10 parts stay matched; "
    "below it fewer than 1 position in 10 of the pair's union is shared"
)
SCORE_DOC = (
    "score = evidence distance + onset gap (0..2). evidence distance = Jaccard distance between the two runs' "
    "sets of (prototype in A's numbering, role) over the uncertain and reliable prototypes of the pair, role = "
    "uncertain or reliable->favoured class, an unmatched prototype of B counting as its own item; onset gap = "
    "|onset_A - onset_B| / T steps, onset = first step at which a reliable prototype has a significant sign "
    "(1 when only one run has an onset, 0 when neither)"
)


# --- matching --------------------------------------------------------------------------------


def overlap_matrix(assign_a: np.ndarray, assign_b: np.ndarray, k_a: int, k_b: int) -> tuple[np.ndarray, np.ndarray]:
    """(overlap (k_a, k_b) Jaccard of the (sample, cell) positions, counts (k_a, k_b) of shared positions)."""
    a = np.asarray(assign_a, dtype=np.int64).ravel()
    b = np.asarray(assign_b, dtype=np.int64).ravel()
    if a.shape != b.shape:
        raise I2XError(f"assignment maps of {np.shape(assign_a)} and {np.shape(assign_b)} positions cannot be matched")
    n = np.bincount(a * k_b + b, minlength=k_a * k_b).reshape(k_a, k_b)
    union = n.sum(1, keepdims=True) + n.sum(0, keepdims=True) - n
    return np.where(union > 0, n / np.maximum(union, 1), 0.0), n


BASIS_TEXT = {  # how the prototypes were matched (compare.json "matching_basis")
    "identical prototypes": "another explanation set of the same model and prototypes: every prototype is "
    "matched to its own centroid in run B (what differs is the images explained)",
}


def match_prototypes(
    assign_a: np.ndarray,
    assign_b: np.ndarray,
    k_a: int | None = None,
    k_b: int | None = None,
    threshold: float = MATCH_THRESHOLD,
    background_a: np.ndarray | None = None,
    background_b: np.ndarray | None = None,
) -> dict:
    """Match the prototypes of two assignment maps (N, H', W') of the same positions (see the module
    docstring). Returns ``rows`` (one per prototype of A), ``unmatched_b`` (prototypes of B left out),
    ``overlap`` (k_a, k_b) and ``b_to_a`` / ``a_to_b`` ({prototype: partner} of the matched pairs)."""
    from scipy.optimize import linear_sum_assignment

    k_a = int(k_a if k_a is not None else np.max(assign_a) + 1)
    k_b = int(k_b if k_b is not None else np.max(assign_b) + 1)
    J, n = overlap_matrix(assign_a, assign_b, k_a, k_b)
    chance = _chance(n)
    ia, jb = linear_sum_assignment(J, maximize=True)
    partner = dict(zip(ia.tolist(), jb.tolist(), strict=True))
    a_to_b = {i: j for i, j in partner.items() if J[i, j] >= threshold}
    b_to_a = {j: i for i, j in a_to_b.items()}
    bg_a = np.zeros(k_a, bool) if background_a is None else np.asarray(background_a, bool)
    bg_b = np.zeros(k_b, bool) if background_b is None else np.asarray(background_b, bool)
    best_a, best_b = J.argmax(0), J.argmax(1)
    unmatched_b = [
        {
            "b": j,
            "best_a": int(best_a[j]),
            "best_overlap": _r(J[best_a[j], j]),
            "background_b": bool(bg_b[j]),
            "status": "split" if J[best_a[j], j] >= threshold and int(best_a[j]) in a_to_b else "unmatched",
        }
        for j in range(k_b)
        if j not in b_to_a
    ]
    rows = []
    for i in range(k_a):
        j = partner.get(i)
        also = [u["b"] for u in unmatched_b if u["status"] == "split" and u["best_a"] == i]
        rows.append(
            {
                "a": i,
                "b": a_to_b.get(i),
                "overlap": _r(J[i, j]) if j is not None else 0.0,
                "best_b": int(best_b[i]),
                "best_overlap": _r(J[i, best_b[i]]),
                "background_a": bool(bg_a[i]),
                "background_b": bool(bg_b[a_to_b[i]]) if i in a_to_b else None,
                "chance": _r(chance[i, j]) if j is not None else 0.0,
                "status": _status(i, a_to_b, also, J, best_b, threshold),
                "also_b": also,
            }
        )
    return {"rows": rows, "unmatched_b": unmatched_b, "overlap": J, "a_to_b": a_to_b, "b_to_a": b_to_a}


def _chance(n: np.ndarray) -> np.ndarray:
    """(k_a, k_b) expected overlap of two unrelated partitions with these prototype sizes:
    e / (|i| + |j| − e), e = |i| |j| / positions (independent assignment)."""
    size_a, size_b = n.sum(1, keepdims=True), n.sum(0, keepdims=True)
    e = size_a * size_b / max(int(n.sum()), 1)
    denom = size_a + size_b - e
    return np.where(denom > 0, e / np.where(denom > 0, denom, 1), 0.0)


def _status(i: int, a_to_b: dict, also: list[int], J: np.ndarray, best_b: np.ndarray, threshold: float) -> str:
    if i in a_to_b:
        return "split" if also else "matched"
    j = int(best_b[i])
    return "merged" if J[i, j] >= threshold and j in a_to_b.values() else "unmatched"


def _r(x: float) -> float:
    return round(float(x), 4)


def matching_summary(m: dict) -> dict:
    """Matched share (prototypes and positions), quartiles of the Hungarian overlaps, status counts."""
    rows = m["rows"]
    ov = np.array([r["overlap"] for r in rows])
    matched = [r["a"] for r in rows if r["b"] is not None]
    J = m["overlap"]
    return {
        "k_a": len(rows),
        "k_b": int(J.shape[1]),
        "matched": len(matched),
        "matched_share": _r(len(matched) / max(len(rows), 1)),
        "overlap_quartiles": [_r(q) for q in np.percentile(ov, [25, 50, 75])] if len(ov) else [],
        "overlap_mean": _r(ov.mean()) if len(ov) else 0.0,
        "status": {s: sum(r["status"] == s for r in rows) for s in ("matched", "split", "merged", "unmatched")},
        "unmatched_b": len(m["unmatched_b"]),
    }


# --- naming: run B in run A's numbering ----------------------------------------------------


@dataclass(frozen=True)
class Names:
    """Prototype names across two matched runs: A's own numbers, B's translated ("P-20" = A's P-20)."""

    a_to_b: dict[int, int]
    b_to_a: dict[int, int]

    def ref_a(self, i: int) -> dict:
        return {"a": int(i), "b": self.a_to_b.get(int(i))}

    def ref_b(self, j: int) -> dict:
        return {"a": self.b_to_a.get(int(j)), "b": int(j)}

    @staticmethod
    def text(ref: dict, run: str) -> str:
        """ "P-20 (= B's P-11)" for A's prototypes, "P-20 (B's P-11)" / "B's P-4 (no match in A)" for B's."""
        a, b = ref["a"], ref["b"]
        if run == "a":
            return f"P-{a} (= B's P-{b})" if b is not None else f"P-{a} (no match in B)"
        return f"P-{a} (B's P-{b})" if a is not None else f"B's P-{b} (no match in A)"

    @staticmethod
    def item(ref: dict) -> str:
        """The identity of a prototype in A's numbering; an unmatched one of B stays its own item."""
        return f"P-{ref['a']}" if ref["a"] is not None else f"B:P-{ref['b']}"


# --- classes: key prototypes ---------------------------------------------------------------


def key_order(cls_ex: dict) -> list[tuple[int, int]]:
    """(prototype, step at which it first became key) in the order prototypes became key."""
    seen: dict[int, int] = {}
    for kc in sorted(cls_ex.get("key_checkpoints", []), key=lambda k: k["step"]):
        for p in kc["prototypes"]:
            seen.setdefault(int(p["prototype"]), int(kc["step"]))
    return list(seen.items())


def compare_classes(ex_a: dict, ex_b: dict, classes: list[str], names: Names) -> list[dict]:
    """Per class: the first key prototype and the order in which prototypes became key, both runs."""
    out = []
    for c, name in enumerate(classes):
        ca, cb = ex_a.get("classes", {}).get(name), ex_b.get("classes", {}).get(name)
        if ca is None or cb is None:
            continue
        oa = [{**names.ref_a(k), "step": t} for k, t in key_order(ca)]
        ob = [{**names.ref_b(k), "step": t} for k, t in key_order(cb)]
        ia, ib = [Names.item(r) for r in oa], [Names.item(r) for r in ob]
        out.append(
            {
                "class": c,
                "name": name,
                "run_a": {"first": oa[0] if oa else None, "order": oa},
                "run_b": {"first": ob[0] if ob else None, "order": ob},
                "same_first": ia[:1] == ib[:1],
                "same_order": ia == ib,
            }
        )
    return out


# --- pairs -----------------------------------------------------------------------------------


def _side(pe: dict, ref) -> dict:
    """One run's uncertain and reliable prototypes of a pair, named in both numberings, with the
    onset: the first step at which a reliable prototype has a significant sign."""
    out: dict = {}
    for role in ("uncertain", "reliable"):
        out[role] = [
            {
                **ref(r["prototype"]),
                "p_value": r["p_value"],
                "favours": r["favours"],
                "sign_flips": r["sign_flips"],
                "first_step": r["significant_steps"][0]["step"] if r["significant_steps"] else None,
            }
            for r in pe[role]
        ]
    starts = [(r["first_step"], i) for i, r in enumerate(out["reliable"]) if r["first_step"] is not None]
    first = min(starts) if starts else None
    out["onset"] = first[0] if first else None
    out["separator"] = {k: out["reliable"][first[1]][k] for k in ("a", "b")} if first else None
    return out


def _items(side: dict) -> set[tuple[str, str]]:
    return {(Names.item(r), "uncertain") for r in side["uncertain"]} | {
        (Names.item(r), f"reliable→{r['favours']}") for r in side["reliable"]
    }


def strategy_difference(side_a: dict, side_b: dict, steps: int) -> dict:
    """The score of the module docstring: evidence distance + onset gap."""
    sa, sb = _items(side_a), _items(side_b)
    dist = 1 - len(sa & sb) / len(sa | sb) if sa | sb else 0.0
    oa, ob = side_a["onset"], side_b["onset"]
    gap = abs(oa - ob) / max(steps, 1) if oa is not None and ob is not None else float((oa is None) != (ob is None))
    return {
        "score": _r(dist + gap),
        "evidence_distance": _r(dist),
        "onset_gap": _r(gap),
        "shared_evidence": len(sa & sb),
        "evidence": [len(sa), len(sb)],
    }


def why(p: dict, classes: list[str]) -> str:
    """One line: how the two runs separate the pair (e.g. "run A separates with P-20 (= B's P-11)
    from step 3; run B only from step 9 with ...; P-17 (B's P-2) uncertain in run B")."""
    A, B = p["run_a"], p["run_b"]
    if A["onset"] is not None:
        parts = [f"run A separates with {Names.text(A['separator'], 'a')} from step {A['onset']}"]
    else:
        parts = ["run A has no reliable prototype"]
    if B["onset"] is None:
        parts.append("run B has no reliable prototype" + ("" if A["onset"] is not None else " either"))
    elif A["onset"] is None:
        parts.append(f"run B separates with {Names.text(B['separator'], 'b')} from step {B['onset']}")
    else:
        sep_a, sep_b = A["separator"], B["separator"]
        same = sep_b["a"] is not None and sep_a["a"] == sep_b["a"]
        with_ = "the same prototype" if same else Names.text(sep_b, "b")
        when = "only from" if B["onset"] > A["onset"] else "already from" if B["onset"] < A["onset"] else "from"
        parts.append(f"run B {when} step {B['onset']}, with {with_}")
    for run, side in (("A", A), ("B", B)):
        if side["uncertain"]:
            labels = [Names.text(r, run.lower()) for r in side["uncertain"][:2]]
            parts.append(f"{', '.join(labels)} uncertain in run {run}")
    d = p["difference"]
    return (
        f"{classes[p['a']]}↔{classes[p['b']]}: " + "; ".join(parts) + f" (score {d['score']:.2f} = evidence "
        f"distance {d['evidence_distance']:.2f} + onset gap {d['onset_gap']:.2f})"
    )


def confused_in(ex_a: dict, ex_b: dict) -> dict[tuple[int, int], list[str]]:
    """Every pair (a < b) reported in either run's explanations (``explanations.json``), and the
    runs (``"a"``, ``"b"``) that report it."""
    where: dict[tuple[int, int], list[str]] = {}
    for run, e in (("a", ex_a), ("b", ex_b)):
        for p in e.get("pairs", []):
            where.setdefault(tuple(sorted((int(p["a"]), int(p["b"])))), []).append(run)
    return where


def compare_pair(
    a: int,
    b: int,
    pe_a: dict,
    pe_b: dict,
    classes: list[str],
    names: Names,
    cm_a: np.ndarray,
    cm_b: np.ndarray,
    confused_in: list[str],
    steps: int,
) -> dict:
    """One pair of ``compare.json``: both runs' pair explanations ``pe_a``, ``pe_b``
    (``Run.pair_explanation``) side by side in A's numbering, their confusions, the strategy
    difference over ``steps`` steps and the line saying why."""
    p = {
        "a": a,
        "b": b,
        "names": [classes[a], classes[b]],
        "confused_in": confused_in,
        "confusions": {
            "run_a": {"a_to_b": int(cm_a[a, b]), "b_to_a": int(cm_a[b, a])},
            "run_b": {"a_to_b": int(cm_b[a, b]), "b_to_a": int(cm_b[b, a])},
        },
        "run_a": _side(pe_a, names.ref_a),
        "run_b": _side(pe_b, names.ref_b),
    }
    p["difference"] = strategy_difference(p["run_a"], p["run_b"], steps)
    p["why"] = why(p, classes)
    return p


def by_difference(pairs: list[dict]) -> list[dict]:
    """Pairs sorted by strategy difference, largest first (then by class indices)."""
    return sorted(pairs, key=lambda p: (-p["difference"]["score"], p["a"], p["b"]))


# --- the sections of compare.json ------------------------------------------------------------


def matching_data(m: dict) -> dict:
    """The matching sections of ``compare.json`` from :func:`match_prototypes`'s result, in order:
    the threshold and its reason, the difference score's definition, the summary, the rows, B's
    unmatched prototypes and the overlap matrix (rounded)."""
    return {
        "threshold": MATCH_THRESHOLD,
        "threshold_reason": THRESHOLD_REASON,
        "difference_score": SCORE_DOC,
        "matching_summary": matching_summary(m),
        "matching": m["rows"],
        "unmatched_b": m["unmatched_b"],
        "overlap": [[_r(x) for x in row] for row in m["overlap"]],
    }


def confusion_difference(cm_a: np.ndarray, cm_b: np.ndarray) -> dict:
    """Both confusion matrices, B − A, each run's errors and the 8 largest off-diagonal changes."""
    diff = cm_b - cm_a
    off = [(int(i), int(j)) for i, j in zip(*np.nonzero(diff), strict=True) if i != j]
    off.sort(key=lambda ij: (-abs(diff[ij]), ij))
    return {
        "run_a": cm_a.tolist(),
        "run_b": cm_b.tolist(),
        "difference": diff.tolist(),
        "errors": [int(cm_a.sum() - np.trace(cm_a)), int(cm_b.sum() - np.trace(cm_b))],
        "largest_changes": [
            {"true": i, "predicted": j, "run_a": int(cm_a[i, j]), "run_b": int(cm_b[i, j])} for i, j in off[:8]
        ],
    }


# --- agreement of the listed roles (issue 24) -------------------------------------------------


def role_agreement(
    items_a: set[tuple], items_b: set[tuple], a_to_b: dict, k_b: int, *, draws: int = 200, seed: int = 0
) -> dict:
    """How far run B lists what run A lists, after matching: items are (context..., prototype) tuples
    whose last element is a prototype number (A's in ``items_a``, B's in ``items_b``); A's prototype is
    put in B's numbering through ``a_to_b`` (an unmatched one can agree with nothing). Returns the
    Jaccard index of the two sets, their sizes and overlap, and the same index under ``draws`` random
    one-to-one matchings of A's prototypes onto B's (mean, 95th percentile): agreement a matching
    that knew nothing would reach by chance. Jaccard is None when neither run lists anything."""
    k_a = 1 + max([i[-1] for i in items_a] + list(a_to_b) + [-1])

    def jaccard(mapping) -> float | None:
        mapped = {(*i[:-1], ("B", mapping[i[-1]]) if mapping.get(i[-1]) is not None else ("A", i[-1])) for i in items_a}
        theirs = {(*i[:-1], ("B", i[-1])) for i in items_b}
        union = mapped | theirs
        return len(mapped & theirs) / len(union) if union else None

    observed = jaccard(a_to_b)
    rng = np.random.default_rng([seed, 24])
    chance = []
    if observed is not None and k_b:
        for _ in range(draws):
            perm = rng.permutation(max(k_b, k_a))[:k_a]  # A's prototypes onto distinct random B numbers
            chance.append(jaccard({a: int(b) if b < k_b else None for a, b in enumerate(perm)}))
    ja = {"jaccard": None if observed is None else _r(observed), "items": [len(items_a), len(items_b)]}
    ja["shared"] = _shared(items_a, items_b, a_to_b)
    ja["random_matching"] = (
        {"mean": _r(float(np.mean(chance))), "p95": _r(float(np.percentile(chance, 95))), "draws": draws}
        if chance
        else None
    )
    return ja


def _shared(items_a: set[tuple], items_b: set[tuple], a_to_b: dict) -> int:
    """The number of A's items that B lists too, after matching."""
    mapped = {(*i[:-1], a_to_b[i[-1]]) for i in items_a if a_to_b.get(i[-1]) is not None}
    return len(mapped & items_b)
