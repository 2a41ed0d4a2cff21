"""The statistics the analyses share (numpy + scipy): mean ± sample std, paired tests over seeds
or images, Holm's correction, and the one way to write a p-value.

:func:`paired_comparison` (fine-tuning: x − y over seeds, sign test and paired t-test),
:func:`paired_test` (faithfulness: mean of paired differences, its t-interval and one-sample
t-test), :func:`holm` (both: family-wise correction), :func:`mean_std` (fine-tuning's table and
the report's figure: the paper's ± over repeats), :func:`format_p` (every text that prints a p).
"""

from __future__ import annotations

import warnings

import numpy as np

ALPHA = 0.05


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1, as for the paper's ± over 5 repeats; 0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_comparison(x: list[float], y: list[float]) -> dict:
    """Paired x − y over seeds: mean difference, its std, wins/losses/ties, two-sided sign test
    (exact binomial on the non-tied pairs) and paired t-test p-values (None when undefined)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    d = x - y
    wins, losses = int((d < 0).sum()), int((d > 0).sum())  # "win" = x has fewer errors than y
    n = wins + losses
    sign_p = float(stats.binomtest(wins, n, 0.5).pvalue) if n else None
    t_p = None
    if len(d) > 1 and d.std(ddof=1) > 0:
        t_p = float(stats.ttest_rel(x, y).pvalue)
    return {
        "mean_diff": float(d.mean()),
        "std_diff": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
        "x_fewer": wins,
        "x_more": losses,
        "ties": int((d == 0).sum()),
        "sign_test_p": sign_p,
        "paired_t_p": t_p,
    }


def paired_test(d: np.ndarray, alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """Mean of paired differences ``d`` (n, ...) over axis 0, its (1 − alpha) t-interval and the
    two-sided one-sample t-test p-value against 0. n < 2: interval and p are NaN; identical
    differences (no spread): the interval is the mean, p = 1 when they are 0, else 0."""
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    n = d.shape[0]
    mean = d.mean(0) if n else np.full(d.shape[1:], np.nan)
    if n < 2:
        nan = np.full(np.shape(mean), np.nan)
        return {"n": n, "mean": mean, "ci_low": nan, "ci_high": nan.copy(), "p_value": nan.copy()}
    sd = d.std(0, ddof=1)
    half = stats.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n)
    flat = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision warning on near-identical data
        p = np.asarray(stats.ttest_1samp(d, 0.0, axis=0).pvalue, dtype=np.float64)
    p = np.where(flat, np.where(mean == 0, 1.0, 0.0), p)
    half = np.where(flat, 0.0, half)
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p}


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (NaN kept as NaN)."""
    p = np.asarray(p, dtype=np.float64)
    adj = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    m = len(order)
    adj[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order])) if m else []
    return adj


def enrichment_pvalues(contain: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, C) one-sided Fisher exact p-values (the hypergeometric tail): is prototype k contained in
    more of class c's samples than its rate over all samples predicts, as if the labels were drawn
    at random? A model that learned nothing (labels independent of what it sees) gives uniform p."""
    from scipy.stats import hypergeom

    x, y = np.asarray(contain, dtype=bool), np.asarray(labels)
    total, n = x.sum(0), len(y)  # (K,) samples containing k, all samples
    p = np.ones((x.shape[1], n_classes))
    for c in range(n_classes):
        m = y == c
        if m.any():
            p[:, c] = hypergeom.sf(x[m].sum(0) - 1, n, total, int(m.sum()))
    return p


def format_p(v, digits: int = 2, missing: str = "—", template: str = "{}") -> str:
    """A p-value as text: ``digits`` significant digits (``0.013``), put into ``template``; ``missing``
    (the whole text) when there is none. The report's ``0.013`` / ``—``; fine-tuning's table
    ``format_p(v, 3, "n/a")``; ``i2x explain``'s ``format_p(v, missing="", template=" (p = {})")``."""
    return missing if v is None else template.format(f"{v:.{digits}g}")


def format_effect(row: dict) -> str:
    """A listed pair role's effect with its interval (``0.41 [0.26, 0.55]``), or its Σ d under the paper's
    test (``Σd = +0.12``): every text that prints one (``i2x explain``, the run summary, the report)."""
    if "effect" not in row:
        return f"Σd = {row['total_contribution']:+.3g}"
    ci = row.get("effect_ci")
    return f"{row['effect']:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


__all__ = ["ALPHA", "mean_std", "paired_comparison", "paired_test", "holm", "format_p", "format_effect"]
