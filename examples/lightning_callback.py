"""I2X inside PyTorch Lightning: i2x.lightning.I2XCallback records during Trainer.fit, then i2x.analyze.

    python examples/lightning_callback.py [--out runs/lightning] [--devices 2]

The model and data are the own-loop example's (2,000 of the built-in MNIST digits, a small
``nn.Sequential``); the callback records the explanation set at step 0, every 20 optimizer steps
and the end of fit. ``--devices 2`` trains with DDP on two CPU processes (``ddp_spawn``): each
rank records its half of the explanation set and the store merges the shards. Needs
``pip install 'i2x[lightning]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

import i2x
from i2x.cli.explain import explain_text
from i2x.data import explanation_indices, load_splits
from i2x.lightning import I2XCallback

sys.path.insert(0, str(Path(__file__).parent))
from own_training_loop import make_model  # noqa: E402  (the same small CNN)


class Classifier(pl.LightningModule):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main(argv=None) -> i2x.Run:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lightning")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-subset", type=int, default=2000, help="training images of the 5,000 digits")
    ap.add_argument("--devices", type=int, default=1, help="CPU processes; > 1 trains with DDP (ddp_spawn)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    splits = load_splits("mnist5k", train_subset=a.train_subset)
    x_train, y_train = splits.train.tensors()
    eidx = explanation_indices(y_train.numpy(), 0.1, seed=42)  # E: the paper's 10 % (stratified), seed 42

    model = Classifier(make_model())
    record = I2XCallback(a.out, x_train[eidx], y_train[eidx], every=20, layer="net.10")
    trainer = pl.Trainer(
        max_epochs=a.epochs,
        accelerator="cpu",
        devices=a.devices,
        strategy="ddp_spawn" if a.devices > 1 else "auto",
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
    )
    data = torch.utils.data.TensorDataset(x_train, y_train)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=64, shuffle=True))

    run = i2x.analyze(
        a.out,
        model.net,
        classes=splits.train.classes,
        test=splits.test.tensors(),
        train=(x_train, y_train),
        layer="10",
        prototypes=16,
        min_cluster_size=5,
    )
    pair = run.explanations()["pairs"][0]
    acc, its = run.manifest["metrics"]["test_accuracy"], run.manifest["checkpoints"]
    print(f"test accuracy {100 * acc:.2f} %; {len(its)} checkpoints")
    print(explain_text(run, pair=[str(pair["a"]), str(pair["b"])]))
    return run


if __name__ == "__main__":
    main()
