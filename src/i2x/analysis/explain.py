"""Stage 7 (§2.6): structured explanations per class and per class pair.

Pure numpy / scikit-learn: from containment (N, K), labels (N,), W (T, K, C) and the
per-class confidence change to JSON-ready dicts.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from ..config import ExplainConfig
from ..errors import I2XError
from .links import Links
from .stats import enrichment_pvalues, holm


def shared_prototypes(
    contain: np.ndarray, labels: np.ndarray, cls: int, rho: float = 1.0, background: np.ndarray | None = None
) -> list[int]:
    """Prototypes contained in ≥ rho of the samples of class ``cls`` (rho=1: every sample);
    ``background`` (K,) bool prototypes are never shared."""
    m = np.asarray(labels) == cls
    if not m.any():
        raise I2XError(f"class {cls} has no sample in the explanation set: choose a class that occurs in it")
    frac = np.asarray(contain)[m].mean(0)
    return [int(k) for k in np.flatnonzero(frac >= rho - 1e-12) if background is None or not background[k]]


def specialized_prototypes(
    contain: np.ndarray,
    labels: np.ndarray,
    cls: int,
    shared: list[int],
    groups: int = 3,
    rho_group: float = 0.9,
    background: np.ndarray | None = None,
) -> list[dict]:
    """Cluster class ``cls`` samples by their binary containment vectors (Jaccard, average
    linkage); per sub-group, the prototypes contained in ≥ rho_group of it but not shared
    (and not ``background``)."""
    idx = np.flatnonzero(np.asarray(labels) == cls)
    x = np.asarray(contain)[idx].astype(bool)
    g = min(groups, len(idx))
    if g < 2 or (x == x[0]).all():
        lab = np.zeros(len(idx), dtype=int)
    else:
        lab = AgglomerativeClustering(n_clusters=g, metric="jaccard", linkage="average").fit_predict(x)
    out = []
    for j in np.unique(lab):
        members = idx[lab == j]
        frac = x[lab == j].mean(0)
        protos = [
            int(k)
            for k in np.flatnonzero(frac >= rho_group - 1e-12)
            if k not in set(shared) and (background is None or not background[k])
        ]
        out.append({"size": int(len(members)), "members": members.tolist(), "prototypes": protos})
    out.sort(key=lambda d: -d["size"])
    return out


def key_checkpoints(
    W: np.ndarray,
    class_delta: np.ndarray,
    cls: int,
    candidates: list[int],
    cfg: ExplainConfig,
    flagged: np.ndarray | None = None,
    p_W: np.ndarray | None = None,
) -> list[dict]:
    """Steps where class ``cls``'s mean confidence changes by ≥ key_step_fraction of its largest
    change and the change is carried by one of ``candidates`` (|W_t[k, cls]| ≥ key_weight_fraction
    of the largest, same sign as the change, and — with ``p_W`` (T, K, C) — permutation p < alpha);
    at each, the opposing classes c' whose W_t[k, c'] has the opposite sign."""
    d = np.nan_to_num(np.asarray(class_delta)[:, cls])
    if not np.any(d) or not candidates:
        return []
    out = []
    for t in np.flatnonzero(np.abs(d) >= cfg.key_step_fraction * np.abs(d).max()):
        if d[t] == 0 or (flagged is not None and flagged[t]):  # no change (fraction 0): nothing to carry
            continue
        w, col = W[t], W[t][candidates, cls]  # (K, C), (len(candidates),)
        if not np.any(col):
            continue
        protos = []
        for k, wk in sorted(zip(candidates, col, strict=True), key=lambda kv: -abs(kv[1])):
            p = None if p_W is None else float(p_W[t, k, cls])
            if wk == 0 or abs(wk) < cfg.key_weight_fraction * np.abs(col).max() or np.sign(wk) != np.sign(d[t]):
                continue
            if p is not None and p >= cfg.alpha:
                continue
            opp = [c2 for c2 in range(w.shape[1]) if c2 != cls and np.sign(w[k, c2]) == -np.sign(wk) and w[k, c2] != 0]
            opp.sort(key=lambda c2: -abs(w[k, c2]))
            against = [{"class": int(c2), "weight": float(w[k, c2])} for c2 in opp[: cfg.top]]
            protos.append({"prototype": int(k), "weight": float(wk), "p_value": p, "against": against})
        if protos:
            out.append({"step": int(t), "delta_confidence": float(d[t]), "prototypes": protos[: cfg.top]})
    return out


def pair_contribution(W: np.ndarray, a: int, b: int) -> np.ndarray:
    """d_t[k] = W_t[k, a] − W_t[k, b]: (T, K)."""
    return W[:, :, a] - W[:, :, b]


def sign_flips(d: np.ndarray) -> np.ndarray:
    """Number of sign changes along axis 0 of (T, K), zeros skipped (steps without a significant sign)."""
    d = np.asarray(d)
    out = np.zeros(d.shape[1], dtype=np.int64)
    for k in range(d.shape[1]):
        s = np.sign(d[:, k])
        s = s[s != 0]
        out[k] = int(np.count_nonzero(s[1:] != s[:-1]))
    return out


def significant_signs(d: np.ndarray, p: np.ndarray | None, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(signs, adjusted p), both (T, K): the sign of d_t[k] where it is significant, else 0.

    With p-values (T, K), a step counts when its Bonferroni-adjusted p (p × T) is below
    ``alpha``; without (a bare W), every non-zero sign counts and adjusted p is 0 (uncalibrated)."""
    if p is None:
        return np.sign(d), np.where(d != 0, 0.0, 1.0)
    adj = np.minimum(1.0, np.asarray(p, dtype=np.float64) * d.shape[0])
    return np.where(adj < alpha, np.sign(d), 0.0), adj


def _side_p(sig: np.ndarray, adj: np.ndarray, sign: int) -> np.ndarray:
    """(K,) smallest adjusted p among the steps significant with ``sign`` (1 where there are none)."""
    return np.where(sig == sign, adj, 1.0).min(0) if len(sig) else np.ones(sig.shape[1])


def _roles(d: np.ndarray, p: np.ndarray | None, fa, fb, fg, cfg: ExplainConfig) -> dict:
    """Uncertain and reliable prototypes (every one, ranked) of one pair's contributions d (T, K)
    with p-values p (T, K) or None, and what their rows need."""
    sig, adj = significant_signs(d, p, cfg.alpha)
    pos, neg = _side_p(sig, adj, 1), _side_p(sig, adj, -1)
    flips, mag = sign_flips(sig), (np.abs(d) * (sig != 0)).sum(0)
    p_unc, p_rel = np.maximum(pos, neg), np.minimum(pos, neg)
    guard = adj if cfg.opposite_step == "adjusted" or p is None else p  # which p of a step of the other sign counts
    opposite = (np.sign(d) == -np.sign(np.where(pos < neg, 1, -1))) & (guard < cfg.alpha)
    both = (fa >= cfg.min_pair_contain) & (fb >= cfg.min_pair_contain) & ~fg
    either = ((fa >= cfg.min_pair_contain) | (fb >= cfg.min_pair_contain)) & ~fg
    unc = [k for k in range(len(fa)) if both[k] and p_unc[k] < cfg.alpha]
    rel = [
        k for k in range(len(fa)) if either[k] and p_rel[k] < cfg.alpha and flips[k] == 0 and not opposite[:, k].any()
    ]
    unc.sort(key=lambda k: (p_unc[k], -flips[k] * mag[k], k))
    rel.sort(key=lambda k: (p_rel[k], -abs(d[:, k].sum()), k))
    return {"unc": unc, "rel": rel, "sig": sig, "adj": adj, "flips": flips, "mag": mag, "p_unc": p_unc, "p_rel": p_rel}


def pair_explanation(
    W: np.ndarray,
    contain: np.ndarray,
    labels: np.ndarray,
    a: int,
    b: int,
    cfg: ExplainConfig | None = None,
    *,
    p_pair: np.ndarray | None = None,
    background: np.ndarray | None = None,
    p_pair_class: np.ndarray | None = None,
    frequency: np.ndarray | None = None,
    links: Links | None = None,
) -> dict:
    """Uncertain and reliable prototypes of the pair (a, b): with ``links`` (the default ``samples``
    test) :func:`links_rows`'s; without, the paper's rule on d_t[k] = W_t[k, a] − W_t[k, b]:

    Uncertain: in ≥ min_pair_contain of both classes, significantly favouring a at some step and
    b at another; p_value = the larger of the two sides' smallest Bonferroni-adjusted p (an
    intersection-union test). Reliable: significant at ≥ 1 step, one sign at every significant
    step and no opposite step even at unadjusted p < alpha (``cfg.opposite_step`` "adjusted": at adjusted
    p < alpha, i.e. its significant steps have one sign); p_value = its smallest adjusted p.
    ``p_pair`` (T, K, C, C): permutation p-values of d (:func:`i2x.analysis.dynamics.permutation_pvalues`,
    within-class by default: a link beyond class membership); without it every non-zero sign counts
    (uncalibrated). ``p_pair_class``: the all-sample p-values; the prototypes that pass the same rules
    with them but not with ``p_pair`` are listed as ``class_level``: associated with the pair's
    classes, not shown to drive their confidence (never called uncertain or reliable).
    ``background`` (K,) prototypes never count. ``frequency`` (K, 2): how often each prototype is
    uncertain / reliable over half-subsamples of E (:mod:`i2x.analysis.stability`); then each row
    carries its ``frequency``, rows below ``cfg.stability_threshold`` are left out and counted in
    ``below_threshold``."""
    cfg = cfg or ExplainConfig()
    labels = np.asarray(labels)
    for c in (a, b):
        if not (labels == c).any():
            raise I2XError(f"class {c} has no sample in the explanation set: choose a pair that occurs in it")
    fa, fb = contain[labels == a].mean(0), contain[labels == b].mean(0)
    if links is not None:
        return links_rows(links, a, b, fa, fb, cfg, frequency)
    fg = np.zeros(len(fa), bool) if background is None else np.asarray(background, bool)
    d = pair_contribution(W, a, b)  # (T, K)
    p = None if p_pair is None else np.asarray(p_pair)[:, :, a, b]
    r = _roles(d, p, fa, fb, fg, cfg)
    sig, adj, flips, mag = r["sig"], r["adj"], r["flips"], r["mag"]

    def row(k, score, p_value):
        steps = np.flatnonzero(sig[:, k])
        return {
            "prototype": int(k),
            "score": float(score),
            "p_value": None if p is None else float(p_value),
            "sign_flips": int(flips[k]),
            "total_contribution": float(d[:, k].sum()),
            "contain_a": float(fa[k]),
            "contain_b": float(fb[k]),
            "favours": int(a) if (d[steps, k].sum() if len(steps) else d[:, k].sum()) > 0 else int(b),
            "significant_steps": [
                {"step": int(t), "favours": int(a) if sig[t, k] > 0 else int(b), "p_value": float(adj[t, k])}
                for t in steps
            ],
            "sign_changes_at": [
                int(steps[i + 1]) for i in range(len(steps) - 1) if sig[steps[i], k] != sig[steps[i + 1], k]
            ],
        }

    unc, rel, below = _stable_roles(r["unc"], r["rel"], frequency, cfg.stability_threshold)
    out = {
        "a": int(a),
        "b": int(b),
        "uncertain": [row(k, flips[k] * mag[k], r["p_unc"][k]) for k in unc[: cfg.top]],
        "reliable": [row(k, abs(d[:, k].sum()), r["p_rel"][k]) for k in rel[: cfg.top]],
    }
    if frequency is not None:
        for j, kind in enumerate(("uncertain", "reliable")):
            for item in out[kind]:
                item["frequency"] = float(frequency[item["prototype"], j])
        out["below_threshold"] = below
    if p_pair_class is not None:
        out["class_level"] = _class_level(d, np.asarray(p_pair_class)[:, :, a, b], fa, fb, fg, cfg, r, (a, b))
    return out


def links_rows(links: Links, a: int, b: int, fa, fb, cfg: ExplainConfig, frequency=None) -> dict:
    """The pair (a, b)'s uncertain and reliable prototypes of the samples test, ordered by :attr:`Links.score`
    (the lower end of the effect's interval), the top ``cfg.top`` of each;
    ``frequency`` (K, 2): how often each was listed on half-subsamples (an annotation: no filter)."""
    j, sgn = links.index(a, b)
    listed, steps = links.role[:, j], links.steps[:, :, j] * sgn  # (K,), (T, K) signs towards a
    out = {"a": int(a), "b": int(b)}
    for kind, code in (("uncertain", 2), ("reliable", 1)):
        ks = links.ranked(j, code)
        rows = []
        for k in ks[: cfg.top]:
            st = np.flatnonzero(steps[:, k])
            sig = steps[st, k]
            row = {
                "prototype": int(k),
                "effect": float(links.effect[k, j]),
                "effect_ci": [float(v) for v in links.ci[k, j]] if np.isfinite(links.ci[k, j]).all() else None,
                "score": float(links.score[k, j]),
                "p_value": float(links.p_family[k, j]),
                "q_value": float(links.q[k, j]),
                "sign_flips": int(np.count_nonzero(sig[1:] != sig[:-1])),
                "contain_a": float(fa[k]),
                "contain_b": float(fb[k]),
                "favours": int(a) if sig.sum() > 0 or (sig.sum() == 0 and sig[0] > 0) else int(b),
                "significant_steps": [
                    {
                        "step": int(t),
                        "favours": int(a) if steps[t, k] > 0 else int(b),
                        "p_value": float(links.p_step[t, k, j]),
                        "effect": float(links.beta[t, k, j] * sgn),
                    }
                    for t in st
                ],
                "sign_changes_at": [int(st[i + 1]) for i in range(len(st) - 1) if sig[i] != sig[i + 1]],
            }
            if frequency is not None:
                row["frequency"] = float(frequency[k, 0 if code == 2 else 1])
            rows.append(row)
        out[kind] = rows
    out["below_min_effect"] = int(((links.q[:, j] <= links.fdr) & links.tested[:, j] & (listed == 0)).sum())
    return out


def _stable_roles(unc: list[int], rel: list[int], frequency, threshold: float) -> tuple[list, list, dict]:
    """The uncertain / reliable prototypes selected in ≥ ``threshold`` of the half-subsamples, and
    how many fell below (no filter without ``frequency``)."""
    if frequency is None:
        return unc, rel, {}
    f = np.asarray(frequency)
    below = {
        "uncertain": int(sum(f[k, 0] < threshold for k in unc)),
        "reliable": int(sum(f[k, 1] < threshold for k in rel)),
    }
    return [k for k in unc if f[k, 0] >= threshold], [k for k in rel if f[k, 1] >= threshold], below


def _class_level(d, p_class, fa, fb, fg, cfg: ExplainConfig, conditional: dict, pair: tuple[int, int]) -> list[dict]:
    """The prototypes that pass the uncertain/reliable rules against the all-sample null but not
    against the within-class one: a class-level association, ranked by their class-level p."""
    c = _roles(d, p_class, fa, fb, fg, cfg)
    listed = set(conditional["unc"]) | set(conditional["rel"])
    rows = [(k, "both directions", c["p_unc"][k]) for k in c["unc"] if k not in listed]
    rows += [(k, "one direction", c["p_rel"][k]) for k in c["rel"] if k not in listed]
    rows.sort(key=lambda r: (r[2], r[0]))
    a, b = pair
    return [
        {
            "prototype": int(k),
            "pattern": pattern,
            "p_value_class_level": float(pv),
            "favours": int(a) if d[:, k].sum() > 0 else int(b),
            "contain_a": float(fa[k]),
            "contain_b": float(fb[k]),
        }
        for k, pattern, pv in rows[: cfg.top]
    ]


def confused_pairs(confusion: np.ndarray, top: int = 3) -> list[tuple[int, int, int]]:
    """Most confused unordered pairs (a, b, a↔b count) of a confusion matrix (rows = true)."""
    cm = np.asarray(confusion)
    sym = cm + cm.T
    pairs = [(int(i), int(j), int(sym[i, j])) for i in range(len(cm)) for j in range(i + 1, len(cm)) if sym[i, j] > 0]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs[:top]


def class_specific(contain: np.ndarray, labels: np.ndarray, n_classes: int, alpha: float) -> np.ndarray:
    """(K, C) bool: prototype k is contained in more of class c's samples than in the explanation
    set as a whole, beyond chance (one-sided Fisher exact test, Holm-corrected over all K × C:
    family-wise level ``alpha``). The null of the class-level lists: under labels that carry no
    information (a model trained on shuffled labels), nothing is specific."""
    p = enrichment_pvalues(contain, labels, n_classes)
    return holm(p.ravel()).reshape(p.shape) < alpha


def _split(protos: list[int], specific: np.ndarray) -> dict:
    """``protos`` split into the class-specific ones and the others (contained as often elsewhere)."""
    return {
        "prototypes": [k for k in protos if specific[k]],
        "not_class_specific": [k for k in protos if not specific[k]],
    }


def _class_entry(c: int, contain, labels, specific, dyn: tuple, cfg: ExplainConfig, background, stability) -> dict:
    """Class ``c``'s explanation: shared and specialized prototypes (split by class-specificity),
    key checkpoints, and with ``stability`` the selection frequencies."""
    W, class_delta, flagged, p_W = dyn
    shared = shared_prototypes(contain, labels, c, cfg.rho, background)
    spec = specialized_prototypes(contain, labels, c, shared, cfg.groups, cfg.rho_group, background=background)
    cand = sorted(set(shared) | {k for g in spec for k in g["prototypes"]})
    sh = _split(shared, specific)
    e = {
        "index": c,
        "n_samples": int((labels == c).sum()),
        "shared": sh["prototypes"],
        "shared_not_class_specific": sh["not_class_specific"],
        "specialized": [{"size": g["size"], **_split(g["prototypes"], specific)} for g in spec],
        "key_checkpoints": key_checkpoints(W, class_delta, c, cand, cfg, flagged, p_W),
    }
    if stability is not None:
        _stable_class(e, c, stability, cfg.stability_threshold)
    return e


def _stable_class(e: dict, c: int, stability: dict, threshold: float) -> None:
    """Annotate class ``c``'s lists with selection frequencies; leave out and count those below ``threshold``."""
    below = {"shared": 0, "specialized": 0, "key": 0}
    f_sh, f_sp = stability["shared"][c], stability["specialized"][c]
    below["shared"] = sum(f_sh[k] < threshold for k in e["shared"])
    e["shared"] = [k for k in e["shared"] if f_sh[k] >= threshold]
    for g in e["specialized"]:
        below["specialized"] += sum(f_sp[k] < threshold for k in g["prototypes"])
        g["prototypes"] = [k for k in g["prototypes"] if f_sp[k] >= threshold]
    keys = []
    for kc in e["key_checkpoints"]:
        for p in kc["prototypes"]:
            p["frequency"] = float(stability["key"][c, kc["step"], p["prototype"]])
        below["key"] += sum(p["frequency"] < threshold for p in kc["prototypes"])
        kc["prototypes"] = [p for p in kc["prototypes"] if p["frequency"] >= threshold]
        if kc["prototypes"]:
            keys.append(kc)
    e["key_checkpoints"] = keys
    e["frequency"] = {
        "shared": {str(k): float(f_sh[k]) for k in e["shared"]},
        "specialized": {str(k): float(f_sp[k]) for g in e["specialized"] for k in g["prototypes"]},
    }
    e["below_threshold"] = {k: int(v) for k, v in below.items()}


def explain(
    W: np.ndarray,
    contain: np.ndarray,
    labels: np.ndarray,
    class_delta: np.ndarray,
    confusion: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    classes: list[str] | None = None,
    pairs: list[tuple[int, int]] | None = None,
    cfg: ExplainConfig | None = None,
    *,
    p_W: np.ndarray | None = None,
    p_pair: np.ndarray | None = None,
    background: np.ndarray | None = None,
    permutations: int = 0,
    null: str = "within-class",
    p_pair_class: np.ndarray | None = None,
    stability: dict | None = None,
    present: np.ndarray | None = None,
    links: Links | None = None,
) -> dict:
    """The whole structured explanation: per class and per (confused) pair, JSON-ready. ``links``: the
    samples test of every pair (:func:`i2x.analysis.links.pair_links`), for the pair roles.

    ``p_W`` (T, K, C) / ``p_pair`` (T, K, C, C): permutation p-values from
    :func:`i2x.analysis.dynamics.dynamics` under ``null`` (``within-class``: a sample-level link
    beyond class membership; ``all``: all samples permuted); ``p_pair_class``: the all-sample
    p-values beside within-class ones, for each pair's ``class_level`` list. ``background`` (K,)
    bool: prototypes that carry no evidence, never listed as shared, specialized, key, uncertain or
    reliable. Shared and specialized prototypes are split by :func:`class_specific`. ``stability``:
    the selection frequencies of :func:`i2x.analysis.stability.selection_frequencies`; every
    listed item then carries its frequency, and items below ``cfg.stability_threshold`` are left
    out and counted (``below_threshold``). ``present`` (N, K): which prototypes have any cell in a
    sample (label-independent containment); class-specificity is tested on it when given."""
    cfg = cfg or ExplainConfig()
    W, labels = np.asarray(W), np.asarray(labels)
    C = W.shape[2]
    classes = classes or [str(c) for c in range(C)]
    # (K, C): beyond what random labels give; on label-independent containment when given (the
    # saliency of the sample's own label would make even shuffled labels look specific)
    specific = class_specific(contain if present is None else present, labels, C, cfg.alpha)
    dyn = (W, class_delta, flagged, p_W)
    per_class = {
        classes[c]: _class_entry(c, contain, labels, specific[:, c], dyn, cfg, background, stability)
        for c in range(C)
        if (labels == c).any()
    }
    pair_list, skipped, calibration = [], [], (p_pair is not None, permutations, cfg.alpha, W.shape[0], null)
    if pairs is None and confusion is not None:
        pairs = [(a, b) for a, b, _ in confused_pairs(confusion)]
    for a, b in pairs or []:
        if not ((labels == a).any() and (labels == b).any()):
            skipped.append([int(a), int(b)])  # a class absent from E: nothing to explain it with
            continue
        freq = None if stability is None else stability["roles"][min(a, b), max(a, b)]
        pe = pair_explanation(
            W, contain, labels, a, b, cfg, p_pair=p_pair, background=background, p_pair_class=p_pair_class,
            frequency=freq, links=links,
        )  # fmt: skip
        if confusion is not None:
            pe["confusions"] = {"a_to_b": int(confusion[a, b]), "b_to_a": int(confusion[b, a])}
        pe["names"] = [classes[a], classes[b]]
        pair_list.append(pe)
    out = {
        "config": asdict(cfg),
        "significance": _links_significance(links) if links else _significance(*calibration),
        "background": [] if background is None else [int(k) for k in np.flatnonzero(background)],
        "classes": per_class,
        "pairs": pair_list,
        "skipped_pairs": skipped,
        "flagged_steps": [] if flagged is None else [int(t) for t in np.flatnonzero(flagged)],
    }
    if stability is not None:
        out["stability"] = {
            "resamples": int(stability["resamples"]),
            "threshold": cfg.stability_threshold,
            "resample": "stratified half-subsamples of the explanation set (each class halved, without "
            "replacement); stages 4-7 redone on each with the run's settings, model, records and prototypes",
        }
    return out


NULL_TEXT = {
    "within-class": "H0: within each class, a sample's intensity changes ΔI are independent of its confidence "
    "changes Δp (rows of ΔI permuted among the samples of the same class; the HDBSCAN clusters of Δp kept): "
    "what class membership explains is kept, so a listed role is a link beyond it",
    "all": "H0: each step's intensity changes ΔI are independent of its confidence changes Δp (rows of ΔI "
    "permuted over all samples; the HDBSCAN clusters of Δp kept); class membership alone rejects it, so a "
    "listed role may only say that the prototype belongs to the pair's classes",
}


def _links_significance(links: Links) -> dict:
    """How the samples test's roles were decided, in words (explanations.json's ``significance``)."""
    return {
        "calibrated": True,
        "pair_test": "samples",
        "alpha": links.fdr,
        "permutations": links.permutations,
        "null_stratum": "within-class",
        "null": "H0: within each class, which sample's intensity changes go with which sample's confidence "
        "changes is arbitrary (whole trajectories permuted among the samples of a class, one permutation for "
        "all steps)",
        "test": "per step, a ridge regression of the confidence change towards a rather than b on the "
        "prototypes' intensity changes, one row per sample, both centred within class; a (pair, prototype) "
        "is tested by its largest standardised coefficient over the steps (max-T); Benjamini-Hochberg over "
        f"all {int(links.tested.sum())} tested (pair, prototype) families at false discovery rate "
        f"{links.fdr:g}, then the steps inside selected families at {links.step_level:.3g} "
        "(Benjamini-Bogomolov); uncertain = significant steps of both signs, reliable = of one sign; each "
        "list ordered by the lower end of the effect's interval",
        "effect": "standardised within-class coefficient at the significant steps (a 1-SD larger intensity "
        "change goes with this many SD more confidence towards the favoured class; uncertain: the weaker "
        f"direction's); interval: 2.5-97.5 % of {links.bootstrap} class-stratified bootstrap resamples; items "
        f"below {links.min_effect:g} are not listed",
        "families": {"tested": int(links.tested.sum()), "selected": int((links.q <= links.fdr).sum())},
    }


def _significance(calibrated: bool, permutations: int, alpha: float, steps: int, null: str = "all") -> dict:
    if not calibrated:
        return {"calibrated": False, "test": "none: every non-zero sign counts (no p-values given)"}
    out = {
        "calibrated": True,
        "alpha": alpha,
        "permutations": int(permutations),
        "null": NULL_TEXT[null],
        "null_stratum": null,
        "test": f"two-sided permutation p of d_t[k] = W_t[k,a] - W_t[k,b] (and of W_t[k,c]); a step's sign "
        f"counts when p x {steps} steps (Bonferroni) < alpha; uncertain = significant for a at one step and for "
        "b at another (p_value = max of the two sides); reliable = significant with one sign only",
        "class_specific": "shared and specialized prototypes: contained in more of the class than of the whole "
        "explanation set (one-sided Fisher exact test, Holm over prototypes x classes, family-wise alpha); the "
        "others are listed as not_class_specific",
    }
    if null == "within-class":
        out["class_level"] = (
            "class_level (per pair): prototypes that pass the same rules against the all-sample null but not "
            "within class: associated with the pair's classes, not shown to drive their confidence"
        )
    return out
