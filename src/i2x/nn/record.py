"""Stage 1: record confidences p_t(x) and saliency S_t(x) on the explanation set at checkpoints.

A :class:`Recorder` plugs into any training loop: call ``rec.step(model, iteration)`` after every
optimizer step (it decides when a checkpoint is due) and ``rec.finalize(model, iteration)`` at
the end. Each checkpoint is one file ``record/ckpt_it{iteration:07d}.npz`` holding
``sample_index`` (N,), ``confidences`` (N, C) and ``saliency`` (N, H', W'), so records are keyed
by (checkpoint, sample index): shards written by several processes (``...-shard{r}.npz``, each a
slice of the explanation set) are merged by :func:`load_records`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import DivergedError, I2XError
from ..store import EXPLAIN_SET, checkpoint_iterations, load_records, save_explain_set, save_npz
from .distributed import SINGLE, World
from .saliency import saliency_and_confidence

__all__ = ["Recorder", "checkpoint_iterations", "load_records"]  # the loaders live in store (torch-free)


class Recorder:
    """Record (p_t, S_t) for ``images`` at iteration 0, every ``every`` iterations, and the end.

    images: (N, C, H, W) normalised float tensor of the explanation set; labels: (N,) ints.
    ``sample_index``: the samples' indices in the training set (default 0..N-1).
    ``out_dir``: the run directory (files go to ``out_dir/record``); None keeps records in memory.
    ``reshape``: how the layer's output is a map (:func:`i2x.nn.layers.resolve_layer`: ``auto`` finds
    ViT tokens and Swin's NHWC).
    ``world``: under several processes (torchrun, Lightning DDP), this process's rank: it writes
    shard ``world.rank`` and takes rank 0's buffers (BatchNorm statistics) before each record, so
    that every shard is the same model's.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels,
        every: int = 40,
        out_dir: str | Path | None = None,
        layer: str | nn.Module | None = None,
        method: str = "gradcam",
        target: str = "label",
        batch_size: int = 256,
        device=None,
        sample_index=None,
        world: World = SINGLE,
        reshape="auto",
    ):
        if every < 1:
            raise I2XError(f"every={every} must be ≥ 1 (iterations between checkpoints)")
        if target not in ("label", "pred"):
            raise I2XError(f"target={target!r} must be 'label' or 'pred'")
        self.images = torch.as_tensor(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise I2XError(f"labels ({len(self.labels)}) and images ({len(self.images)}) differ in length")
        self.sample_index = np.arange(len(self.labels)) if sample_index is None else np.asarray(sample_index)
        self.every, self.layer, self.method, self.target, self.reshape = every, layer, method, target, reshape
        self.batch_size, self.device, self.world = batch_size, device, world
        self.shard = world.rank if world.size > 1 else None  # the record files' -shard{rank} suffix
        self.dir = None if out_dir is None else Path(out_dir) / "record"
        self.memory: dict[int, dict[str, np.ndarray]] = {}

    def due(self, iteration: int) -> bool:
        """A checkpoint to record now. Under torchrun the ranks decide together: a kill can leave one
        rank's shard of a checkpoint on disk and not another's, and every rank must then record it
        (the record's broadcast and the training's all-reduce are taken by all ranks in one order)."""
        return iteration % self.every == 0 and self.world.any(not self.has(iteration))

    def path(self, iteration: int) -> Path:
        suffix = "" if self.shard is None else f"-shard{self.shard}"
        return self.dir / f"ckpt_it{iteration:07d}{suffix}.npz"

    def has(self, iteration: int) -> bool:
        return iteration in self.memory or (self.dir is not None and self.path(iteration).exists())

    def record(self, model: nn.Module, iteration: int) -> dict[str, np.ndarray]:
        """Record one checkpoint now (model in eval mode for the call; restored afterwards)."""
        self.world.sync_buffers(model)  # each rank's statistics saw only its part of the last batch
        targets = self.labels if self.target == "label" else None
        probs, maps = saliency_and_confidence(
            model, self.images, targets, self.layer, self.method, self.batch_size, self.device, reshape=self.reshape
        )
        if not (np.all(np.isfinite(probs)) and np.all(np.isfinite(maps))):
            raise DivergedError(
                f"NaN or inf in confidences or saliency at iteration {iteration}: "
                "the model diverged; lower lr= (the learning rate)"
            )
        rec = {
            "iteration": np.int64(iteration),
            "sample_index": self.sample_index,
            "confidences": probs.astype(np.float32),
            "saliency": maps.astype(np.float32),
        }
        if self.dir is None:
            self.memory[iteration] = rec
        else:
            self._save_explain_set()
            save_npz(self.path(iteration), **rec)
        return rec

    def _save_explain_set(self) -> None:
        """``record/explain_set.npz`` (the images as given, labels, sample indices) unless the run
        already wrote one, so that ``i2x.analyze(DIR, model)`` finds the explanation set."""
        if self.shard is None and not (self.dir.parent / EXPLAIN_SET).exists():
            save_explain_set(self.dir.parent, self.images.detach().cpu().numpy(), self.labels, self.sample_index)

    def step(self, model: nn.Module, iteration: int) -> bool:
        """Call after every optimizer step (and once with iteration 0 before training)."""
        if self.due(iteration):
            self.record(model, iteration)
            return True
        return False

    def finalize(self, model: nn.Module, iteration: int) -> None:
        """Record the final model if its iteration is not a checkpoint already."""
        if self.world.any(not self.has(iteration)):
            self.record(model, iteration)

    def load(self):
        """All records so far, as :func:`load_records` returns them."""
        if self.dir is not None:
            return load_records(self.dir.parent)
        its = sorted(self.memory)
        return _stack([self.memory[i] for i in its], its)


def _stack(recs, its):
    return {
        "iterations": np.asarray(its, dtype=np.int64),  # (T+1,)
        "sample_index": recs[0]["sample_index"],  # (N,)
        "confidences": np.stack([r["confidences"] for r in recs]),  # (T+1, N, C)
        "saliency": np.stack([r["saliency"] for r in recs]),  # (T+1, N, H', W')
    }
