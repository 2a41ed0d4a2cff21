"""Training with recording, resumable from the last checkpoint bit for bit.

Data order and augmentation are functions of (seed, epoch) and (seed, iteration), so a
resumed run replays exactly the batches the uninterrupted run would have seen; the global
torch RNG (dropout) is saved in the training state at every checkpoint.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DivergedError, RunDirError
from .record import Recorder


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0


def _gen(*keys: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(hash(tuple(keys)) & 0x7FFF_FFFF_FFFF_FFFF)  # hash of an int tuple is stable across runs
    return g


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift every image by its own random integer offset in [-max_shift, max_shift] (edges replicated)."""
    n, _, h, w = x.shape
    xp = F.pad(x, (max_shift,) * 4, mode="replicate")                              # (N, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)                       # (N, H)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)                       # (N, W)
    out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def iterations_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises RuntimeError/EOFError/pickle errors on truncation
        raise RunDirError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
                          "delete it and run `i2x run --resume` to redo that part") from None


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
          recorder: Recorder | None = None, state_path: str | Path | None = None,
          device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Train ``model`` in place; record at checkpoints; save a resumable state at each.

    If ``state_path`` exists, training resumes from it. Returns {"iterations", "losses"}.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    model.to(device)
    n = len(labels)
    ipe = iterations_per_epoch(n, cfg.batch_size)
    total = cfg.epochs * ipe
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1))
    it, losses = 0, []
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        st = load_state(state_path, device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["torch_rng"])
        it, losses = st["iteration"], list(st["losses"])
    else:
        torch.manual_seed(cfg.seed)

    def checkpoint():
        if recorder is not None:
            recorder.step(model, it)
        if state_path is not None:
            _save_state(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                                     "iteration": it, "losses": losses, "config": cfg.__dict__})

    if it == 0 and (recorder is None or recorder.due(0)):
        checkpoint()
    # mininterval: a log file (CI, nohup) gets a line per second, not one per iteration
    bar = tqdm(total=total, initial=it, desc="train+record", unit="it", disable=not progress, leave=False,
               mininterval=1.0)
    while it < total:
        epoch, pos = divmod(it, ipe)
        perm = torch.randperm(n, generator=_gen(cfg.seed, epoch))
        model.train()
        for b in range(pos, ipe):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = images[idx]
            if cfg.augment:
                x = random_shift(x, _gen(cfg.seed, 1_000_003, it))
            x, y = x.to(device), labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise DivergedError(f"training loss became {loss.item()} at iteration {it}: the model diverged; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            it += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
            if (recorder is not None and recorder.due(it)) or it == total:
                checkpoint()
    bar.close()
    if recorder is not None:
        recorder.finalize(model, it)  # the final model is always a checkpoint (also after a resume)
    return {"iterations": it, "losses": losses}


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512, device="cpu") -> np.ndarray:
    """Class probabilities (N, C) in eval mode; the model's mode is restored."""
    was = model.training
    model.eval()
    try:
        out = [torch.softmax(model(images[i : i + batch_size].to(device)).float(), 1).cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out).numpy()
