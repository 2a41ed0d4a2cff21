"""Training with recording, resumable from the last checkpoint bit for bit.

Data order and augmentation are functions of (seed, epoch) and (seed, iteration), so a
resumed run replays exactly the batches the uninterrupted run would have seen; the global
torch RNG (dropout) is saved in the training state at every checkpoint.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import store
from ..config import RunConfig
from ..data import read_batches
from ..errors import ConfigError, DivergedError, RunDirError
from .distributed import SINGLE, World, wrap
from .layers import class_scores
from .record import Recorder
from .utils import eval_mode, seeded_generator


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift every image by its own random integer offset in [-max_shift, max_shift] (edges replicated)."""
    n, _, h, w = x.shape
    xp = F.pad(x, (max_shift,) * 4, mode="replicate")  # (N, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (N, H)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (N, W)
    out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def iterations_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch: ceil(n / batch_size), except that a last batch of one sample joins the
    one before it (BatchNorm cannot train on a single sample)."""
    return n // batch_size if n > batch_size and n % batch_size == 1 else math.ceil(n / batch_size)


def batch_rows(perm, b: int, ipe: int, batch_size: int):
    """Rows of batch ``b`` of an epoch ordered by ``perm`` (the last batch takes the rest)."""
    return perm[b * batch_size :] if b == ipe - 1 else perm[b * batch_size : (b + 1) * batch_size]


def check_split(n: int, batch_size: int, ipe: int, world: World) -> None:
    """Under ``torchrun``, every rank must get at least 2 rows of every batch (an empty part has no
    loss, and BatchNorm cannot train on one sample — the rule one process applies to the last batch)."""
    if world.size <= 1:
        return
    last = n - (ipe - 1) * batch_size
    for what, size in (("a batch", min(batch_size, n)), ("the last batch of each epoch", last)):
        if size // world.size < 2:
            raise ConfigError(
                "batch_size",
                batch_size,
                f"{what} has {size} images, fewer than 2 for each of the {world.size} torchrun processes; "
                f"use a batch size of at least {2 * world.size} whose remainder of the {n} training images "
                f"is 0, 1 or at least {2 * world.size}, or fewer processes",
            )


def save_state(path: Path, state: dict) -> None:
    """``torch.save`` through the atomic writer: a crash never leaves half a checkpoint."""
    store.atomic_write(path, lambda fh: torch.save(state, fh))


def load_state(path: Path, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError/EOFError/pickle errors on truncation
        raise RunDirError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
            "delete it and run `i2x run --resume` to redo that part"
        ) from None


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: RunConfig,
    recorder: Recorder | None = None,
    state_path: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    world: World = SINGLE,
) -> dict:
    """Train ``model`` in place with the training settings of ``cfg`` (epochs, batch_size, lr,
    weight_decay, augment, seed; data order and augmentation from ``cfg.order_seed``); record at
    checkpoints; save a resumable state at each.

    If ``state_path`` exists, training resumes from it. Returns {"iterations", "losses"}. Under
    ``torchrun`` (``world``), every rank trains its part of each batch through
    ``DistributedDataParallel`` (the same global batches as one process) and rank 0 saves the state.
    """
    from ..progress import bar as progress_bar

    device = torch.device(device)
    model.to(device)
    ipe = iterations_per_epoch(len(labels), cfg.batch_size)
    check_split(len(labels), cfg.batch_size, ipe, world)
    total = cfg.epochs * ipe
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1))
    state_path = Path(state_path) if state_path is not None else None
    it, losses = _restore(state_path, model, opt, sched, cfg.seed, device)
    net = wrap(model, world, device)  # what the training steps run; records and states use the model

    def checkpoint():
        if recorder is not None and recorder.step(model, it):
            world.barrier()  # every rank's shard is on disk before the state says this checkpoint is done
        if state_path is not None and world.main:
            save_state(
                state_path,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "iteration": it,
                    "losses": losses,
                    "config": cfg.to_dict(),
                },
            )

    if it == 0 and (recorder is None or recorder.due(0)):
        checkpoint()
    # a log file (CI, nohup) gets a line per second, not one per iteration (i2x.progress)
    bar = progress_bar(total=total, initial=it, desc="train+record", unit="it", disable=not progress, leave=False)
    while it < total:
        epoch, pos = divmod(it, ipe)
        perm = torch.randperm(len(labels), generator=seeded_generator(cfg.order_seed, epoch))
        net.train()
        rows = [batch_rows(perm, b, ipe, cfg.batch_size) for b in range(pos, ipe)]
        # the caller's DataLoader workers read (and transform) batches ahead, each batch's draws seeded by its
        # place: a resumed run reads what the uninterrupted one did, with any number of workers
        seeds = [hash((cfg.order_seed, epoch, b)) for b in range(pos, ipe)]
        for idx, x in zip(rows, read_batches(images, rows, seeds), strict=True):
            loss = _step(net, opt, sched, x, labels[idx], cfg, it, device, world)
            it += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
            if it == min(ipe, total) and world.main:
                warning = divergence_warning(losses, int(labels.max()) + 1, cfg.lr)
                if warning:
                    bar.write(f"i2x: warning: {warning}", file=sys.stderr)
            if (recorder is not None and recorder.due(it)) or it == total:
                checkpoint()
    bar.close()
    if recorder is not None:
        recorder.finalize(model, it)  # the final model is always a checkpoint (also after a resume)
    return {"iterations": it, "losses": losses}


def divergence_warning(losses: list[float], n_classes: int, lr: float) -> str:
    """Said after the first epoch (and recorded): a training loss above 1.5 x ln C — worse than
    predicting every class with equal probability — that is not falling is a model diverging at this
    learning rate (timm's EfficientNet-B0 and MobileNetV3 from scratch at the default lr 3e-3 end at
    loss 6.4 and 4.9, ln 10 = 2.3); the whole run would end near chance."""
    if len(losses) < 4:
        return ""
    recent, first = float(np.mean(losses[-max(2, len(losses) // 4) :])), float(np.mean(losses[:2]))
    chance = float(np.log(max(n_classes, 2)))
    if recent <= 1.5 * chance or recent < 0.9 * first:
        return ""
    return (
        f"after the first epoch the training loss is {recent:.2f}, above 1.5 x ln {n_classes} = {1.5 * chance:.2f} "
        f"and not falling: the model is diverging; stop and re-run with a lower learning rate, e.g. lr={lr / 10:g} "
        f"(now {lr:g})"
    )


def _restore(state_path: Path | None, model, opt, sched, seed: int, device) -> tuple[int, list[float]]:
    """(iteration, losses) of the saved training state, restored into model/optimizer/scheduler/RNG;
    (0, []) with the global RNG seeded when there is none."""
    if state_path is None or not state_path.exists():
        torch.manual_seed(seed)
        return 0, []
    st = load_state(state_path, device)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    return st["iteration"], list(st["losses"])


def _step(model, opt, sched, x, y, cfg: RunConfig, it: int, device, world: World) -> float:
    """One optimizer step on batch (x, y) (this rank's part of it); augmentation is a function of
    (seed, iteration)."""
    if cfg.augment:
        x = random_shift(x, seeded_generator(cfg.order_seed, 1_000_003, it))
    x, y = world.part(x).to(device), world.part(y).to(device)
    loss = F.cross_entropy(class_scores(model(x)), y)  # (logits, aux) / {'logits': ...}: the logits
    if not torch.isfinite(loss):
        raise DivergedError(
            f"training loss became {loss.item()} at iteration {it}: the model diverged; lower lr= (now {cfg.lr:g})"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512, device="cpu") -> np.ndarray:
    """Class probabilities (N, C) in eval mode; the model's mode is restored."""
    with eval_mode(model):
        out = [
            torch.softmax(class_scores(model(images[i : i + batch_size].to(device))).float(), 1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(out).numpy()
