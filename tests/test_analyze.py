"""Post-hoc analysis: records from a plain training loop (i2x.Recorder) and saved state_dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import i2x
from i2x.cli import main
from i2x.config import ExplainConfig
from i2x.data import load_splits
from i2x.errors import I2XError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def _data():
    sp = load_splits("digits", train_subset=300, test_subset=100)
    return sp, *sp.train.tensors(), *sp.test.tensors()


def _loop(model, x, y, iters, callback):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    callback(model, 0)
    for it in range(1, iters + 1):
        idx = torch.randint(0, len(y), (32,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        callback(model, it)


def test_recorder_in_plain_loop_then_analyze(tmp_path):
    sp, x, y, xt, yt = _data()
    xe, ye = x[:60], y[:60]
    model = _model()
    rec = i2x.Recorder(xe, ye.numpy(), every=4, out_dir=tmp_path, layer="3")
    _loop(model, x, y, 12, rec.step)
    rec.finalize(model, 12)
    r = i2x.analyze(
        tmp_path, model, images=xe, labels=ye, classes=sp.train.classes, test=(xt, yt), prototypes=5, min_cluster_size=4
    )
    m = r.manifest
    assert m["checkpoints"] == [0, 4, 8, 12] and m["model"]["layer"] == "3" and m["model"]["feature_shape"] == [8, 8, 8]
    assert m["data"]["test_size"] == 100 and 0.0 <= m["metrics"]["test_accuracy"] <= 1.0
    assert r.arrays("intensity")["intensity"].shape == (4, 60, 5)
    assert r.arrays("dynamics")["W"].shape == (3, 5, 10)
    assert set(r.explanations()["classes"]) <= set(sp.train.classes)
    assert (tmp_path / "report" / "index.html").exists()  # analyze writes the report, as run does
    # the confusion matrix is the test set's: compare with a direct prediction
    pred = model.eval()(xt).argmax(1).numpy()
    np.testing.assert_array_equal(r.arrays("evaluate")["y_pred"], pred)
    # `i2x explain` reads the result like any run
    assert main(["explain", str(tmp_path), "--class", "3"]) == 0


def test_analyze_without_records_or_test(tmp_path):
    with pytest.raises(I2XError, match="Recorder"):
        i2x.analyze(tmp_path, _model())
    sp, x, y, *_ = _data()
    model = _model()
    rec = i2x.Recorder(x[:40], y[:40].numpy(), every=2, out_dir=tmp_path, layer="3")
    _loop(model, x, y, 4, rec.step)
    r = i2x.analyze(tmp_path, model, images=x[:40], labels=y[:40], prototypes=4, min_cluster_size=3)
    assert "explanation set" in r.manifest["data"]["test_source"]  # said, not hidden
    assert r.manifest["data"]["classes"] == [str(c) for c in range(10)]
    assert r.manifest["model"]["prototype_fit"]["on"] == "explain"  # no train= given: fitted where it can
    # with the training data: fitted on all of it (streamed), E assigned to those prototypes
    r = i2x.analyze(tmp_path, model, train=torch.utils.data.TensorDataset(x, y), prototypes=4, min_cluster_size=3)
    cells = int(np.prod(r.manifest["model"]["feature_shape"][:2]))
    assert r.manifest["model"]["prototype_fit"] == {
        "on": "train",
        "vectors": len(x) * cells,
        "pca_vectors": len(x) * cells,
    }
    feats = i2x.features(model, x, layer="3")
    want = i2x.prototypes(i2x.features(model, x[:40], layer="3"), 4, random_state=0, fit_features=feats)
    np.testing.assert_array_equal(r.arrays("prototypes")["assignments"], want.assignments)


def test_analyze_checkpoints_of_saved_state_dicts(tmp_path):
    sp, x, y, xt, yt = _data()
    ck = tmp_path / "ckpts"
    ck.mkdir()
    model = _model()

    def save(m, it):
        if it % 5 == 0:  # plain state_dicts and one self-describing dict, names out of lexical order
            obj = {"model": m.state_dict(), "step": it} if it == 10 else m.state_dict()
            torch.save(obj, ck / f"model_{it}.pt")

    _loop(model, x, y, 10, save)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    r = i2x.analyze_checkpoints(
        ck,
        _model(),
        tmp_path / "out",
        images=x[:50],
        labels=y[:50].numpy(),
        test=(xt, yt),
        prototypes=4,
        min_cluster_size=4,
    )
    assert r.manifest["checkpoints"] == [0, 5, 10]
    # the last checkpoint's confidences are those of the final weights
    m = _model()
    m.load_state_dict(final)
    probs = torch.softmax(m.eval()(x[:50]), 1).detach().numpy()
    np.testing.assert_allclose(r.records()["confidences"][-1], probs, atol=1e-5)
    with pytest.raises(I2XError, match="≥ 2"):
        i2x.analyze_checkpoints(tmp_path / "out", _model(), tmp_path / "o2", images=x[:5], labels=y[:5].numpy())
    bad = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(I2XError, match="does not fit"):
        i2x.analyze_checkpoints(ck, bad, tmp_path / "o3", images=x[:5], labels=y[:5].numpy())


def _user_run(tmp_path, model):
    """A run with the caller's model and a torch Dataset (no test set: 20 % held out)."""
    sp, x, y, xt, yt = _data()
    r = i2x.run(
        out=tmp_path / "r",
        model=model,
        train=torch.utils.data.TensorDataset(x, y),
        layer="3",
        epochs=1,
        batch_size=50,
        every=3,
        prototypes=4,
        min_cluster_size=3,
        device="cpu",
        progress=False,
    )
    return r, sp, xt, yt


def test_run_with_torch_datasets(tmp_path):
    r, *_ = _user_run(tmp_path, _model())
    m = r.manifest
    assert (
        m["data"]["train_size"] == 240 and "hold-out" in m["data"]["test_source"] and m["data"]["dataset"] == "train="
    )  # 20 % of 300 held out
    assert m["checkpoints"] == [0, 3, 5] and m["model"]["layer"] == "3"


def test_cli_analyze_checkpoints(tmp_path, capsys):
    from i2x.nn.models import build_model

    sp, x, y, *_ = _data()
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.manual_seed(0)
    m = build_model("smallcnn", in_channels=1, num_classes=10)
    _loop(m, x, y, 6, lambda mm, it: torch.save(mm.state_dict(), ck / f"it{it:03d}.pth") if it % 3 == 0 else None)
    out = tmp_path / "out"
    rc = main(
        [
            "analyze",
            str(out),
            "--checkpoints",
            str(ck),
            "--model",
            "smallcnn",
            "--dataset",
            "digits",
            "--prototypes",
            "3",
            "--min-cluster-size",
            "3",
            "--device",
            "cpu",
        ]
    )
    got = capsys.readouterr()
    assert rc == 0 and "test accuracy" in got.out
    assert "i2x: " in got.err  # recording saved checkpoints shows the stage bar too (no --quiet)
    man = i2x.Run(out).manifest
    assert man["checkpoints"] == [0, 3, 6] and man["model"]["layer"] == "features.12"  # 4x4 on 8x8 digits (2x2 after)
    rc = main(["analyze", str(tmp_path / "ck")])  # no records, no weights: one line naming the fix
    err = capsys.readouterr().err
    assert rc == 2 and "--checkpoints" in err and len(err.strip().splitlines()) == 1


def test_analyze_redoes_the_stages_whose_settings_changed(cli_run, tmp_path, capsys):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    protos = (run / "arrays" / "prototypes.npz").read_bytes()
    assert main(["analyze", str(run), "--alpha", "0.5", "--device", "cpu"]) == 0
    m = json.loads((run / "manifest.json").read_text())
    assert m["config"]["explain"]["alpha"] == 0.5 and m["stages"]["explain"]["settings"]["explain"]["alpha"] == 0.5
    assert json.loads((run / "explanations.json").read_text())["significance"]["alpha"] == 0.5
    assert (run / "arrays" / "prototypes.npz").read_bytes() == protos  # an explain setting: K-Means kept
    m = json.loads((run / "manifest.json").read_text())
    cells = int(np.prod(m["model"]["feature_shape"][:2]))
    assert m["model"]["prototype_fit"]["on"] == "train"  # the default: the whole training set (the paper)
    assert m["model"]["prototype_fit"]["vectors"] == m["data"]["train_size"] * cells
    assert main(["analyze", str(run), "--prototype-fit", "explain", "--device", "cpu"]) == 0  # a stage setting
    m = json.loads((run / "manifest.json").read_text())
    assert m["model"]["prototype_fit"] == {"on": "explain", "vectors": m["data"]["explain_size"] * cells} | {
        "pca_vectors": m["data"]["explain_size"] * cells
    }
    assert (run / "arrays" / "prototypes.npz").read_bytes() != protos  # redone
    # back to the training set: the CLI reloads the run's own built-in training data
    assert main(["analyze", str(run), "--prototype-fit", "train", "--device", "cpu"]) == 0
    assert (run / "arrays" / "prototypes.npz").read_bytes() == protos


def test_finetune_a_run_made_with_your_own_model(tmp_path, capsys):
    from i2x.data import Dataset

    model = _model()
    r, sp, xt, yt = _user_run(tmp_path, model)
    assert r.manifest["config"]["model"] == "" and r.manifest["model"]["name"] == "Sequential"  # not "smallcnn"
    # the CLI cannot rebuild the model: one line that says how to do it from Python
    assert main(["finetune", str(r.path), "--pair", "0", "1", "--prototype", "0", "--quiet"]) == 2
    assert "i2x.finetune(DIR, model=" in capsys.readouterr().err
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test = Dataset(xt.numpy(), yt.numpy(), sp.train.classes, (0.0,), (1.0,))  # already normalised
    res = i2x.finetune(
        r.path,
        model=model,
        test=test,
        pair=(0, 1),
        prototype=0,
        schedules="curated+full",
        repeats=1,
        controls="random-pair",
        progress=False,
    )
    assert res.test_size == len(yt) and "random-pair" in res.controls
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's weights restored


# --------------------------------------------------------------------------- the in-memory Recorder, analyze(test=...)


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


def test_analyze_shows_the_stage_bar_unless_quiet(cli_run, tmp_path, capsys):
    """`i2x analyze` can take half an hour at CIFAR-10 scale: it shows the same labelled bar as
    `i2x run`, and `--quiet` turns it off (it once printed nothing while it worked)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    assert main(["analyze", str(run), "--alpha", "0.4", "--device", "cpu"]) == 0
    shown = [f for f in capsys.readouterr().err.split("\r") if f.strip()]
    assert shown and all(f.startswith("i2x: ") for f in shown)
    assert main(["analyze", str(run), "--alpha", "0.3", "--device", "cpu", "--quiet"]) == 0
    assert "i2x: " not in capsys.readouterr().err
