"""Your own model, data and loop, first class (issue 14): torchvision models with no layer named, a
hand-written CNN with in-place ReLUs, and a Recorder-driven loop, each through
run/analyze -> explain -> report -> finetune(model=) -> faithfulness(model=)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import CLASSES, own_data, round_trip
from torch import nn

import i2x


def _hand_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


MODELS = {
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=3),
    "resnet18": lambda: torchvision.models.resnet18(num_classes=3),
    "hand_cnn_inplace_relu": _hand_cnn,
}
# the layer named by hand: the automatic 4x4 layer of a one-epoch MobileNetV3 on 60 images gives flat saliency
# (the run says so), which leaves its prototypes in no image; the automatic choice is tested in test_layers
LAYER = {"mobilenet_v3_small": "features.8"}


@pytest.mark.parametrize("name", list(MODELS))
def test_your_model_through_every_command(name, tmp_path, capsys):
    torch.manual_seed(0)
    model = MODELS[name]()
    train, test = own_data(60), own_data(30, seed=1)
    r = i2x.run(
        out=tmp_path / name,
        model=model,
        train=train,
        test=test,
        epochs=1,
        batch_size=20,
        every=1,
        prototypes=4,
        min_cluster_size=3,
        explain_fraction=0.5,
        device="cpu",
        progress=False,
        layer=LAYER.get(name),
    )
    m = r.manifest
    assert m["data"]["classes"] == CLASSES  # from the Subset's underlying dataset
    assert m["config"]["model"] == "" and m["model"]["name"] == type(model).__name__
    h = {"mobilenet_v3_small": "features.", "resnet18": "layer", "hand_cnn_inplace_relu": ""}[name]
    assert m["model"]["layer"].startswith(h) and len(m["model"]["feature_shape"]) == 3
    assert (r.path / "report" / "index.html").exists()  # i2x.run writes the report, as the CLI does
    round_trip(r, model, test, capsys)


def test_recorder_loop_then_every_command(tmp_path, capsys):
    torch.manual_seed(0)
    model = _hand_cnn()
    train, test = own_data(60), own_data(30, seed=1)
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.stack([train[i][1] for i in range(len(train))])
    rec = i2x.Recorder(x[:30], y[:30].numpy(), every=2, out_dir=tmp_path / "loop")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rec.step(model, 0)  # the untrained model is the first checkpoint
    for it in range(1, 7):
        idx = torch.randint(0, 60, (20,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(model, it)
    rec.finalize(model, 6)
    # the README's call, as written: the Recorder saved the explanation set
    r = i2x.analyze(tmp_path / "loop", model, classes=CLASSES, test=test, prototypes=4, min_cluster_size=3)
    assert r.manifest["checkpoints"] == [0, 2, 4, 6] and r.manifest["data"]["classes"] == CLASSES
    round_trip(r, model, test, capsys)


def test_readme_own_loop_block_runs_as_written(tmp_path):
    """The README's own-loop block, executed verbatim with its names bound to tiny data."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "i2x.Recorder(" in b)
    torch.manual_seed(0)
    train, test = own_data(60), own_data(30, seed=1)
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.stack([train[i][1] for i in range(len(train))])
    xt = torch.stack([test[i][0] for i in range(len(test))])
    yt = torch.stack([test[i][1] for i in range(len(test))])
    names = {"i2x": i2x, "model": _hand_cnn(), "DIR": str(tmp_path / "loop"), "n_iterations": 4, "names": CLASSES}
    names |= {"x_explain": x[:30], "y_explain": y[:30].numpy(), "x_train": x, "y_train": y, "x_test": xt, "y_test": yt}
    exec(compile(block, "README.md", "exec"), names)  # the library's defaults, K = 32 included
    r = names["run"]
    assert r.manifest["checkpoints"] == [0, 4]  # every=40: the untrained model and the final one
    assert r.manifest["model"]["prototype_fit"]["on"] == "train" and r.manifest["data"]["classes"] == CLASSES
    assert (tmp_path / "loop" / "explanations.json").exists()
