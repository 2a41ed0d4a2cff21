"""Behaviour that mutation testing found unpinned (issue 17; docs/TESTING.md lists the mutants): each
test asserts what a user of the method or of the run directory would see change, on constructed
cases small enough for the fast selection that `make mutation` runs once per mutant."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_stages import Fake, _cfg

from i2x.analysis.dynamics import (
    aggregate_clusters,
    clusters_with_fallback,
    confidence_clusters,
    dynamics,
    intensity_scale,
    ridge,
)
from i2x.analysis.explain import key_checkpoints, pair_explanation, significant_signs
from i2x.analysis.intensity import saliency_density
from i2x.analysis.prototypes import FeatureStream, assign, pca_sample_images, prototypes
from i2x.config import ExplainConfig
from i2x.errors import DivergedError
from i2x.rundir import Context, Hooks, _prototypes, run_stages


def test_progress_bar_is_labelled_i2x_and_cleared_when_the_stages_end(tmp_path, capsys):
    """`i2x run` prints its summary after the stages: the bar must not stay on the terminal."""
    fake = Fake(tmp_path / "run")
    fake.out.mkdir()
    run_stages(fake.context(_cfg()), progress=True)
    frames = capsys.readouterr().err.split("\r")
    assert frames[-1] == "" and frames[-2].strip() == ""  # the last frame blanked, no newline left behind
    shown = [f for f in frames if f.strip()]
    assert shown and all(f.startswith("i2x: ") for f in shown)


# --------------------------------------------------------------------------- float32 on disk, float64 in the math


def _steps(rng, n=24, t=3, c=3, k=5):
    """Confidences (T+1, N, C) of two groups moving apart, intensities (T+1, N, K), labels (N,)."""
    g = np.arange(n) % 2
    conf = np.full((t, n, c), 1 / c)
    for s in range(1, t):
        conf[s] = conf[s - 1] + np.where(g[:, None] == 0, [0.11, -0.05, -0.06], [-0.07, 0.04, 0.03]) * (-1) ** s
    conf += rng.normal(0, 0.003, conf.shape)
    return conf, rng.random((t, n, k)) * 30, np.arange(n) % c


def _equal(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_float32_arrays_as_saved_give_the_float64_results_bit_for_bit(rng):
    """The run stores confidences, saliency, intensities and p-values as float32; every analysis
    function computes in float64, so the numbers recomputed from those files equal the ones from
    the same values held in float64, to the last bit (a float32 computation differs near 1e-7)."""
    conf, inten, labels = (a.astype(np.float32) if a.dtype.kind == "f" else a for a in _steps(rng))
    d32 = dynamics(conf, inten, labels, min_cluster_size=5, tau=0.05, lam=2.0)
    d64 = dynamics(conf.astype(np.float64), inten.astype(np.float64), labels, min_cluster_size=5, tau=0.05, lam=2.0)
    assert (d32.n_clusters > 0).all() and np.abs(d32.W).max() > 0
    _equal((d32.W, d32.class_delta, d32.lam), (d64.W, d64.class_delta, d64.lam))
    dp, di = (conf[1] - conf[0]).astype(np.float32), (inten[1] - inten[0]).astype(np.float32)
    lab = d32.labels[0]
    _equal(aggregate_clusters(dp, di, lab), aggregate_clusters(dp.astype(np.float64), di.astype(np.float64), lab))
    _equal([ridge(di, dp, 0.5)], [ridge(di.astype(np.float64), dp.astype(np.float64), 0.5)])
    assert intensity_scale(di) == intensity_scale(di.astype(np.float64))
    sal = rng.random((40, 4, 4)).astype(np.float32)
    a = rng.integers(0, 6, (40, 4, 4))
    _equal([saliency_density(a, sal, 6)], [saliency_density(a, sal.astype(np.float64), 6)])
    d = rng.normal(size=(3, 4))
    p = rng.random((3, 4)).astype(np.float32) / 10
    _equal(significant_signs(d, p, 0.05), significant_signs(d, p.astype(np.float64), 0.05))


def test_float64_features_give_the_prototypes_of_the_float32_ones(rng):
    """A caller's float64 activations and the float32 ones the pipeline extracts: the same prototypes."""
    f = rng.normal(size=(6, 3, 3, 5))
    _equal(prototypes(f, 3).to_arrays().values(), prototypes(f.astype(np.float32), 3).to_arrays().values())


def test_prototypes_are_reproducible_for_wide_features(rng):
    """504 vectors of 60 channels (wide like ResNet-50's 2048): scikit-learn's PCA then uses its
    randomized solver, which must be seeded too for the same seed to give the same prototypes,
    fitted on E or on a training set."""
    e = rng.normal(size=(14, 6, 6, 60)).astype(np.float32)
    train = rng.normal(size=(14, 6, 6, 60)).astype(np.float32)
    for fit in (None, train):
        a, b = (prototypes(e, 3, max_components=8, n_init=1, random_state=3, fit_features=fit) for _ in range(2))
        _equal(a.to_arrays().values(), b.to_arrays().values())


class _Reads:
    """A training set streamed as the pipeline streams it, logging the images each pass asks for."""

    def __init__(self, features: np.ndarray):
        self.features, self.asked = features, []

    def stream(self) -> FeatureStream:
        def batches(idx):
            self.asked.append(np.asarray(idx).tolist())
            return (self.features[idx[i : i + 3]] for i in range(0, len(idx), 3))

        return FeatureStream(len(self.features), batches)


def test_a_streamed_fit_samples_whole_images_for_the_pca_then_reads_every_image(rng):
    """PCA on a seeded sample of at most pca_sample vectors (10 of the 20 images of 9 cells for 90 or 95
    vectors: distinct, sorted, the same for the same seed), K-Means on every image; a training set
    that fits in the sample is read once."""
    e, train = rng.normal(size=(4, 3, 3, 4)), rng.normal(size=(20, 3, 3, 4))
    samples = []
    for pca_sample, seed in ((90, 7), (95, 7), (90, 8)):
        r = _Reads(train)
        prototypes(e, 3, fit_features=r.stream(), pca_sample=pca_sample, random_state=seed)
        assert len(r.asked) == 2 and r.asked[1] == list(range(20))
        assert len(r.asked[0]) == len(set(r.asked[0])) == 10 and r.asked[0] == sorted(r.asked[0])
        samples.append(r.asked[0])
    assert samples[0] == samples[1] != samples[2]
    r = _Reads(train)
    prototypes(e, 3, fit_features=r.stream(), pca_sample=180)  # room for every image: read once, all of them
    assert r.asked == [list(range(20))]


def test_pca_sample_images_counts_whole_images_within_the_budget():
    assert pca_sample_images(20, 9, 90) == pca_sample_images(20, 9, 98) == 10
    assert pca_sample_images(3, 9, 90) == 3  # fewer images than the budget: all of them
    assert pca_sample_images(10, 100, 150) == 1  # one image of 100 cells fits, two do not
    assert pca_sample_images(10, 100, 50) == 1  # at least one image, however large
    assert pca_sample_images(10**6, 1, 100) == 100  # a 1x1 layer: one vector per image


def test_every_position_of_a_large_explanation_set_is_assigned(rng):
    """36,100 vectors, more than two of the blocks E is projected in: three blobs of positions, each
    one prototype, every position assigned to its own (as assign() recomputes it)."""
    blob = np.arange(190 * 190).reshape(1, 190, 190) % 3
    f = (np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])[blob] + rng.normal(0, 0.1, (1, 190, 190, 2))).astype(np.float32)
    p = prototypes(f, 3, n_init=1)
    lab = p.assignments.ravel()
    assert sorted(set(zip(blob.ravel().tolist(), lab.tolist(), strict=True))) == [(b, lab[b]) for b in range(3)]
    assert len(set(lab.tolist())) == 3
    np.testing.assert_array_equal(p.assignments, assign(f, p))


def test_the_fewest_components_reaching_the_variance_exactly(rng):
    """Two orthogonal directions of equal variance: one component explains exactly 0.5, which is enough
    for variance=0.5 (">= variance"), and not for anything above."""
    v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], np.float32)
    f = np.tile(v, (4, 1)).reshape(4, 2, 2, 3)
    assert prototypes(f, 2, variance=0.5).pca_components.shape == (1, 3)
    assert prototypes(f, 2, variance=0.5).explained_variance == 0.5
    assert prototypes(f, 2, variance=0.5000001).pca_components.shape == (2, 3)


# --------------------------------------------------------------------------- HDBSCAN labels (Eq. 5)


def test_cluster_labels_are_integers_in_every_branch():
    """Labels index clusters (np.bincount(labels + 1) counts noise and members): ints whichever way
    they were found: too few samples, all samples alike, HDBSCAN, the fallback's one cluster of all."""
    two_groups = np.repeat([[0.1, -0.1], [-0.2, 0.2]], 6, axis=0) + np.linspace(0, 1e-3, 12)[:, None]
    spread = np.array([[0, 0], [0.001, 0], [1, 1], [2, -1], [-3, 1]], float)
    cases = {
        "too few": confidence_clusters(np.zeros((3, 2)), 5),
        "alike": confidence_clusters(np.zeros((6, 2)), 5),
        "hdbscan": confidence_clusters(two_groups, 5),
        "one of all": clusters_with_fallback(spread, 4)[0],
        "dynamics": dynamics(np.zeros((3, 6, 2)), np.zeros((3, 6, 2)), min_cluster_size=5).labels,
    }
    assert clusters_with_fallback(spread, 4)[1] == 2
    for name, lab in cases.items():
        assert lab.dtype.kind == "i", name
        assert np.bincount(lab.ravel() + 1).sum() == lab.size
    assert np.bincount(cases["hdbscan"] + 1).tolist() == [0, 6, 6]


def test_samples_that_all_moved_alike_are_one_cluster():
    """Every sample's confidence moved by the same (non-constant) vector: HDBSCAN sees zero distances
    and would call it noise; the method calls it one cluster as soon as there are min_cluster_size
    samples (10 by default, and 2 is enough at min_cluster_size=2)."""
    alike = np.array([0.12, -0.05, -0.07])
    assert confidence_clusters(np.tile(alike, (12, 1)), 5).tolist() == [0] * 12
    assert confidence_clusters(np.tile(alike, (5, 1)), 5).tolist() == [0] * 5  # exactly min_cluster_size
    assert confidence_clusters(np.tile(alike, (4, 1)), 5).tolist() == [-1] * 4
    assert confidence_clusters(np.tile(alike, (2, 1)), 2).tolist() == [0, 0]
    assert confidence_clusters(np.tile(alike, (10, 1))).tolist() == [0] * 10  # the default min_cluster_size
    assert confidence_clusters(np.tile(alike, (9, 1))).tolist() == [-1] * 9
    # 6 alike at min_cluster_size 10: found at the first smaller size (5), level 1, not "nothing at any size"
    lab, level = clusters_with_fallback(np.tile(alike, (6, 1)), 10)
    assert lab.tolist() == [0] * 6 and level == 1


def test_confidence_clusters_names_the_fix_and_warns_nothing():
    with pytest.raises(DivergedError) as e:
        confidence_clusters(np.array([[np.nan, 0.0]] * 12), 10)
    assert str(e.value) == "confidence changes contain NaN or inf: the model diverged; lower the learning rate"
    x = np.repeat([[0.1, -0.1], [-0.2, 0.2]], 6, axis=0) + np.linspace(0, 1e-3, 12)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning from scikit-learn in every run's output
        assert (confidence_clusters(x, 5) >= 0).all()


def test_intensity_scale_is_one_when_there_is_nothing_to_scale():
    """The documented RMS size sqrt(mean_i ||dI_i||^2 / K), and 1 (no rescaling) for no sample,
    all-zero or non-finite changes."""
    assert intensity_scale(np.array([[3.0, 4.0], [0.0, 0.0]])) == pytest.approx(np.sqrt(25 / 4))
    assert intensity_scale(np.zeros((0, 3))) == 1.0
    assert intensity_scale(np.zeros((4, 3))) == 1.0
    assert intensity_scale(np.array([[np.inf, 1.0]])) == 1.0


# --------------------------------------------------------------------------- explanation rules (§2.6)


def test_no_key_checkpoint_for_a_class_whose_confidence_never_moves():
    """Even with key_weight_fraction = 0 (allowed), a class whose confidence never changes has no key
    checkpoint, and a prototype with zero weight never carries a step."""
    W = np.zeros((3, 2, 2))
    W[:, 0, 0] = 0.5  # prototype 0 weighs on class 0; prototype 1 does not
    cfg = ExplainConfig(key_weight_fraction=0.0)
    assert key_checkpoints(W, np.zeros((3, 2)), 0, [0, 1], cfg) == []
    moved = key_checkpoints(W, np.array([[0.2, -0.2], [0.0, 0.0], [0.1, -0.1]]), 0, [0, 1], cfg)
    assert [(s["step"], [p["prototype"] for p in s["prototypes"]]) for s in moved] == [(0, [0]), (2, [0])]


def test_alpha_one_still_needs_a_step_with_p_below_one():
    """alpha = 1 is a valid setting; a prototype with p = 1 at every step (the null explains it
    completely) is still neither uncertain nor reliable."""
    W = np.zeros((4, 2, 2))
    W[:, 0, 0] = [0.3, -0.2, 0.4, -0.1]  # alternates between the classes, but nothing is significant
    W[:, 1, 0] = 0.2  # steady, but nothing is significant
    contain = np.ones((6, 2), bool)
    labels = np.array([0, 0, 0, 1, 1, 1])
    p_pair = np.ones((4, 2, 2, 2), np.float32)
    pe = pair_explanation(W, contain, labels, 0, 1, ExplainConfig(alpha=1.0), p_pair=p_pair)
    assert pe["uncertain"] == [] and pe["reliable"] == []
    p_pair[:, :, 0, 1] = 0.2  # adjusted 0.8 < 1: now prototype 0 is uncertain and prototype 1 reliable
    pe = pair_explanation(W, contain, labels, 0, 1, ExplainConfig(alpha=1.0), p_pair=p_pair)
    assert [r["prototype"] for r in pe["uncertain"]] == [0] and [r["prototype"] for r in pe["reliable"]] == [1]


def test_the_manifest_counts_the_vectors_a_streamed_pca_saw(tmp_path):
    """A training set larger than the PCA sample (65,536 vectors): the manifest says the PCA saw a
    sample of whole images, and K-Means every vector."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 64, 64, 2)).astype(np.float32)  # 4,096 cells per image
    train = rng.normal(size=(17, 64, 64, 2)).astype(np.float32)  # 69,632 vectors: more than the sample
    hooks = Hooks(None, None, lambda: feats, lambda: FeatureStream.of_array(train, batch=5))
    ctx = Context(tmp_path, {"model": {}}, _cfg(prototype_fit="train", prototypes=2), np.zeros(3, int), ["a"], hooks)
    _prototypes(ctx)
    assert ctx.manifest["model"]["prototype_fit"] == {"on": "train", "vectors": 17 * 4096, "pca_vectors": 16 * 4096}
