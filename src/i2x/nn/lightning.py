"""Stage 1 inside PyTorch Lightning: :class:`I2XCallback` records the explanation set at the
checkpoint schedule of ``Trainer.fit`` into a run directory that ``i2x.analyze`` / ``i2x report`` read.

Under a distributed strategy (DDP, ``torchrun``, ``devices=N``) every rank records its slice of
the explanation set (``record/ckpt_it*-shard{rank}.npz``, merged by the store); rank 0 writes
``record/explain_set.npz``. Saliency is taken on the plain LightningModule (not its DDP wrapper):
no gradient is synchronised, parameters are not touched; BatchNorm running statistics are taken
from rank 0 before each record (the Recorder does it), so every shard is one model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import store
from ..errors import I2XError
from .distributed import World
from .record import Recorder

try:  # the `lightning` package (2.x), else the older `pytorch_lightning`
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError(
            "i2x.lightning needs PyTorch Lightning: pip install 'i2x[lightning]' (or lightning)"
        ) from None


class I2XCallback(Callback):
    """Record (p_t, S_t) of ``images`` at step 0, every ``every`` optimizer steps, and at the end of fit.

    images: (N, C, H, W) normalised float tensor of the explanation set (what the model is fed);
    labels: (N,) ints. ``out_dir``: the run directory; afterwards
    ``i2x.analyze(out_dir, model, classes=..., train=..., test=...)`` runs stages 2-7 on it.
    ``layer``, ``method``, ``target``, ``batch_size``, ``reshape``: as for
    :class:`~i2x.nn.record.Recorder`. A checkpoint already on disk is not recorded again, so a
    fit resumed from a Lightning checkpoint into the same ``out_dir`` continues the record.
    """

    def __init__(
        self,
        out_dir: str | Path,
        images: torch.Tensor,
        labels,
        every: int = 40,
        *,
        layer: str | None = None,
        method: str = "gradcam",
        target: str = "label",
        batch_size: int = 256,
        reshape="auto",
    ):
        super().__init__()
        self.out = Path(out_dir)
        self.images = torch.as_tensor(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise I2XError(f"I2XCallback: images ({len(self.images)}) and labels ({len(self.labels)}) differ in length")
        if every < 1:
            raise I2XError(f"I2XCallback(every={every}) must be ≥ 1 (optimizer steps between checkpoints)")
        self.every, self.layer = every, layer
        self.method, self.target, self.batch_size, self.reshape = method, target, batch_size, reshape
        self.recorder: Recorder | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        world = World(int(trainer.global_rank), int(trainer.world_size))
        rows = world.shard(len(self.labels))  # this rank's slice of E
        self.recorder = Recorder(
            self.images[torch.from_numpy(rows)],
            self.labels[rows],
            self.every,
            self.out,
            self.layer,
            self.method,
            self.target,
            self.batch_size,
            pl_module.device,
            sample_index=rows,
            world=world,
            reshape=self.reshape,
        )
        if world.main:
            self._save_explain_set()
        self.recorder.step(pl_module, int(trainer.global_step))  # the untrained (or resumed) model

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.recorder.step(pl_module, int(trainer.global_step))

    def on_fit_end(self, trainer, pl_module) -> None:
        self.recorder.finalize(pl_module, int(trainer.global_step))

    def _save_explain_set(self) -> None:
        """The whole explanation set, for ``analyze`` and the report."""
        if not (self.out / store.EXPLAIN_SET).exists():
            store.save_explain_set(self.out, self.images.detach().cpu().numpy(), self.labels)


__all__ = ["I2XCallback"]
