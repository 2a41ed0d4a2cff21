"""``i2x analyze DIR``: stages 2-7 on records your own loop wrote, or on saved state_dicts."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, resolve
from ..errors import I2XError
from .options import add_settings, given
from .run import summary

NAME = "analyze"
_SETTINGS: list[str] = []


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="stages 2-7 on records your own loop wrote, or on saved state_dicts")
    p.add_argument("run_dir", help="directory with record/ckpt_it*.npz (from i2x.Recorder) or to write into")
    p.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="folder of saved state_dicts (*.pt/*.pth) to record first "
        "(with --model and --dataset: the architecture and the data they come from)",
    )
    _SETTINGS[:] = add_settings(p.add_argument_group("settings (i2x.RunConfig)"), RunConfig, NAME)


def cmd(a) -> int:
    from ..nn.pipeline import analyze, analyze_checkpoints, load_model

    over = given(a, _SETTINGS)
    if a.checkpoints is None:
        if not (Path(a.run_dir) / "weights" / "final.pt").exists():
            raise I2XError(
                f"{a.run_dir} has no weights/final.pt: pass --checkpoints DIR --model NAME --dataset NAME, "
                "or call i2x.analyze(run_dir, model=...) from Python"
            )
        print(summary(analyze(a.run_dir, load_model(a.run_dir), train=_run_train_set(a.run_dir, over), **over)))
        return 0
    from ..data import explanation_indices, splits_for
    from ..nn.models import build_model

    if not (a.model and a.dataset):
        raise I2XError("--checkpoints needs --model NAME and --dataset NAME (the architecture and data they come from)")
    cfg = resolve(over)
    sp = splits_for(cfg)
    x, y = sp.train.tensors(explanation_indices(sp.train.labels, cfg.explain_fraction, cfg.explain_seed))
    model = build_model(cfg.model, in_channels=sp.train.shape[0], num_classes=len(sp.train.classes))
    r = analyze_checkpoints(
        a.checkpoints,
        model,
        a.run_dir,
        images=x,
        labels=y.numpy(),
        classes=sp.train.classes,
        test=sp.test.tensors(),
        train=sp.train if cfg.prototype_fit == "train" else None,
        config=cfg,
    )
    print(summary(r))
    return 0


def _run_train_set(run_dir: str, over: dict):
    """The training set of a built-in run whose prototypes will be fitted on it again (None when
    the prototypes stage is kept: loading the data would be wasted)."""
    from ..data import splits_for
    from ..rundir import Run, stage_done

    r = Run(run_dir)
    cfg = r.config.replace(**over)
    built_in = r.manifest.get("data", {}).get("dataset") == cfg.dataset  # not the caller's train= data
    redo = not stage_done(run_dir, r.manifest, "prototypes", cfg)
    return splits_for(cfg).train if cfg.prototype_fit == "train" and built_in and redo else None
