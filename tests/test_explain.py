import numpy as np

from i2x.analysis.explain import (
    ExplainConfig,
    confused_pairs,
    explain,
    key_checkpoints,
    pair_explanation,
    shared_prototypes,
    sign_flips,
    specialized_prototypes,
)


def _example():
    # class 0: 6 samples; all contain prototype 0; samples 0-2 also prototype 1, samples 3-5 prototype 2.
    # class 1: 4 samples, all contain prototypes 0 and 3.
    contain = np.zeros((10, 5), dtype=bool)
    contain[:, 0] = True
    contain[0:3, 1] = True
    contain[3:6, 2] = True
    contain[6:, 3] = True
    labels = np.array([0] * 6 + [1] * 4)
    return contain, labels


def test_shared_and_specialized_on_constructed_example():
    contain, labels = _example()
    assert shared_prototypes(contain, labels, 0) == [0]
    assert shared_prototypes(contain, labels, 1) == [0, 3]
    groups = specialized_prototypes(contain, labels, 0, [0], groups=2, rho_group=1.0)
    assert sorted(tuple(g["prototypes"]) for g in groups) == [(1,), (2,)]
    assert sorted(tuple(g["members"]) for g in groups) == [(0, 1, 2), (3, 4, 5)]
    # rho < 1: a prototype in 2 of 3 samples is shared at rho = 0.5
    contain2 = contain.copy()
    contain2[0, 4] = contain2[1, 4] = True
    assert 4 not in shared_prototypes(contain2, labels, 0, rho=1.0)
    assert shared_prototypes(contain2[:3], labels[:3], 0, rho=0.5) == [0, 1, 4]


def test_sign_flips_skip_zero_steps():
    d = np.array([[1, 1], [-1, 0], [0, 0], [2, -1], [-3, -1]], dtype=float)
    assert sign_flips(d).tolist() == [3, 1]  # column 1: +, ·, ·, −, − -> one flip


def test_planted_uncertain_prototype_is_ranked_first(rng):
    T, K, C = 12, 6, 3
    W = rng.normal(0, 0.01, size=(T, K, C))
    W[:, 2, 0] = np.where(np.arange(T) % 2 == 0, 1.0, -1.0)  # prototype 2: flips between classes 0 and 1
    W[:, 2, 1] = 0.0
    W[:, 4, 0] = 0.8  # prototype 4: always favours class 0 (reliable)
    W[:, 4, 1] = -0.8
    contain = np.ones((20, K), dtype=bool)
    labels = np.array([0] * 10 + [1] * 10)
    pe = pair_explanation(W, contain, labels, 0, 1, ExplainConfig())
    assert pe["uncertain"][0]["prototype"] == 2
    assert pe["uncertain"][0]["sign_flips"] == T - 1
    assert pe["reliable"][0]["prototype"] == 4 and pe["reliable"][0]["favours"] == 0


def test_uncertain_needs_both_classes(rng):
    T, K = 8, 3
    W = np.zeros((T, K, 2))
    W[:, 1, 0] = np.where(np.arange(T) % 2 == 0, 1.0, -1.0)
    contain = np.zeros((4, K), dtype=bool)
    contain[:2, 1] = True  # only in class 0
    labels = np.array([0, 0, 1, 1])
    assert pair_explanation(W, contain, labels, 0, 1)["uncertain"] == []


def test_key_checkpoints_and_opposing_classes():
    T, K, C = 4, 3, 3
    W = np.zeros((T, K, C))
    W[2, 1] = [0.9, -0.5, 0.2]  # at step 2 prototype 1 raises class 0 against class 1
    delta = np.zeros((T, C))
    delta[2, 0] = 0.4
    delta[0, 0] = 0.01  # too small to be key
    kc = key_checkpoints(W, delta, 0, [1, 2], ExplainConfig())
    assert len(kc) == 1 and kc[0]["step"] == 2
    p = kc[0]["prototypes"][0]
    assert p["prototype"] == 1 and p["against"] == [{"class": 1, "weight": -0.5}]


def test_confused_pairs_ranks_symmetric_counts():
    cm = np.array([[50, 3, 0], [4, 40, 1], [0, 6, 30]])
    assert confused_pairs(cm, top=2) == [(0, 1, 7), (1, 2, 7)]


def test_explain_is_json_ready_and_skips_absent_classes(rng):
    import json

    contain, labels = _example()
    W = rng.normal(size=(5, 5, 3))
    delta = rng.normal(size=(5, 3))
    ex = explain(W, contain, labels, delta, confusion=np.eye(3, dtype=int) * 5 + 1, classes=["a", "b", "c"])
    json.dumps(ex)
    assert set(ex["classes"]) == {"a", "b"}  # class "c" has no sample in E
    # the most confused pairs involving class "c" cannot be explained from E: listed as skipped
    assert [p["names"] for p in ex["pairs"]] == [["a", "b"]]
    assert {tuple(p) for p in ex["skipped_pairs"]} == {(0, 2), (1, 2)}


def test_key_checkpoints_with_zero_fractions_list_only_real_changes():
    from i2x.analysis.explain import key_checkpoints
    from i2x.config import ExplainConfig

    W = np.zeros((3, 2, 2))
    W[0, 0, 0] = 0.5  # step 0: class 0 rises, carried by P-0
    W[1, 1, 0] = 0.3  # step 1: P-1 has a weight, P-0 none, and class 0 does not move
    delta = np.array([[0.2, -0.2], [0.0, 0.0], [0.1, -0.1]])  # step 1: no change at all
    cfg = ExplainConfig(key_step_fraction=0.0, key_weight_fraction=0.0)
    kc = key_checkpoints(W, delta, 0, [0, 1], cfg)
    # step 1 (no change) and P-1 (weight 0) are never key; step 2 has a change but no carrier
    assert [(c["step"], [p["prototype"] for p in c["prototypes"]]) for c in kc] == [(0, [0])]
