"""The stages wired together on a real tiny run: every number recomputed from what the stage
before it wrote, with an independent implementation of the method's equations (records,
intensity, containment and background, W step by step, HDBSCAN labels, evaluation, explanations,
the recorded maps and the typical positions).

The run is a copy of the session's ``cli_run`` (the ``run_dir`` fixture; never written into)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import Saved
from sklearn.cluster import HDBSCAN

import i2x
from i2x.analysis.explain import explain
from i2x.analysis.links import Links, run_links
from i2x.cli import main
from i2x.data import splits_for


def _eq4(sal: np.ndarray, assign: np.ndarray, K: int) -> np.ndarray:
    """I_t(x)[k] = Σ_{(u,v): A(x)[u,v] = k} S_t(x)[u,v], with a one-hot assignment (T+1, N, K)."""
    onehot = (assign[..., None] == np.arange(K)).astype(np.float64)  # (N, H, W, K)
    return np.einsum("tnhw,nhwk->tnk", sal, onehot)


# --------------------------------------------------------------------------- the stages, recomputed


def test_records_are_every_checkpoint_of_the_explanation_set(saved):
    assert saved.iterations == saved.manifest["checkpoints"] and saved.iterations[0] == 0
    assert len(saved.iterations) >= 5  # T ≥ 4 steps: "step 1" and "step T−1" below are different steps
    np.testing.assert_array_equal(saved.sample_index, saved.es["indices"])
    np.testing.assert_allclose(saved.conf.sum(2), 1.0, atol=1e-5)  # softmax confidences


def test_the_explanation_set_on_disk_is_what_the_model_saw(saved):
    """record/explain_set.npz holds E as float32 normalised tensors, bit for bit the ones the
    dataset gives for E's indices (one writer, one dtype), and its labels."""
    from i2x.config import RunConfig

    tr = splits_for(RunConfig.from_dict(saved.manifest["config"])).train
    x, y = tr.tensors(saved.es["indices"])
    assert saved.es["images"].dtype == np.float32 and saved.es["labels"].dtype == np.int64
    np.testing.assert_array_equal(saved.es["images"], x.numpy())
    np.testing.assert_array_equal(saved.es["labels"], y.numpy())


def test_intensity_is_eq4_at_every_checkpoint(saved):
    want = _eq4(saved.sal, saved.pr["assignments"], saved.K)
    got = saved.ia["intensity"]
    assert got.shape == want.shape
    for t in range(len(want)):  # every checkpoint, not only the final one
        np.testing.assert_allclose(got[t], want[t], rtol=1e-5, atol=1e-6, err_msg=f"checkpoint {t}")
    assert not np.allclose(want[0], want[-1])  # the checkpoints differ, so the check has teeth


def test_containment_density_and_background_from_the_final_maps(saved):
    s, a, K = saved.sal[-1], saved.pr["assignments"], saved.K
    q = saved.cfg.contain_quantile
    contain = np.zeros((len(s), K), bool)
    for n in range(len(s)):
        top = (s[n] >= np.quantile(s[n], q)) & (s[n] > 0)  # top quarter of the sample's own final map
        contain[n, np.unique(a[n][top])] = True
    np.testing.assert_array_equal(saved.ia["contain"], contain)
    per_cell = np.array([s[a == k].mean() if (a == k).any() else np.nan for k in range(K)])
    np.testing.assert_allclose(saved.ia["density"], per_cell / s.mean(), rtol=1e-6)
    np.testing.assert_array_equal(saved.ia["background"], ~(np.nan_to_num(per_cell / s.mean()) >= 0.5))


def test_w_is_fitted_at_several_steps(saved):
    W = saved.dy["W"]
    live = np.flatnonzero(np.abs(W).max(axis=(1, 2)) > 1e-6)
    assert len(live) >= 3, f"W_t non-zero only at steps {live.tolist()}"
    assert len(np.flatnonzero(np.abs(W).max(axis=(0, 2)) > 1e-6)) >= 2  # on more than one prototype


def _hand_step(saved: Saved, t: int) -> tuple[np.ndarray, float]:
    """Eq. 6-8 of step t from the records, the saved intensities and the step's HDBSCAN labels."""
    dp = saved.conf[t + 1] - saved.conf[t]  # against the previous checkpoint, not the first
    inten = saved.ia["intensity"].astype(np.float64)
    di = inten[t + 1] - inten[t]
    lab = saved.dy["labels"][t]
    ids = np.unique(lab[lab >= 0])
    P = np.stack([dp[lab == m].mean(0) for m in ids])
    I = np.stack([di[lab == m].mean(0) for m in ids])
    I[np.abs(I) < saved.cfg.tau * np.abs(I).max(1, keepdims=True)] = 0.0
    lam = saved.cfg.ridge_lambda * (di**2).sum(1).mean() / di.shape[1]
    return np.linalg.solve(I.T @ I + lam * np.eye(I.shape[1]), I.T @ P), lam


def test_dynamics_recomputed_by_hand_step_by_step(saved):
    T = len(saved.iterations) - 1
    assert saved.cfg.ridge_scale == "relative" and not saved.dy["flagged"].any()
    for t in sorted({1, T // 2, T - 1}):
        w, lam = _hand_step(saved, t)
        assert saved.dy["lam"][t] == pytest.approx(lam, rel=1e-9)
        np.testing.assert_allclose(saved.dy["W"][t], w, rtol=1e-6, atol=1e-9, err_msg=f"step {t}")
    # Δ class confidence of class c over its own samples, every step
    y = saved.labels
    for c in range(len(saved.classes)):
        want = (saved.conf[1:, y == c, c] - saved.conf[:-1, y == c, c]).mean(1)
        np.testing.assert_allclose(saved.dy["class_delta"][:, c], want, atol=1e-9)


def test_hdbscan_clusters_the_step_own_confidence_change(saved):
    mcs = saved.cfg.min_cluster_size
    checked = 0
    for t in range(len(saved.iterations) - 1):
        if saved.dy["fallback"][t] != 0:
            continue
        dp = saved.conf[t + 1] - saved.conf[t]
        np.testing.assert_array_equal(saved.dy["labels"][t], HDBSCAN(min_cluster_size=mcs, copy=True).fit_predict(dp))
        checked += 1
    assert checked >= 3
    assert (saved.dy["n_clusters"] == [len(set(lab[lab >= 0])) for lab in saved.dy["labels"]]).all()


def test_evaluate_rows_are_true_classes_of_the_test_set(saved, run_dir):
    cfg = saved.cfg
    test = splits_for(cfg).test  # the run's own test set, as the run loads it
    np.testing.assert_array_equal(saved.ev["y_true"], test.labels)
    model = i2x.load_model(run_dir)
    assert not any(m.training for m in model.modules())  # ready for inference, as loaded
    with torch.no_grad():
        pred = model(test.tensors()[0]).argmax(1).numpy()
    np.testing.assert_array_equal(saved.ev["y_pred"], pred)
    C = len(saved.classes)
    cm = np.zeros((C, C), int)
    np.add.at(cm, (test.labels, pred), 1)  # cm[true, predicted]
    np.testing.assert_array_equal(saved.ev["confusion"], cm)
    assert not np.array_equal(cm, cm.T)  # asymmetric: a transposed matrix would be caught
    assert saved.manifest["metrics"]["test_accuracy"] == pytest.approx((pred == test.labels).mean())
    sym = [(cm[a, b] + cm[b, a], a, b) for a in range(C) for b in range(a + 1, C) if cm[a, b] + cm[b, a]]
    top = sorted(sym, key=lambda x: (-x[0], x[1], x[2]))
    assert [(p["a"], p["b"], p["count"]) for p in saved.manifest["metrics"]["confused_pairs"]] == [
        (a, b, n) for n, a, b in top[:5]
    ]


def test_explained_pairs_carry_a_to_b_from_the_confusion_matrix(saved):
    cm = saved.ev["confusion"]
    pairs = saved.ex["pairs"]
    assert pairs, "the tiny run has confused pairs"
    for p in pairs:
        a, b = p["a"], p["b"]
        assert p["confusions"] == {"a_to_b": int(cm[a, b]), "b_to_a": int(cm[b, a])}
        assert p["names"] == [saved.classes[a], saved.classes[b]]
    assert any(cm[p["a"], p["b"]] != cm[p["b"], p["a"]] for p in pairs)  # a swap would show
    sym = cm + cm.T
    want = sorted(((a, b) for a in range(len(cm)) for b in range(a + 1, len(cm)) if sym[a, b]), key=lambda p: -sym[p])
    assert [(p["a"], p["b"]) for p in pairs] == want[:3]


def _recompute_links(s: Saved, check: bool = True) -> Links:
    """The pair roles' samples test of the saved records with the run's settings (``check``: equal to
    arrays/links.npz)."""
    c = s.cfg
    links = run_links(
        s.conf, s.ia["intensity"], s.ia["contain"], s.labels, c.explain, lam=c.ridge_lambda,
        permutations=c.permutations, seed=c.seed, background=s.ia["background"],
    )  # fmt: skip
    if not check:
        return links
    saved = dict(np.load(s.dir / "arrays" / "links.npz"))
    for k, v in links.to_arrays().items():
        np.testing.assert_allclose(np.asarray(saved[k], float), np.asarray(v, float), rtol=1e-6, err_msg=k)
    return Links.from_arrays(saved)


def _recompute_explanations(s: Saved, check_links: bool = True) -> dict:
    ex = explain(
        s.dy["W"],
        s.ia["contain"],
        s.labels,
        s.dy["class_delta"],
        confusion=s.ev["confusion"],
        flagged=s.dy["flagged"],
        classes=s.classes,
        cfg=s.cfg.explain,
        p_W=s.dy["p_W"],
        p_pair=s.dy["p_pair"],
        background=s.ia["background"],
        permutations=int(s.dy["permutations"]),
        null=str(s.dy["null"]),
        p_pair_class=s.dy.get("p_pair_class"),
        stability=st if int((st := dict(np.load(s.dir / "arrays" / "stability.npz")))["resamples"]) else None,
        present=s.ia["present"],
        links=_recompute_links(s, check_links),
    )
    health = s.manifest["metrics"]["health"]
    flag = {"passed": not health, "reasons": health, "note": s.ex["model_health"]["note"]}
    return json.loads(json.dumps({**ex, "checkpoints": s.manifest["checkpoints"], "model_health": flag}))


def test_explanations_are_explain_of_the_saved_arrays(saved):
    assert saved.ex == _recompute_explanations(saved)
    assert saved.ex["significance"]["calibrated"] and saved.ex["significance"]["permutations"] == 999
    assert saved.ex["config"] == json.loads(json.dumps(saved.manifest["config"]["explain"]))


def test_background_prototypes_reach_the_explanation(run_dir, tmp_path):
    """`--background-saliency 1.0` makes the below-average prototypes background: the explain stage
    must pass them on (listed in `background`, never shared, specialized, key, uncertain or reliable)."""
    d = tmp_path / "bg"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("finetune", "report"))
    assert main(["analyze", str(d), "--background-saliency", "1.0", "--device", "cpu"]) == 0
    s = Saved(d)
    bg = np.flatnonzero(s.ia["density"] < 1.0).tolist()
    assert 0 < len(bg) < s.K
    assert s.ex["background"] == bg and s.ia["background"].tolist() == [k in bg for k in range(s.K)]
    assert not _listed(s.ex) & set(bg)
    assert s.ex == _recompute_explanations(s)
    # with the background ignored, something background would have been listed: the check has teeth
    s.ia["background"] = np.zeros(s.K, bool)
    assert _listed(_recompute_explanations(s, check_links=False)) & set(bg)


def _listed(ex: dict) -> set[int]:
    """Every prototype an explanation names anywhere: shared and specialized (class-specific or not),
    key checkpoints, uncertain, reliable and class-level items of the pairs."""
    listed = set()
    for c in ex["classes"].values():
        listed |= set(c["shared"] + c["shared_not_class_specific"])
        listed |= {k for g in c["specialized"] for k in g["prototypes"] + g["not_class_specific"]}
        listed |= {p["prototype"] for kc in c["key_checkpoints"] for p in kc["prototypes"]}
    for p in ex["pairs"]:
        listed |= {r["prototype"] for r in p["uncertain"] + p["reliable"] + p.get("class_level", [])}
    return listed


def test_recorded_maps_are_the_label_saliency_of_the_final_model(saved, run_dir):
    model = i2x.load_model(run_dir).eval()
    x = saved.x_exp()
    layer = saved.manifest["model"]["layer"]
    maps = i2x.saliency(model, x, saved.labels, layer)
    np.testing.assert_allclose(saved.sal[-1], maps, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        probs = torch.softmax(model(x), 1).numpy()
    np.testing.assert_allclose(saved.conf[-1], probs, atol=1e-5)


def test_typical_positions_are_nearest_their_centroid(saved, run_dir):
    model = i2x.load_model(run_dir).eval()
    f = i2x.features(model, saved.x_exp(), saved.manifest["model"]["layer"])  # (N, H, W, D)
    z = (f - saved.pr["pca_mean"]) @ saved.pr["pca_components"].T  # (N, H, W, P)
    a, typ = saved.pr["assignments"], saved.pr["typical"]
    for k in range(saved.K):
        d2 = ((z - saved.pr["centroids"][k]) ** 2).sum(-1)  # (N, H, W)
        d2 = np.where(a == k, d2, np.inf)
        best = d2.reshape(len(d2), -1).min(1)  # each sample's nearest position of k
        rows = [r for r in typ[k] if r[0] >= 0]
        assert rows, f"prototype {k} has no typical position"
        got = [d2[r, u, v] for r, u, v in rows]
        assert all(a[r, u, v] == k for r, u, v in rows) and len({r for r, _, _ in rows}) == len(rows)
        np.testing.assert_allclose(got, [best[r] for r, _, _ in rows], rtol=1e-3, atol=1e-5)
        want = np.sort(best[np.isfinite(best)])[: len(rows)]  # the nearest samples, nearest first
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
