"""Several processes under ``torchrun``: the process group, this rank's share of the work.

``torchrun --nproc_per_node=N -m i2x run ...`` starts N copies of ``i2x run`` with ``RANK`` /
``WORLD_SIZE`` / ``MASTER_ADDR`` in the environment. :func:`setup` joins them (gloo on CPU, nccl
on CUDA); every rank trains its slice of each batch under ``DistributedDataParallel`` and
records its slice of the explanation set (``record/ckpt_it*-shard{rank}.npz``); rank 0 alone
writes the run directory's other files and runs the analysis. Under one process (no
``WORLD_SIZE``, or 1) nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    backend: str = ""
    owned: bool = False  # i2x created the process group (and so may destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> np.ndarray:
        """The rows of ``n`` (the explanation set) this rank records: one contiguous slice each."""
        return np.array_split(np.arange(n), self.size)[self.rank]

    def part(self, rows):
        """This rank's rows of one global batch: every ``size``-th, starting at ``rank``."""
        return rows[self.rank :: self.size]

    def barrier(self) -> None:
        if self.size > 1:
            tdist.barrier()

    def info(self) -> dict:
        return {"world_size": self.size, "backend": self.backend or None}

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (``LOCAL_RANK``) when the run asks for CUDA."""
        if self.size > 1 and device.type == "cuda" and device.index is None:
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: after a training step each
        rank's statistics saw only its part of the batch, and every rank must record one model."""
        if self.size > 1:
            for b in model.buffers():
                tdist.broadcast(b.data, 0)

    def any(self, flag: bool) -> bool:
        """``flag`` of any rank, on every rank: a decision the ranks must take alike (each one's own
        view of the disk may differ, and a collective call one rank skips hangs or aborts the others)."""
        if self.size <= 1:
            return bool(flag)
        cuda = tdist.get_backend() == "nccl"
        t = torch.tensor([int(bool(flag))], device=torch.device("cuda", torch.cuda.current_device()) if cuda else "cpu")
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        """Leave the process group i2x created (after the last collective call); a group the caller
        created stays theirs."""
        if self.size > 1 and self.owned and tdist.is_initialized():
            tdist.destroy_process_group()


SINGLE = World()  # one process: the default everywhere


def setup(device: torch.device) -> World:
    """Join the process group torchrun describes (idempotent); ``World()`` under one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    owned = not tdist.is_initialized()
    if owned:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group(backend=backend)
    return World(tdist.get_rank(), tdist.get_world_size(), tdist.get_backend(), owned)


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The model training steps go through: ``DistributedDataParallel`` over ``world``, or itself."""
    if world.size <= 1:
        return model
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # a 1-channel first convolution's weight has strides DDP calls odd; harmless, said every step
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
