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


def shared_prototypes(contain: np.ndarray, labels: np.ndarray, cls: int, rho: float = 1.0) -> list[int]:
    """Prototypes contained in ≥ rho of the samples of class ``cls`` (rho=1: every sample)."""
    m = np.asarray(labels) == cls
    if not m.any():
        raise I2XError(f"class {cls} has no sample in the explanation set: choose a class that occurs in it")
    frac = np.asarray(contain)[m].mean(0)
    return [int(k) for k in np.flatnonzero(frac >= rho - 1e-12)]


def specialized_prototypes(
    contain: np.ndarray,
    labels: np.ndarray,
    cls: int,
    shared: list[int],
    groups: int = 3,
    rho_group: float = 0.9,
    random_state: int = 0,
) -> list[dict]:
    """Cluster class ``cls`` samples by their binary containment vectors (Jaccard, average
    linkage); per sub-group, the prototypes contained in ≥ rho_group of it but not shared."""
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
        protos = [int(k) for k in np.flatnonzero(frac >= rho_group - 1e-12) if k not in set(shared)]
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
) -> list[dict]:
    """Steps where class ``cls``'s mean confidence changes significantly and the change is
    carried by one of ``candidates`` (|W_t[k, cls]| large, same sign as the change); at each,
    the opposing classes c' whose W_t[k, c'] has the opposite sign."""
    d = np.nan_to_num(np.asarray(class_delta)[:, cls])
    if not np.any(d):
        return []
    thr = cfg.key_step_fraction * np.abs(d).max()
    out = []
    for t in np.flatnonzero(np.abs(d) >= thr):
        if flagged is not None and flagged[t]:
            continue
        w = W[t]  # (K, C)
        col = w[candidates, cls] if candidates else np.zeros(0)
        if not col.size or not np.any(col):
            continue
        wmax = np.abs(col).max()
        protos = []
        for k, wk in sorted(zip(candidates, col, strict=True), key=lambda kv: -abs(kv[1])):
            if abs(wk) < cfg.key_weight_fraction * wmax or np.sign(wk) != np.sign(d[t]):
                continue
            opp = [c2 for c2 in range(w.shape[1]) if c2 != cls and np.sign(w[k, c2]) == -np.sign(wk) and w[k, c2] != 0]
            opp.sort(key=lambda c2: -abs(w[k, c2]))
            protos.append(
                {
                    "prototype": int(k),
                    "weight": float(wk),
                    "against": [{"class": int(c2), "weight": float(w[k, c2])} for c2 in opp[: cfg.top]],
                }
            )
        if protos:
            out.append({"step": int(t), "delta_confidence": float(d[t]), "prototypes": protos[: cfg.top]})
    return out


def pair_contribution(W: np.ndarray, a: int, b: int) -> np.ndarray:
    """d_t[k] = W_t[k, a] − W_t[k, b]: (T, K)."""
    return W[:, :, a] - W[:, :, b]


def sign_flips(d: np.ndarray) -> np.ndarray:
    """Number of sign changes along axis 0 of (T, K), zeros skipped (flagged steps have W = 0)."""
    d = np.asarray(d)
    out = np.zeros(d.shape[1], dtype=np.int64)
    for k in range(d.shape[1]):
        s = np.sign(d[:, k])
        s = s[s != 0]
        out[k] = int(np.count_nonzero(s[1:] != s[:-1]))
    return out


def pair_explanation(
    W: np.ndarray, contain: np.ndarray, labels: np.ndarray, a: int, b: int, cfg: ExplainConfig | None = None
) -> dict:
    """Uncertain prototypes (in both classes, d_t[k] changes sign repeatedly; score = flips ×
    Σ_t |d_t[k]|) and reliable ones (one sign throughout; score = |Σ_t d_t[k]|) for (a, b)."""
    cfg = cfg or ExplainConfig()
    labels = np.asarray(labels)
    for c in (a, b):
        if not (labels == c).any():
            raise I2XError(f"class {c} has no sample in the explanation set: choose a pair that occurs in it")
    fa = contain[labels == a].mean(0)
    fb = contain[labels == b].mean(0)
    both = (fa >= cfg.min_pair_contain) & (fb >= cfg.min_pair_contain)
    d = pair_contribution(W, a, b)  # (T, K)
    flips = sign_flips(d)
    mag = np.abs(d).sum(0)
    score = flips * mag
    unc = [k for k in np.argsort(-score, kind="stable") if both[k] and flips[k] >= 2 and score[k] > 0]
    rel_score = np.abs(d.sum(0))
    rel = [
        k
        for k in np.argsort(-rel_score, kind="stable")
        if flips[k] == 0 and rel_score[k] > 0 and (fa[k] >= cfg.min_pair_contain or fb[k] >= cfg.min_pair_contain)
    ]

    def row(k, s):
        nz = np.flatnonzero(d[:, k])
        return {
            "prototype": int(k),
            "score": float(s),
            "sign_flips": int(flips[k]),
            "total_contribution": float(d[:, k].sum()),
            "contain_a": float(fa[k]),
            "contain_b": float(fb[k]),
            "favours": (int(a) if d[:, k].sum() > 0 else int(b)),
            "sign_changes_at": [
                int(nz[i + 1]) for i in range(len(nz) - 1) if np.sign(d[nz[i], k]) != np.sign(d[nz[i + 1], k])
            ],
        }

    return {
        "a": int(a),
        "b": int(b),
        "uncertain": [row(k, score[k]) for k in unc[: cfg.top]],
        "reliable": [row(k, rel_score[k]) for k in rel[: cfg.top]],
    }


def confused_pairs(confusion: np.ndarray, top: int = 3) -> list[tuple[int, int, int]]:
    """Most confused unordered pairs (a, b, a↔b count) of a confusion matrix (rows = true)."""
    cm = np.asarray(confusion)
    sym = cm + cm.T
    pairs = [(int(i), int(j), int(sym[i, j])) for i in range(len(cm)) for j in range(i + 1, len(cm)) if sym[i, j] > 0]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs[:top]


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
) -> dict:
    """The whole structured explanation: per class and per (confused) pair, JSON-ready."""
    cfg = cfg or ExplainConfig()
    W = np.asarray(W)
    labels = np.asarray(labels)
    C = W.shape[2]
    classes = classes or [str(c) for c in range(C)]
    per_class = {}
    for c in range(C):
        if not (labels == c).any():
            continue
        shared = shared_prototypes(contain, labels, c, cfg.rho)
        spec = specialized_prototypes(contain, labels, c, shared, cfg.groups, cfg.rho_group)
        cand = sorted(set(shared) | {k for g in spec for k in g["prototypes"]})
        per_class[classes[c]] = {
            "index": c,
            "n_samples": int((labels == c).sum()),
            "shared": shared,
            "specialized": [{"size": g["size"], "prototypes": g["prototypes"]} for g in spec],
            "key_checkpoints": key_checkpoints(W, class_delta, c, cand, cfg, flagged),
        }
    pair_list, skipped = [], []
    if pairs is None and confusion is not None:
        pairs = [(a, b) for a, b, _ in confused_pairs(confusion)]
    for a, b in pairs or []:
        if not ((labels == a).any() and (labels == b).any()):
            skipped.append([int(a), int(b)])  # a class absent from E: nothing to explain it with
            continue
        pe = pair_explanation(W, contain, labels, a, b, cfg)
        if confusion is not None:
            pe["confusions"] = {"a_to_b": int(confusion[a, b]), "b_to_a": int(confusion[b, a])}
        pe["names"] = [classes[a], classes[b]]
        pair_list.append(pe)
    return {
        "config": asdict(cfg),
        "classes": per_class,
        "pairs": pair_list,
        "skipped_pairs": skipped,
        "flagged_steps": [] if flagged is None else [int(t) for t in np.flatnonzero(flagged)],
    }
