"""The stages wired together (issue 17): every number of a real tiny run recomputed from what
the stage before it wrote, with an independent implementation of the method's equations, and
the paths a user takes that no other test executes (the report of `i2x run`, `--prototype auto`
on a real run, the in-memory Recorder, `i2x.run(preset=...)`, `i2x.analyze(..., test=...)`).

The run is a copy of the session's ``cli_run`` (never written into)."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import HDBSCAN

import i2x
from i2x.analysis.explain import explain, pair_explanation
from i2x.cli import main
from i2x.config import ExplainConfig, RunConfig
from i2x.data import Dataset, load_splits, splits_for


@pytest.fixture(scope="module")
def run_dir(cli_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wiring") / "run"
    shutil.copytree(cli_run, out)
    return out


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


class Saved:
    """Everything the run wrote, read with numpy and json only (no i2x loader in between)."""

    def __init__(self, d: Path):
        self.dir = d
        self.manifest = json.loads((d / "manifest.json").read_text())
        self.cfg = RunConfig.from_dict(self.manifest["config"])
        files = sorted((d / "record").glob("ckpt_it*.npz"))
        recs = [_npz(f) for f in files]
        self.iterations = [int(r["iteration"]) for r in recs]
        self.sample_index = recs[0]["sample_index"]
        self.conf = np.stack([r["confidences"] for r in recs]).astype(np.float64)  # (T+1, N, C)
        self.sal = np.stack([r["saliency"] for r in recs]).astype(np.float64)  # (T+1, N, H, W)
        self.es = _npz(d / "record" / "explain_set.npz")
        self.labels = self.es["labels"].astype(np.int64)
        self.ev = _npz(d / "arrays" / "evaluate.npz")
        self.pr = _npz(d / "arrays" / "prototypes.npz")
        self.ia = _npz(d / "arrays" / "intensity.npz")
        self.dy = _npz(d / "arrays" / "dynamics.npz")
        self.ex = json.loads((d / "explanations.json").read_text())
        self.classes = [str(c) for c in self.manifest["data"]["classes"]]
        self.K = int(self.pr["centroids"].shape[0])

    def x_exp(self) -> torch.Tensor:
        m = self.manifest["data"]
        return Dataset(self.es["images"], self.labels, self.classes, tuple(m["mean"]), tuple(m["std"])).tensors()[0]


@pytest.fixture(scope="module")
def saved(run_dir) -> Saved:
    return Saved(run_dir)


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
    with torch.no_grad():
        pred = model.eval()(test.tensors()[0]).argmax(1).numpy()
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


def _recompute_explanations(s: Saved) -> dict:
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
    )
    return json.loads(json.dumps({**ex, "checkpoints": s.manifest["checkpoints"]}))


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
    listed = set()
    for c in s.ex["classes"].values():
        listed |= set(c["shared"]) | {k for g in c["specialized"] for k in g["prototypes"]}
        listed |= {p["prototype"] for kc in c["key_checkpoints"] for p in kc["prototypes"]}
    for p in s.ex["pairs"]:
        listed |= {r["prototype"] for r in p["uncertain"] + p["reliable"]}
    assert not listed & set(bg)
    assert s.ex == _recompute_explanations(s)
    # with the background ignored, something background would have been listed: the check has teeth
    s.ia["background"] = np.zeros(s.K, bool)
    loose = _recompute_explanations(s)
    listed = {k for c in loose["classes"].values() for k in c["shared"]}
    listed |= {r["prototype"] for p in loose["pairs"] for r in p["uncertain"] + p["reliable"]}
    assert listed & set(bg)


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


# --------------------------------------------------------------------------- the Recorder


def _small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 10),
    )


@pytest.fixture(scope="module")
def digits():
    sp = load_splits("digits", train_subset=300, test_subset=100)
    return sp, *sp.train.tensors(), *sp.test.tensors()


def test_in_memory_recorder_explains_the_label(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sp, x, y, *_ = digits
    xe, ye = x[:40], y[:40].numpy()
    model = _small_model()
    rec = i2x.Recorder(xe, ye, every=2, out_dir=None, layer="3")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    want, wrong = {}, 0
    for it in range(0, 6):
        if it:
            loss = torch.nn.functional.cross_entropy(model(x[it * 32 : it * 32 + 32]), y[it * 32 : it * 32 + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if rec.step(model, it):
            want[it] = i2x.saliency(model, xe, ye, "3")
            with torch.no_grad():
                pred = model.eval()(xe).argmax(1).numpy()
            model.train()
            wrong += int((pred != ye).sum())
            other = i2x.saliency(model, xe, pred, "3")
            assert not np.allclose(other, want[it])  # the predicted class's map is another map
    rec.finalize(model, 5)
    want[5] = i2x.saliency(model, xe, ye, "3")
    assert wrong > 20  # an almost untrained model: the label and the prediction differ for most samples
    r = rec.load()
    assert r["iterations"].tolist() == [0, 2, 4, 5] and sorted(rec.memory) == [0, 2, 4, 5]
    for i, it in enumerate(r["iterations"]):
        np.testing.assert_allclose(r["saliency"][i], want[it], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(r["sample_index"], np.arange(40))
    assert r["confidences"].shape == (4, 40, 10) and r["saliency"].shape == (4, 40, 8, 8)
    assert list(tmp_path.iterdir()) == [] and rec.dir is None  # nothing written
    assert not rec.step(model, 4) and rec.has(4) and not rec.has(3)
    pred_rec = i2x.Recorder(xe, ye, every=1, out_dir=None, layer="3", target="pred")
    pred_rec.record(model, 0)
    np.testing.assert_allclose(pred_rec.memory[0]["saliency"], i2x.saliency(model, xe, None, "3"), rtol=1e-5)


# --------------------------------------------------------------------------- fine-tuning


def test_curated_arm_trains_on_exactly_the_curated_rows(saved, run_dir, monkeypatch):
    from i2x.nn import finetune as ft

    a, b = saved.ex["pairs"][0]["a"], saved.ex["pairs"][0]["b"]
    contain, y = saved.ia["contain"], saved.labels
    in_pair = np.isin(y, (a, b))
    k = int(np.argmax(contain[in_pair].sum(0)))
    keep = np.flatnonzero(~(in_pair & contain[:, k]))  # E minus the a/b samples containing k
    assert 0 < len(keep) < len(y)
    seen: dict[str, torch.Tensor] = {}
    real = ft._train_schedule

    def spy(model, sched, seed, sets, x_e, y_e, *rest):
        rows = []
        hook = model.register_forward_pre_hook(
            lambda m, args: rows.append(args[0].detach().clone()) if m.training else None
        )
        try:
            real(model, sched, seed, sets, x_e, y_e, *rest)
        finally:
            hook.remove()
        seen[sched] = torch.cat(rows)

    monkeypatch.setattr(ft, "_train_schedule", spy)
    res = i2x.finetune(
        run_dir,
        pair=(a, b),
        prototype=k,
        schedules="curated,full",
        repeats=1,
        controls="none",
        out=run_dir / "ft-rows",
        progress=False,
    )
    np.testing.assert_array_equal(res.curated_indices, keep)
    x = saved.x_exp()

    def rows(t: torch.Tensor) -> list[bytes]:
        return sorted(r.numpy().tobytes() for r in t)

    assert len(seen["curated"]) == len(keep) and rows(seen["curated"]) == rows(x[keep])  # each curated row once
    assert len(seen["full"]) == len(y) and rows(seen["full"]) == rows(x)


def test_finetune_prototype_auto_on_a_real_run(saved, run_dir, capsys):
    """`--pair auto --prototype auto`: the most confused test pair with a significant uncertain
    prototype, and its top one; when a pair has none, one line that says what to give instead."""
    pes = {(p["a"], p["b"]): p for p in saved.ex["pairs"]}
    labels = set(saved.labels.tolist())
    cm = saved.ev["confusion"]
    C = len(cm)
    order = sorted(
        ((a, b) for a in range(C) for b in range(a + 1, C) if cm[a, b] + cm[b, a] and {a, b} <= labels),
        key=lambda p: (-(cm[p] + cm[p[::-1]]), p),
    )
    cfg, bg = saved.cfg.explain, saved.ia["background"]
    expect = None
    for a, b in order:
        pe = pair_explanation(
            saved.dy["W"], saved.ia["contain"], saved.labels, a, b, cfg, p_pair=saved.dy["p_pair"], background=bg
        )
        if (a, b) in pes:
            assert [r["prototype"] for r in pe["uncertain"]] == [r["prototype"] for r in pes[(a, b)]["uncertain"]]
        if pe["uncertain"] and expect is None:
            expect = (a, b, pe["uncertain"][0]["prototype"])
    args = ["--schedules", "curated", "--repeats", "1", "--controls", "none", "--quiet"]
    out = run_dir / "ft-auto"
    rc = main(["finetune", str(run_dir), "--pair", "auto", "--prototype", "auto", "--out", str(out), *args])
    captured = capsys.readouterr()
    if expect is None:
        assert rc == 2 and len(captured.err.strip().splitlines()) == 1
        assert "no significant uncertain prototype" in captured.err or "none of the" in captured.err
    else:
        assert rc == 0, captured.err
        res = json.loads((out / "results.json").read_text())
        assert (res["pair"][0], res["pair"][1], res["prototype"]) == expect
    # a confused pair without a significant uncertain prototype: one line naming --prototype
    empty = [p for p in saved.ex["pairs"] if not p["uncertain"]]
    if empty:
        a, b = empty[0]["a"], empty[0]["b"]
        rc = main(["finetune", str(run_dir), "--pair", str(a), str(b), "--prototype", "auto", *args])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "--prototype auto" in err
        assert "no significant uncertain prototype" in err
    assert expect is not None or empty


# --------------------------------------------------------------------------- paths a user takes


def test_cli_run_without_no_report_writes_the_report(tmp_path, tiny_args, capsys):
    args = [a for a in tiny_args if a != "--no-report"]
    out = tmp_path / "r"
    assert main(["run", "--out", str(out), *args, "--epochs", "1", "--train-subset", "400"]) == 0
    index = out / "report" / "index.html"
    assert index.exists() and f"open {index}" in capsys.readouterr().out
    html = index.read_text()
    for sec in ("summary", "prototypes", "classes", "pairs", "dynamics"):
        assert f'id="{sec}"' in html
    ex = json.loads((out / "explanations.json").read_text())
    for p in ex["pairs"]:
        assert (out / "report" / "fig" / f"pair-{p['a']}-{p['b']}-contribution.png").exists()


def test_python_run_with_a_preset(tmp_path):
    from test_presets import write_fake_mnist  # tests/ is on sys.path

    data = write_fake_mnist(tmp_path / "data")
    extra = {"report": False} if "report" in inspect.signature(i2x.run).parameters else {}
    given = dict(
        model="smallcnn", epochs=1, batch_size=10, every=1, prototypes=4, min_cluster_size=2, explain_fraction=0.2
    )
    r = i2x.run(
        preset="paper-mnist-resnet50",
        out=tmp_path / "run",
        data_dir=str(data),
        device="cpu",
        progress=False,
        **given,
        **extra,
    )
    c = r.manifest["config"]
    # the preset's values (MNIST, E seeded 42, gradcam) under the explicit ones
    assert (c["dataset"], c["explain_seed"], c["method"], c["every_epoch"]) == ("mnist", 42, "gradcam", False)
    assert (c["model"], c["epochs"], c["batch_size"], c["prototypes"]) == ("smallcnn", 1, 10, 4)
    assert r.manifest["seeds"]["explain_seed"] == 42
    assert r.manifest["checkpoints"] == [0, 1, 2] and r.manifest["data"]["train_size"] == 20
    assert all(r.manifest["stages"][s]["complete"] for s in ("record", "evaluate", "explain"))
    with pytest.raises(i2x.I2XError, match="not both"):
        i2x.run(RunConfig(), preset="paper-mnist-resnet50", out=tmp_path / "x")


def test_analyze_with_a_test_dataset(digits, tmp_path):
    sp, x, y, xt, yt = digits
    xe, ye = x[:48], y[:48]
    model = _small_model()
    rec = i2x.Recorder(xe, ye.numpy(), every=3, out_dir=tmp_path, layer="3")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rec.step(model, 0)
    for it in range(1, 10):
        loss = torch.nn.functional.cross_entropy(model(x[it * 30 : it * 30 + 30]), y[it * 30 : it * 30 + 30])
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(model, it)
    rec.finalize(model, 9)
    test = torch.utils.data.TensorDataset(xt, yt)
    r = i2x.analyze(
        tmp_path, model, images=xe, labels=ye, classes=sp.train.classes, test=test, prototypes=4, min_cluster_size=4
    )
    ev = r.arrays("evaluate")
    with torch.no_grad():
        pred = model.eval()(xt).argmax(1).numpy()
    np.testing.assert_array_equal(ev["y_true"], yt.numpy())
    np.testing.assert_array_equal(ev["y_pred"], pred)
    cm = np.zeros((10, 10), int)
    np.add.at(cm, (yt.numpy(), pred), 1)
    np.testing.assert_array_equal(ev["confusion"], cm)
    m = r.manifest
    assert m["data"]["test_source"] == "test= given to analyze" and m["data"]["test_size"] == len(yt)
    assert m["checkpoints"] == [0, 3, 6, 9]
    assert m["metrics"]["test_accuracy"] == pytest.approx((pred == yt.numpy()).mean())
    assert r.explanations()["config"] == json.loads(json.dumps(ExplainConfig().__dict__))
