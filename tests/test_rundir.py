"""i2x.rundir: the stage table, the manifest, the run directory and the `Run` reader, without torch.

`run_stages` runs on hooks that return made-up records, predictions and features, so that every
stage's output is checked against the analysis function called with the run's own settings
(non-default ones, so a setting wired to the wrong stage shows), the manifest it writes, and which
stages a second call skips or redoes. Runs in about a second, which is what makes mutation testing
of src/i2x/rundir.py affordable (docs/TESTING.md)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from i2x import store
from i2x.analysis.dynamics import dynamics
from i2x.analysis.explain import explain
from i2x.analysis.intensity import background_prototypes, containment, intensity, saliency_density
from i2x.analysis.links import run_links
from i2x.analysis.prototypes import FeatureStream, prototypes
from i2x.cli import cli_message
from i2x.config import RunConfig
from i2x.errors import ConfigError, I2XError, RunDirError
from i2x.manifest import Manifest, StageOutput
from i2x.rundir import (
    LOCK,
    STAGE_NAMES,
    Context,
    Hooks,
    Run,
    _any_complete,
    _prototypes,
    health_warnings,
    listed_checkpoints,
    new_manifest,
    prepare_dir,
    run_stages,
    stage_done,
)

CLASSES = ["zero", "one", "two"]


ITS = [0, 4, 8, 12, 13]


N, C, H, D = 30, 3, 3, 5


def _cfg(**kw) -> RunConfig:
    """Settings off their defaults, each read by one stage."""
    base = dict(
        prototypes=4,
        prototype_fit="explain",  # the tests of the training-set fit ask for it
        seed=5,
        pca_variance=0.99,
        pca_max_components=3,
        contain_quantile=0.5,
        background_saliency=0.8,
        min_cluster_size=4,
        tau=0.1,
        ridge_lambda=3.0,
        stability_resamples=8,
        permutations=199,
        rho=0.9,
        alpha=0.2,
        top=2,
    )
    return RunConfig().replace(**{**base, **kw}).validate()


class Fake:
    """Made-up data of one run: E's labels, confidences and maps at every checkpoint, test-set
    predictions, final-model features; and hooks that count how often the model was asked."""

    def __init__(self, out: Path, seed: int = 0, same_step: int | None = None):
        rng = np.random.default_rng(seed)
        self.out = out
        self.labels = np.arange(N) % C
        g = np.arange(N) % 2  # two groups whose confidence moves apart at every step
        self.conf = np.zeros((len(ITS), N, C))
        self.conf[0] = 1 / C
        for t in range(1, len(ITS)):
            step = np.where(g[:, None] == 0, [0.05, -0.03, -0.02], [-0.04, 0.02, 0.02]) * (1 if t % 2 else -1)
            if same_step == t - 1:  # every sample moves alike at this step: one cluster of all
                step = np.tile([0.013, -0.006, -0.007], (N, 1))
            self.conf[t] = self.conf[t - 1] + step
        self.sal = rng.random((len(ITS), N, H, H)).astype(np.float32)
        self.sal[:, g == 0, 0, :] += 2.0 * np.arange(len(ITS))[:, None, None] % 3  # tracks group 0's moves
        self.feats = rng.normal(size=(N, H, H, D)).astype(np.float32)
        self.feats[:, -1, :, 0] += 20.0  # the bottom row is its own prototype ...
        self.sal[:, :, -1, :] *= 0.01  # ... where the model does not look: background
        self.feats[:, 1, :, 1] += 20.0  # the middle row too, with a density between 0.5 and 0.8
        self.sal[:, :, 1, :] *= 0.75
        self.train_feats = rng.normal(size=(2 * N, H, H, D)).astype(np.float32)
        self.y_true = np.repeat(np.arange(C), 10)
        self.y_pred = self.y_true.copy()
        self.y_pred[[0, 1, 2, 10]] = [1, 1, 2, 0]  # 0→1 twice, 0→2 once, 1→0 once: asymmetric
        self.calls = {"train": 0, "predict_test": 0, "features": 0, "train_features": 0}

    def train(self) -> StageOutput:
        self.calls["train"] += 1
        store.save_explain_set(self.out, np.zeros((N, 1, 2, 2), np.float32), self.labels)
        for t, it in enumerate(ITS):
            store.save_npz(
                self.out / "record" / f"ckpt_it{it:07d}.npz",
                iteration=np.int64(it),
                sample_index=np.arange(N),
                confidences=self.conf[t].astype(np.float32),
                saliency=self.sal[t],
            )
        (self.out / "weights").mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(self.out / "weights" / "final.pt", "w") as z:
            z.writestr("model", "weights")
        return StageOutput(["weights/final.pt"])

    def predict_test(self):
        self.calls["predict_test"] += 1
        return self.y_true, self.y_pred, None

    def features(self):
        self.calls["features"] += 1
        return self.feats

    def train_features(self):
        self.calls["train_features"] += 1
        return FeatureStream.of_array(self.train_feats, batch=7)  # streamed in uneven batches

    def hooks(self, train_features: bool = True) -> Hooks:
        return Hooks(self.train, self.predict_test, self.features, self.train_features if train_features else None)

    def context(self, cfg: RunConfig, manifest: Manifest | dict | None = None, **kw) -> Context:
        """A context as the pipeline makes one: a new manifest, or ``manifest`` (a run's own) resumed."""
        data = {"classes": CLASSES, "explain_size": N}
        old = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
        model = {"name": "fake", "layer": "x"}
        m = new_manifest(cfg, data if old is None else {}, model, old, **listed_checkpoints(self.out, old))
        return Context(self.out, m, cfg, self.labels, CLASSES, self.hooks(**kw))


def _run(tmp_path: Path, cfg: RunConfig | None = None, **kw) -> tuple[Fake, Context]:
    fake = Fake(tmp_path / "run")
    fake.out.mkdir(parents=True)
    ctx = fake.context(cfg or _cfg(), **kw)
    run_stages(ctx)
    return fake, ctx


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        if np.asarray(want[k]).dtype.kind in "US":  # e.g. the null's name
            assert np.asarray(got[k]).tolist() == np.asarray(want[k]).tolist(), k
            continue
        np.testing.assert_allclose(np.asarray(got[k], float), np.asarray(want[k], float), rtol=1e-6, err_msg=k)


def _stability_of(fake: Fake, ia: dict, cfg: RunConfig) -> dict | None:
    """The selection frequencies of the run's settings, recomputed (and checked against the saved ones)."""
    from i2x.analysis.stability import selection_frequencies

    saved = _npz(fake.out / "arrays" / "stability.npz")
    if not cfg.stability_resamples:
        assert int(saved["resamples"]) == 0
        return None
    settings = dict(
        min_cluster_size=cfg.min_cluster_size, tau=cfg.tau, lam=cfg.ridge_lambda, lam_scale=cfg.ridge_scale,
        fallback=cfg.cluster_fallback, permutations=cfg.permutations, null=cfg.permutation_null,
    )  # fmt: skip
    want = selection_frequencies(
        fake.conf.astype(np.float32), ia["intensity"], ia["contain"], fake.labels, len(CLASSES), settings,
        cfg.explain, resamples=cfg.stability_resamples, seed=cfg.seed, background=ia["background"],
        present=ia["present"],
    )  # fmt: skip
    _same(saved, want)
    return saved


def _check_all(fake: Fake, ctx: Context, cfg: RunConfig) -> dict:
    """Every stage's file = the analysis function of the previous stage's file with the run's settings."""
    out, m = fake.out, ctx.manifest
    assert m["checkpoints"] == ITS
    # evaluate: rows = true class
    ev = _npz(out / "arrays" / "evaluate.npz")
    cm = np.zeros((C, C), int)
    np.add.at(cm, (fake.y_true, fake.y_pred), 1)
    np.testing.assert_array_equal(ev["confusion"], cm)
    assert ev["confusion"].dtype == np.int64 and cm[0, 1] == 2 and cm[1, 0] == 1
    np.testing.assert_array_equal(ev["y_pred"], fake.y_pred)
    np.testing.assert_array_equal(ev["y_true"], fake.y_true)
    assert m["metrics"]["test_accuracy"] == pytest.approx(26 / 30) and m["data"]["test_size"] == 30
    assert m["metrics"]["confused_pairs"] == [{"a": 0, "b": 1, "count": 3}, {"a": 0, "b": 2, "count": 1}]
    # prototypes (Eq. 3) of the final features with K, the PCA settings and the seed of the run
    pr = _npz(out / "arrays" / "prototypes.npz")
    k = cfg.prototypes
    _same(pr, prototypes(fake.feats, k, cfg.pca_variance, cfg.pca_max_components, random_state=cfg.seed).to_arrays())
    assert m["model"]["feature_shape"] == [H, H, D] and m["model"]["name"] == "fake"
    assert m["model"]["prototype_fit"] == {"on": "explain", "vectors": N * H * H, "pca_vectors": N * H * H}
    # intensity (Eq. 4) at every checkpoint, containment at the run's quantile, background at its threshold
    ia = _npz(out / "arrays" / "intensity.npz")
    a = pr["assignments"]
    np.testing.assert_allclose(ia["intensity"], intensity(fake.sal, a, k, cfg.intensity_reduce), rtol=1e-5)
    assert ia["intensity"].dtype == np.float32
    np.testing.assert_array_equal(ia["contain"], containment(a, k, fake.sal[-1], cfg.contain_quantile))
    np.testing.assert_array_equal(ia["present"], containment(a, k, quantile=0))  # any cell: not the label's
    dens = saliency_density(a, fake.sal[-1], k)
    np.testing.assert_allclose(ia["density"], dens)
    np.testing.assert_array_equal(ia["background"], background_prototypes(dens, cfg.background_saliency))
    # dynamics (Eq. 5-8) with every dynamics setting of the run
    dy = _npz(out / "arrays" / "dynamics.npz")
    want = dynamics(
        fake.conf.astype(np.float32), ia["intensity"], fake.labels, cfg.min_cluster_size, cfg.tau, cfg.ridge_lambda,
        lam_scale=cfg.ridge_scale, fallback=cfg.cluster_fallback, permutations=cfg.permutations, seed=cfg.seed,
        null=cfg.permutation_null,
    )  # fmt: skip
    _same(dy, want.to_arrays())
    assert m["metrics"]["explained_coverage"] == round(want.coverage(), 4)
    # the explanation with the explain settings, the confusion matrix, p-values, flagged steps and background
    ex = json.loads((out / "explanations.json").read_text())
    # the pair roles' samples test with the explain settings, the run's λ, permutations and seed
    links = run_links(
        fake.conf.astype(np.float32), ia["intensity"], ia["contain"], fake.labels, cfg.explain, lam=cfg.ridge_lambda,
        permutations=cfg.permutations, seed=cfg.seed, background=ia["background"],
    )  # fmt: skip
    _same(_npz(out / "arrays" / "links.npz"), links.to_arrays())
    want = explain(
        want.W, ia["contain"], fake.labels, want.class_delta, confusion=ev["confusion"], flagged=want.flagged,
        classes=CLASSES, cfg=cfg.explain, p_W=want.p_W, p_pair=want.p_pair, background=ia["background"],
        permutations=cfg.permutations, null=want.null, p_pair_class=want.p_pair_class,
        stability=_stability_of(fake, ia, cfg), present=ia["present"], links=links,
    )  # fmt: skip
    health = {"passed": True, "reasons": [], "note": "no health check failed"}  # the fake model is healthy
    assert m["metrics"]["health"] == []
    assert ex == json.loads(json.dumps({**want, "checkpoints": ITS, "model_health": health}))
    return {"ev": ev, "pr": pr, "ia": ia, "dy": dy, "ex": ex}


def test_every_stage_is_its_function_of_the_run_settings(tmp_path):
    cfg = _cfg()
    fake, ctx = _run(tmp_path, cfg)
    assert fake.calls == {"train": 1, "predict_test": 1, "features": 1, "train_features": 0}
    got = _check_all(fake, ctx, cfg)
    a = got["pr"]["assignments"]
    # each setting changes its stage's output here, so a setting left out of the wiring shows
    assert got["pr"]["pca_components"].shape[0] == 3
    assert not np.array_equal(got["ia"]["contain"], containment(a, 4, fake.sal[-1], 0.75))
    dens = got["ia"]["density"]
    assert not np.array_equal(got["ia"]["background"], background_prototypes(dens, 0.5))
    assert got["ex"]["config"]["rho"] == 0.9 and got["ex"]["significance"]["alpha"] == 0.2 and got["ex"]["background"]


def test_the_other_settings_are_wired_too(tmp_path):
    """Mean intensity, any-cell containment, absolute λ, no cluster fallback (three flagged steps: groups of
    15 < min_cluster_size 16; step 0 moves every sample alike, one cluster)."""
    cfg = _cfg(
        intensity_reduce="mean", contain_quantile=0.0, ridge_scale="absolute", cluster_fallback=False,
        min_cluster_size=16,
    )  # fmt: skip
    fake = Fake(tmp_path / "run", same_step=0)
    fake.out.mkdir()
    ctx = fake.context(cfg)
    run_stages(ctx)
    got = _check_all(fake, ctx, cfg)
    assert got["dy"]["flagged"].tolist() == [False, True, True, True] and got["ex"]["flagged_steps"] == [1, 2, 3]
    cov = ctx.manifest["metrics"]["explained_coverage"]
    assert 0 < cov < 1 and len(str(cov).split(".")[1]) == 4  # rounded to 4 decimals
    assert "fallback" not in got["dy"] and (got["dy"]["lam"] == 3.0).all()


def test_the_manifest_lists_each_stage_with_its_files_settings_and_time(tmp_path):
    cfg = _cfg()
    fake, ctx = _run(tmp_path, cfg)
    m = store.read_manifest(fake.out)  # what is on disk, not only in memory
    assert list(m["stages"]) == list(STAGE_NAMES) and set(m["timings"]) == set(STAGE_NAMES)
    assert all(isinstance(v, float) and v >= 0 for v in m["timings"].values())
    st = m["stages"]
    assert st["record"] == {"complete": True, "files": ["weights/final.pt"], "settings": {}}
    assert st["evaluate"] == {"complete": True, "files": ["arrays/evaluate.npz"], "settings": {}}
    assert st["prototypes"]["settings"] == {
        "prototypes": 4, "prototype_fit": "explain", "pca_variance": 0.99, "pca_max_components": 3, "seed": 5,
        "layer": None, "reshape": "auto",
    }  # fmt: skip
    assert st["intensity"] == {
        "complete": True,
        "files": ["arrays/intensity.npz"],
        "settings": {"intensity_reduce": "sum", "contain_quantile": 0.5, "background_saliency": 0.8},
    }
    assert st["dynamics"]["settings"] == {
        "aggregate": "clusters", "min_cluster_size": 4, "tau": 0.1, "ridge_lambda": 3.0, "ridge_scale": "relative",
        "cluster_fallback": True, "permutations": 199, "permutation_null": "within-class", "seed": 5,
    }  # fmt: skip
    assert st["explain"]["files"] == ["explanations.json", "arrays/links.npz"]
    assert st["explain"]["settings"] == {"explain": cfg.to_dict()["explain"], "permutations": 199, "ridge_lambda": 3.0,
                                         "seed": 5}  # fmt: skip
    assert m["checkpoints"] == ITS and m["config"] == cfg.to_dict()
    r = Run(fake.out)
    assert r.missing_stages() == [] and r.check_complete() is r and r.classes == CLASSES


def test_a_second_call_skips_done_stages_and_a_changed_setting_redoes_the_rest(tmp_path):
    cfg = _cfg()
    fake, ctx = _run(tmp_path, cfg)
    for name in STAGE_NAMES:
        assert stage_done(fake.out, ctx.manifest, name, cfg)
    before = {f: (fake.out / f).read_bytes() for f in ("arrays/prototypes.npz", "arrays/dynamics.npz")}
    run_stages(fake.context(cfg, ctx.manifest))
    assert fake.calls == {"train": 1, "predict_test": 1, "features": 1, "train_features": 0}  # nothing asked again
    # an intensity setting: intensity and every later stage redone, prototypes kept
    cfg2 = cfg.replace(contain_quantile=0.25)
    assert not stage_done(fake.out, ctx.manifest, "intensity", cfg2)
    assert stage_done(fake.out, ctx.manifest, "prototypes", cfg2) and stage_done(fake.out, ctx.manifest, "intensity")
    run_stages(fake.context(cfg2, ctx.manifest))
    assert fake.calls["features"] == 1 and fake.calls["predict_test"] == 1
    assert (fake.out / "arrays" / "prototypes.npz").read_bytes() == before["arrays/prototypes.npz"]
    m = store.read_manifest(fake.out)
    assert m["stages"]["intensity"]["settings"]["contain_quantile"] == 0.25
    ia = _npz(fake.out / "arrays" / "intensity.npz")
    pr = _npz(fake.out / "arrays" / "prototypes.npz")
    np.testing.assert_array_equal(ia["contain"], containment(pr["assignments"], 4, fake.sal[-1], 0.25))
    dy = _npz(fake.out / "arrays" / "dynamics.npz")
    assert dy["permutations"] == 199  # redone after intensity, with its own settings
    # a stage file that does not read back is redone, and every stage after it
    (fake.out / "arrays" / "evaluate.npz").write_bytes(b"broken")
    assert not stage_done(fake.out, m, "evaluate")
    run_stages(fake.context(cfg2, m))
    assert fake.calls["predict_test"] == 2 and fake.calls["features"] == 2
    assert _npz(fake.out / "arrays" / "evaluate.npz")["confusion"].shape == (C, C)


def test_stage_done_reads_the_manifest_entry():
    m = {"stages": {"explain": {"complete": True, "files": []}, "dynamics": {"complete": False, "files": []}}}
    assert stage_done("/nonexistent", m, "explain") and stage_done("/nonexistent", m, "explain", _cfg())
    assert not stage_done("/nonexistent", m, "dynamics") and not stage_done("/nonexistent", m, "record")
    m["stages"]["explain"]["settings"] = {
        "explain": _cfg().to_dict()["explain"], "permutations": 199, "ridge_lambda": 3.0, "seed": 5,
    }  # fmt: skip
    assert stage_done("/nonexistent", m, "explain", _cfg()) and not stage_done(
        "/nonexistent", m, "explain", RunConfig()
    )
    m["stages"]["explain"]["files"] = ["explanations.json"]
    assert not stage_done("/nonexistent", m, "explain")


def test_prototypes_fitted_on_the_training_set(tmp_path):
    fake, ctx = _run(tmp_path, _cfg(prototype_fit="train"))
    assert fake.calls["train_features"] == 1 and fake.calls["features"] == 1
    pr = _npz(fake.out / "arrays" / "prototypes.npz")
    want = prototypes(fake.feats, 4, 0.99, 3, random_state=5, fit_features=fake.train_feats).to_arrays()
    _same(pr, want)
    assert ctx.manifest["model"]["prototype_fit"] == {
        "on": "train",
        "vectors": 2 * N * H * H,
        "pca_vectors": 2 * N * H * H,
    }
    other = Fake(tmp_path / "no-train")
    other.out.mkdir()
    with pytest.raises(ConfigError, match="prototype_fit"):
        run_stages(other.context(_cfg(prototype_fit="train"), train_features=False))


def test_mean_intensity_reduce_is_wired(tmp_path):
    fake, _ = _run(tmp_path, _cfg(intensity_reduce="mean", contain_quantile=0.0))
    ia = _npz(fake.out / "arrays" / "intensity.npz")
    a = _npz(fake.out / "arrays" / "prototypes.npz")["assignments"]
    np.testing.assert_allclose(ia["intensity"], intensity(fake.sal, a, 4, "mean"), rtol=1e-6)
    np.testing.assert_array_equal(ia["contain"], containment(a, 4, quantile=0))  # quantile 0: any cell counts


def test_records_from_the_caller_loop_set_the_checkpoints(tmp_path):
    fake = Fake(tmp_path / "run")
    fake.train()  # records written by the caller's own loop, before the stages
    cfg = _cfg()
    ctx = fake.context(cfg)
    ctx.hooks.train = lambda: StageOutput([])
    run_stages(ctx)
    assert ctx.manifest["checkpoints"] == ITS and ctx.manifest["stages"]["record"]["files"] == []
    # records are read once per context
    r1 = ctx.records()
    assert ctx.records() is r1
    # a record lost after the run: named, not silently skipped
    (fake.out / "record" / f"ckpt_it{ITS[2]:07d}.npz").unlink()
    ctx2 = Context(fake.out, store.read_manifest(fake.out), cfg, fake.labels, CLASSES, fake.hooks())
    with pytest.raises(RunDirError, match=f"ckpt_it{ITS[2]:07d}.npz is missing"):
        ctx2.records()


def test_health_warnings_at_their_boundaries():
    classes = ["a", "b", "c", "d"]
    near = health_warnings(np.arange(8) % 4, 1.5 / 4, classes)  # accuracy = 1.5 / C: near chance
    assert near == [
        "the final model is near chance (37.5 % test accuracy, chance 25.0 %): its explanation describes a model "
        "that did not learn; train longer, lower the lr, or check BatchNorm statistics"
    ]
    assert health_warnings(np.arange(8) % 4, 0.4, classes) == []
    one = np.array([2] * 19 + [0])  # 95 % "c"
    assert health_warnings(one, 0.9, classes) == ["the final model predicts c for 95 % of the test images"]
    two = health_warnings(np.array([2] * 9 + [0]), 0.9, classes)  # exactly 90 %: not "most" ...
    assert two == ["the final model predicts c or a for 100 % of the test images"]  # ... but two classes: all
    assert not any("predicts" in w for w in health_warnings(np.array([0, 0]), 1.0, ["only"]))  # one class
    assert health_warnings(np.zeros(0, int), 1.0, classes) == []


def test_too_few_permutations_for_the_steps_are_a_warning(tmp_path):
    """p ≥ 1/(permutations + 1): with Bonferroni over T steps nothing can be significant when
    T / (permutations + 1) ≥ alpha; the run says so instead of listing nothing in silence."""
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    T = len(ITS) - 1
    cfg = _cfg(permutations=int(T / 0.2) - 1)  # alpha 0.2 in _cfg: T / (p + 1) = alpha exactly
    run_stages(fake.context(cfg))
    w = [x for x in store.read_manifest(fake.out).get("warnings", []) if "permutations" in x]
    assert len(w) == 1 and f"give permutations ≥ {int(np.ceil(T / 0.2))}" in w[0]
    ok = Fake(tmp_path / "ok")
    ok.out.mkdir()
    run_stages(ok.context(_cfg(permutations=int(T / 0.2))))
    assert not any("permutations" in x for x in store.read_manifest(ok.out).get("warnings", []))


def test_an_unhealthy_model_flags_its_whole_explanation(tmp_path):
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    fake.y_pred = np.zeros_like(fake.y_true)  # one class for every test image
    run_stages(fake.context(_cfg()))
    ex = json.loads((fake.out / "explanations.json").read_text())
    m = store.read_manifest(fake.out)
    assert ex["model_health"]["passed"] is False and ex["model_health"]["reasons"] == m["metrics"]["health"]
    assert any("predicts zero for 100 %" in w for w in ex["model_health"]["reasons"])
    assert ex["model_health"]["note"].startswith("the final model failed a health check")


def test_health_flags_a_model_that_learned_nothing():
    """The shuffled-label case of issue 23: 16.7 % accuracy (no 'near chance' at ≤ 15 %), half the test
    set one class, training loss ln 10: flagged by agreement, loss and prediction share, each with its reason."""
    rng = np.random.default_rng(0)
    classes = [str(c) for c in range(10)]
    y_true = rng.integers(0, 10, 2000)
    y_pred = np.where(rng.random(2000) < 0.5, 3, rng.integers(0, 10, 2000))
    y_pred[:150] = y_true[:150]  # some right: ~16 % accuracy
    acc = float((y_pred == y_true).mean())
    assert 0.15 < acc < 0.2
    w = health_warnings(y_pred, acc, classes, y_true=y_true, final_loss=2.306)
    assert len(w) == 3 and "near chance" not in " ".join(w)
    assert w[0].startswith("the final model agrees with the test labels little beyond chance (Cohen's kappa")
    assert w[1].startswith("the training loss ended at 2.306, near ln 10 = 2.303")
    assert w[2].startswith("the final model predicts 3 or ")
    # a model that learned: none of them
    good = np.where(rng.random(2000) < 0.97, y_true, (y_true + 1) % 10)
    assert health_warnings(good, float((good == y_true).mean()), classes, y_true=y_true, final_loss=0.08) == []


def test_warn_records_each_warning_once():
    m = Manifest({})
    m.warn("x")
    m.warn("y")
    m.warn("x")
    assert m["warnings"] == ["x", "y"]


def test_new_manifest_fresh_and_resumed():
    cfg = _cfg(explain_seed=9)
    m = new_manifest(cfg, {"classes": CLASSES}, {"name": "fake"})
    assert m["stages"] == {} and m["timings"] == {} and m["metrics"] == {} and "numpy" in m["versions"]
    assert m["config"] == cfg.to_dict() and m["data"] == {"classes": CLASSES} and m["model"] == {"name": "fake"}
    assert m["seeds"] == {"seed": 5, "data_seed": cfg.order_seed, "explain_seed": 9, "split_seed": 9}
    old = {"versions": {"i2x": "old"}, "stages": {"record": {}}, "timings": {"record": 1.0}, "metrics": {"x": 1}}
    old |= {"data": {"classes": CLASSES, "train_size": 10}, "model": {"name": "old", "layer": "l"}}
    r = new_manifest(cfg, {"test_size": 5}, {"name": "new"}, old)
    assert (
        r.to_dict() is old
        and r["stages"] == {"record": {}}
        and r["timings"] == {"record": 1.0}
        and r["metrics"] == {"x": 1}
    )
    assert r["data"] == {"classes": CLASSES, "train_size": 10, "test_size": 5}
    assert r["model"] == {"name": "new", "layer": "l"} and r["versions"] == {"i2x": "old"}


def test_run_reader_names_classes_and_missing_stages(tmp_path):
    fake, _ = _run(tmp_path)
    r = Run(fake.out)
    assert r.class_index("one") == 1 and r.class_index("2") == 2 and r.class_index(0) == 0
    with pytest.raises(ConfigError, match="class='seven': is not a class of this run; classes: zero, one, two") as e:
        r.class_index("seven")
    assert cli_message(e.value) == "--class seven: is not a class of this run; classes: zero, one, two"
    with pytest.raises(ConfigError, match="^pair='3': is not") as e:
        r.class_index("3", "pair")
    assert cli_message(e.value).startswith("--pair 3: is not")
    pe = r.pair_explanation(0, 1)
    assert (pe["a"], pe["b"]) == (0, 1) and "uncertain" in pe
    m = store.read_manifest(fake.out)
    m["stages"]["dynamics"]["complete"] = False
    del m["stages"]["explain"]
    store.write_manifest(fake.out, m)
    r = Run(fake.out)
    assert r.missing_stages() == ["dynamics", "explain"]
    with pytest.raises(RunDirError, match=r"\(missing stages: dynamics, explain\): finish it with `i2x run --resume"):
        r.check_complete("report")
    with pytest.raises(RunDirError, match="before `i2x report`"):
        r.check_complete("report")


def test_prepare_dir_new_existing_failed_and_resumed(tmp_path):
    out = tmp_path / "r"
    assert prepare_dir(out, resume=False, overwrite=False) is None and out.is_dir()
    with pytest.raises(I2XError, match="no such run directory"):
        prepare_dir(tmp_path / "nothing", resume=True, overwrite=False)
    fake, _ = _run(tmp_path / "x")
    run = fake.out
    (run / LOCK).write_text("1\n")
    with pytest.raises(I2XError, match="already holds a run: resume it"):
        prepare_dir(run, resume=False, overwrite=False)
    (run / "arrays" / ".evaluate.npz.tmp").write_bytes(b"half")
    m = prepare_dir(run, resume=True, overwrite=False)
    assert m["checkpoints"] == ITS and not (run / "arrays" / ".evaluate.npz.tmp").exists()
    assert prepare_dir(run, resume=False, overwrite=True) is None
    assert [p.name for p in run.iterdir()] == [LOCK]  # everything but the lock is gone
    # a failed start (a manifest without complete stages, no records): cleared for a retry
    store.write_manifest(run, {"stages": {}})
    assert not _any_complete(run)
    assert prepare_dir(run, resume=False, overwrite=False) is None and not (run / "manifest.json").exists()
    # someone else's files are never cleared
    (run / "notes.txt").write_text("mine")
    with pytest.raises(I2XError, match="already holds a run"):
        prepare_dir(run, resume=False, overwrite=False)
    (run / "manifest.json").write_text("{not json")
    assert _any_complete(run)  # unreadable: not ours to clear


def test_evaluate_keeps_every_class_lists_five_pairs_and_warns(tmp_path):
    from i2x.rundir import _evaluate

    classes = [f"c{i}" for i in range(6)]
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 1, 2, 3])  # class 5 never occurs
    y_pred = np.array([1, 2, 0, 3, 3, 4, 4, 0, 0, 1, 0, 1, 2, 0])  # 9 confused pairs, 3 of 14 right
    manifest = {"data": {}}  # an old manifest: no metrics yet
    ctx = Context(
        tmp_path, manifest, _cfg(), np.zeros(3, int), classes, Hooks(None, lambda: (y_true, y_pred, None), None)
    )
    out = _evaluate(ctx)  # what the stage made; the runner records it in the manifest
    assert out.files == ["arrays/evaluate.npz"]
    ctx.manifest.record("evaluate", out, 0.0, {})
    ev = _npz(tmp_path / "arrays" / "evaluate.npz")
    assert ev["confusion"].shape == (6, 6) and ev["confusion"].dtype == np.int64 and ev["confusion"][5].sum() == 0
    np.testing.assert_array_equal(ev["y_true"], y_true)
    pairs = manifest["metrics"]["confused_pairs"]
    assert [(p["a"], p["b"], p["count"]) for p in pairs] == [(0, 1, 2), (0, 3, 2), (0, 2, 1), (0, 4, 1), (1, 3, 1)]
    assert manifest["data"]["test_size"] == 14 and manifest["metrics"]["test_accuracy"] == pytest.approx(3 / 14)
    assert manifest["warnings"] == health_warnings(y_pred, 3 / 14, classes, y_true=y_true)
    assert "near chance" in manifest["warnings"][0]


def test_one_class_predicted_for_most_images_with_two_classes():
    w = health_warnings(np.array([1] * 19 + [0]), 0.95, ["a", "b"])
    assert w == ["the final model predicts b for 95 % of the test images"]


def test_training_fit_without_a_training_set_names_the_setting(tmp_path):
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    with pytest.raises(ConfigError) as e:
        run_stages(fake.context(_cfg(prototype_fit="train"), train_features=False))
    assert str(e.value) == (
        "prototype_fit='train': this analysis has no training set: pass train= (your training data) "
        "or prototype_fit='explain'"
    )


def test_progress_bar_only_when_asked(tmp_path, capsys):
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    run_stages(fake.context(_cfg()))
    assert capsys.readouterr().err == ""
    m = store.read_manifest(fake.out)
    assert all(0 <= v < 60 and round(v, 3) == v for v in m["timings"].values())
    m["stages"]["explain"]["complete"] = False
    run_stages(fake.context(_cfg(), m), progress=True)
    err = capsys.readouterr().err
    assert "i2x" in err and "stage=explain" in err


def test_a_manifest_without_stages_timings_or_metrics(tmp_path):
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    cfg = _cfg()
    m = {"config": cfg.to_dict(), "data": {"classes": CLASSES}, "model": {"name": "fake"}}
    run_stages(fake.context(cfg, m))
    assert list(m["stages"]) == list(STAGE_NAMES) and set(m["timings"]) == set(STAGE_NAMES)
    assert "explained_coverage" in m["metrics"] and "test_accuracy" in m["metrics"]
    assert stage_done(fake.out, {"stages": {"explain": {"complete": True}}}, "explain")  # no file list: done
    assert not stage_done(fake.out, {}, "explain")


def test_which_checkpoints_the_manifest_lists(tmp_path):
    cfg = _cfg()
    # the caller's own loop (record files = []): the checkpoints on disk, re-read at every call
    fake = Fake(tmp_path / "own-loop")
    fake.train()
    ctx = fake.context(cfg)
    ctx.hooks.train = lambda: StageOutput([])
    run_stages(ctx)
    store.save_npz(
        fake.out / "record" / "ckpt_it0000020.npz",
        iteration=np.int64(20),
        sample_index=np.arange(N),
        confidences=fake.conf[-1].astype(np.float32),
        saliency=fake.sal[-1],
    )
    run_stages(fake.context(cfg, ctx.manifest))
    assert ctx.manifest["checkpoints"] == [*ITS, 20]
    # i2x's own run: the manifest's list stays, so that a lost record is noticed, not skipped
    fake2, ctx2 = _run(tmp_path / "i2x", cfg)
    (fake2.out / "record" / f"ckpt_it{ITS[1]:07d}.npz").unlink()
    run_stages(fake2.context(cfg, ctx2.manifest))
    assert ctx2.manifest["checkpoints"] == ITS
    assert store.read_manifest(fake2.out)["checkpoints"] == ITS
    # a manifest without the list (an older run): read from disk
    del ctx2.manifest.to_dict()["checkpoints"]
    run_stages(fake2.context(cfg, ctx2.manifest))
    assert ctx2.manifest["checkpoints"] == [i for i in ITS if i != ITS[1]]


def test_prepare_dir_sees_work_in_progress(tmp_path):
    # records or a training state without a manifest: work to resume, never cleared as a failed start
    rec = tmp_path / "rec"
    Fake(rec).train()
    (rec / "weights" / "final.pt").unlink()
    with pytest.raises(I2XError, match="already holds a run"):
        prepare_dir(rec, resume=False, overwrite=False)
    assert prepare_dir(rec, resume=True, overwrite=False) is None  # no manifest yet: a new manifest
    state = tmp_path / "state"
    (state / "weights").mkdir(parents=True)
    (state / "weights" / "train_state.pt").write_bytes(b"state")
    with pytest.raises(I2XError, match="already holds a run"):
        prepare_dir(state, resume=False, overwrite=False)
    # records and a manifest that lists no complete stage: still work in progress
    store.write_manifest(rec, {"stages": {"record": {"complete": False}}})
    with pytest.raises(I2XError) as e:
        prepare_dir(rec, resume=False, overwrite=False)
    assert str(e.value) == (
        f"{rec} already holds a run: resume it (i2x run --resume, run(resume=True)) "
        "or replace it (--overwrite, run(overwrite=True))"
    )
    # every folder i2x writes, but nothing saved in them: a failed start, cleared
    full = tmp_path / "full"
    for name in ("record", "weights", "arrays", "report", "finetune"):
        (full / name).mkdir(parents=True)
    for name in ("explanations.json", "faithfulness.json", LOCK):
        (full / name).write_text("{}")
    store.write_manifest(full, {"stages": {}})
    assert prepare_dir(full, resume=False, overwrite=False) is None
    assert [p.name for p in full.iterdir()] == [LOCK]  # all but the lock (which this process would hold)
    deep = tmp_path / "a" / "b" / "c"
    assert prepare_dir(deep, resume=False, overwrite=False) is None and deep.is_dir()


def test_any_complete_reads_the_stages(tmp_path):
    store.write_manifest(tmp_path, {"stages": {"record": {"complete": True}}})
    assert _any_complete(tmp_path)
    store.write_manifest(tmp_path, {"stages": {"record": {"complete": False}}})
    assert not _any_complete(tmp_path)
    store.write_manifest(tmp_path, {})
    assert not _any_complete(tmp_path)


def test_run_reader_loads_what_the_stages_wrote(tmp_path):
    from i2x.analysis.explain import pair_explanation

    fake, _ = _run(tmp_path)
    r = Run(fake.out)
    rec = r.records()
    assert rec["iterations"].tolist() == ITS and rec["saliency"].shape == (len(ITS), N, H, H)
    np.testing.assert_allclose(rec["confidences"], fake.conf, atol=1e-7)
    assert r.records("last")["saliency"].shape == (1, N, H, H)
    assert r.prototypes().k == 4 and r.prototypes().typical is not None
    assert r.explanations() == json.loads((fake.out / "explanations.json").read_text())
    dyn, ia = r.dynamics(), r.arrays("intensity")
    for a, b in ((0, 1), (2, 1)):
        want = pair_explanation(
            dyn.W,
            ia["contain"],
            fake.labels,
            a,
            b,
            r.config.explain,
            p_pair=dyn.p_pair,
            background=ia["background"],
            p_pair_class=dyn.p_pair_class,
            frequency=r.arrays("stability")["roles"][min(a, b), max(a, b)],
            links=r.links(),
        )
        assert r.pair_explanation(a, b) == want
    listed = r.pair_explanation(0, 1)["uncertain"]
    assert listed and listed[0]["p_value"] is not None and listed[0]["effect"] > 0
    # under the paper's test: the run's own settings, p-values and background prototypes reach it
    m = store.read_manifest(fake.out)
    m["config"]["explain"]["pair_test"] = "paper"
    store.write_manifest(fake.out, m)
    listed = Run(fake.out).pair_explanation(0, 1)["uncertain"]
    assert listed and listed[0]["p_value"] is not None and "effect" not in listed[0]
    k = listed[0]["prototype"]
    m["config"]["explain"]["alpha"] = 0.001
    store.write_manifest(fake.out, m)
    assert Run(fake.out).pair_explanation(0, 1)["uncertain"] == []
    m["config"]["explain"]["alpha"] = 0.2
    store.write_manifest(fake.out, m)
    store.save_npz(fake.out / "arrays" / "intensity.npz", **{**ia, "background": np.arange(4) == k})
    assert k not in [u["prototype"] for u in Run(fake.out).pair_explanation(0, 1)["uncertain"]]
    store.save_npz(fake.out / "arrays" / "intensity.npz", **ia)
    store.save_npz(fake.out / "arrays" / "dynamics.npz", **{n: v for n, v in dyn.to_arrays().items() if n != "p_pair"})
    assert Run(fake.out).pair_explanation(0, 1)["uncertain"][0]["p_value"] is None  # uncalibrated without p
    (fake.out / "record" / f"ckpt_it{ITS[2]:07d}.npz").unlink()
    with pytest.raises(RunDirError, match="is missing"):
        Run(fake.out).records()
    m = store.read_manifest(fake.out)
    m["stages"]["explain"]["complete"] = False
    store.write_manifest(fake.out, m)
    with pytest.raises(RunDirError) as e:
        Run(fake.out).check_complete()
    assert str(e.value).endswith(f"(missing stages: explain): finish it with `i2x run --resume {fake.out}`")
    del m["stages"]
    store.write_manifest(fake.out, m)
    assert Run(fake.out).missing_stages() == list(STAGE_NAMES)


def test_progress_bar_is_labelled_i2x_and_cleared_when_the_stages_end(tmp_path, capsys):
    """`i2x run` prints its summary after the stages: the bar must not stay on the terminal."""
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    run_stages(fake.context(_cfg()), progress=True)
    frames = capsys.readouterr().err.split("\r")
    assert frames[-1] == "" and frames[-2].strip() == ""  # the last frame blanked, no newline left behind
    shown = [f for f in frames if f.strip()]
    assert shown and all(f.startswith("i2x: ") for f in shown)


def test_the_manifest_counts_the_vectors_a_streamed_pca_saw(tmp_path):
    """A training set larger than the PCA sample (65,536 vectors): the manifest says the PCA saw a
    sample of whole images, and K-Means every vector."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 64, 64, 2)).astype(np.float32)  # 4,096 cells per image
    train = rng.normal(size=(17, 64, 64, 2)).astype(np.float32)  # 69,632 vectors: more than the sample
    hooks = Hooks(None, None, lambda: feats, lambda: FeatureStream.of_array(train, batch=5))
    ctx = Context(tmp_path, {"model": {}}, _cfg(prototype_fit="train", prototypes=2), np.zeros(3, int), ["a"], hooks)
    ctx.manifest.record("prototypes", _prototypes(ctx), 0.0, {})
    assert ctx.manifest["model"]["prototype_fit"] == {"on": "train", "vectors": 17 * 4096, "pca_vectors": 16 * 4096}
