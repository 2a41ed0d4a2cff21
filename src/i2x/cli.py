"""Command line: ``i2x run | explain | report | finetune``. A thin layer over the Python API.

Bad input exits with status 2 and one line naming the argument and the fix; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .errors import I2XError


def _add_run(sub) -> None:
    from .config import RunConfig
    from .presets import PRESETS

    d = RunConfig()
    # Config flags default to None ("not given"): the value then comes from --preset, else from
    # RunConfig (shown in brackets), so any flag overrides a preset.
    p = sub.add_parser("run", help="train with recording and run every I2X stage into --out DIR")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the paper's settings (docs/PRESETS.md); other flags override its values")
    p.add_argument("--out", required=False, help="run directory to write (required unless --resume DIR)")
    p.add_argument("--resume", metavar="DIR", nargs="?", const=True, default=None,
                   help="continue the run in DIR (or in --out) from its last complete checkpoint/stage")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--dataset", help=f"mnist5k (built-in), mnist, digits, cifar10, imagefolder:PATH [{d.dataset}]")
    p.add_argument("--train-subset", type=int, help="train on a stratified subset of N images (seed --explain-seed) [all]")
    p.add_argument("--test-subset", type=int, help="test on a stratified subset of N images [all]")
    p.add_argument("--model", help=f"smallcnn, resnet50, inceptionv3 [{d.model}]")
    p.add_argument("--layer", default=None, help="target layer name (default: last spatial block)")
    p.add_argument("--epochs", type=int, help=f"[{d.epochs}]")
    p.add_argument("--batch-size", type=int, help=f"[{d.batch_size}]")
    p.add_argument("--lr", type=float, help=f"[{d.lr}]")
    p.add_argument("--every", type=int, help=f"iterations between checkpoints [{d.every}]")
    p.add_argument("--every-epoch", action="store_true", default=None,
                   help="one checkpoint per epoch instead of every --every iterations (paper, CIFAR-10)")
    p.add_argument("--prototypes", type=int, help=f"K, the number of prototypes [{d.prototypes}]")
    p.add_argument("--seed", type=int, help=f"model init / data order seed [{d.seed}]")
    p.add_argument("--explain-seed", type=int, help=f"[{d.explain_seed}]")
    p.add_argument("--explain-fraction", type=float, help=f"[{d.explain_fraction}]")
    p.add_argument("--method", help=f"saliency method (gradcam, gradcam++, layercam, xgradcam) [{d.method}]")
    p.add_argument("--target", choices=["label", "pred"], help=f"[{d.target}]")
    p.add_argument("--min-cluster-size", type=int, help=f"[{d.min_cluster_size}]")
    p.add_argument("--ridge-lambda", type=float, help=f"[{d.ridge_lambda}]")
    p.add_argument("--no-augment", action="store_true", help="train without random shifts")
    p.add_argument("--data-dir", default=None, help="folder with MNIST/raw etc. (default: $I2X_DATA_DIR)")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    p.add_argument("--device", help=f"auto, cpu or cuda [{d.device}]")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_run(a) -> int:
    from .pipeline import run

    out = a.out
    resume = a.resume is not None
    if isinstance(a.resume, str):
        out = a.resume
    if out is None:
        raise I2XError("i2x run needs --out DIR (or --resume DIR)")
    cfg = run_config(a, out if resume else None)
    t0 = time.perf_counter()
    r = run(cfg, out, resume=resume, overwrite=a.overwrite, progress=not a.quiet)
    if not a.no_report:
        from .report import report

        report(r.path)
    print(summary(r, time.perf_counter() - t0))
    return 0


def run_config(a, resume_dir=None):
    """RunConfig from flags given > --preset > (on --resume: the run's own config) > defaults."""
    from .config import RunConfig
    from .presets import config_from

    if a.every is not None and a.every_epoch:
        raise I2XError("--every and --every-epoch exclude each other: give one")
    given = dict(dataset=a.dataset, model=a.model, layer=a.layer, epochs=a.epochs, batch_size=a.batch_size,
                 lr=a.lr, every=a.every, every_epoch=a.every_epoch, prototypes=a.prototypes, seed=a.seed,
                 explain_seed=a.explain_seed, explain_fraction=a.explain_fraction, method=a.method,
                 target=a.target, min_cluster_size=a.min_cluster_size, ridge_lambda=a.ridge_lambda,
                 augment=False if a.no_augment else None, data_dir=a.data_dir,
                 download=True if a.download else None, device=a.device,
                 train_subset=a.train_subset, test_subset=a.test_subset)
    if a.every is not None:
        given["every_epoch"] = False  # --every overrides a preset's once-per-epoch schedule
    manifest = Path(resume_dir) / "manifest.json" if resume_dir is not None else None
    if a.preset is None and manifest is not None and manifest.exists():
        from .store import read_manifest

        old = read_manifest(Path(resume_dir)).get("config") or {}
        return RunConfig.from_dict({**old, **{k: v for k, v in given.items() if v is not None}}).validate()
    return config_from(a.preset, **given)


def summary(r, seconds: float | None = None) -> str:
    m = r.manifest
    ex = r.explanations()
    names = r.classes
    lines = [f"i2x run -> {r.path}",
             f"  data: {m['data']['dataset']} ({m['data']['train_size']} train, explanation set {m['data']['explain_size']}); "
             f"test: {m['data']['test_source']} ({m['data']['test_size']})",
             f"  model: {m['model']['name']} (target layer {m['model']['layer']}, features {m['model'].get('feature_shape')}); "
             f"{len(m.get('checkpoints', []))} checkpoints",
             f"  test accuracy: {100 * m['metrics']['test_accuracy']:.2f} %"]
    if ex.get("flagged_steps"):
        lines.append(f"  steps without HDBSCAN clusters (W_t = 0, flagged): {ex['flagged_steps']}")
    lines.append("  most confused pairs (test set) and their top uncertain prototype:")
    for p in ex["pairs"]:
        c = p.get("confusions", {})
        top = p["uncertain"][0] if p["uncertain"] else None
        u = (f"P-{top['prototype']} (score {top['score']:.3g}, {top['sign_flips']} sign flips)" if top
             else "none (no prototype of both classes changes sign)")
        lines.append(f"    {names[p['a']]}↔{names[p['b']]}: {c.get('a_to_b', 0)}+{c.get('b_to_a', 0)} errors; uncertain: {u}")
    if seconds is not None:
        lines.append(f"  wall time: {seconds:.1f} s")
    lines.append(f"  next: i2x explain {r.path} --class {names[ex['pairs'][0]['a']] if ex['pairs'] else names[0]}"
                 + (f"   |   open {r.path / 'report' / 'index.html'}" if (r.path / "report" / "index.html").exists() else ""))
    return "\n".join(lines)


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="print the structured explanation of a class or a class pair")
    p.add_argument("run_dir")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--class", dest="cls", help="class name or index")
    g.add_argument("--pair", nargs=2, metavar=("A", "B"), help="two class names or indices")


def _class_index(names: list[str], c: str, arg: str) -> int:
    if c in names:
        return names.index(c)
    if c.isdigit() and int(c) < len(names):
        return int(c)
    raise I2XError(f"{arg} {c!r} is not a class of this run; classes: {', '.join(names)}")


def _signs(d: np.ndarray) -> str:
    return "".join("+" if v > 0 else "-" if v < 0 else "·" for v in d)


def explain_text(r, cls: str | None = None, pair: list[str] | None = None) -> str:
    """The structured explanation in words (paper Fig. 4 / Fig. 5)."""
    from .explain import ExplainConfig, pair_contribution, pair_explanation

    ex = r.explanations()
    names = r.classes
    its = ex.get("checkpoints") or r.manifest.get("checkpoints", [])
    out = []
    if cls is not None:
        c = _class_index(names, cls, "--class")
        e = ex["classes"].get(names[c])
        if e is None:
            raise I2XError(f"--class {cls}: class {names[c]} has no sample in the explanation set")
        out.append(f"Class {names[c]} ({e['n_samples']} samples in the explanation set)")
        out.append("  shared prototypes (in every sample): " + (", ".join(f"P-{k}" for k in e["shared"]) or "none"))
        for i, g in enumerate(e["specialized"]):
            out.append(f"  specialized, sub-group {i + 1} ({g['size']} samples): "
                       + (", ".join(f"P-{k}" for k in g["prototypes"]) or "none beyond the shared ones"))
        if not e["key_checkpoints"]:
            out.append("  no key checkpoint: no step changed its confidence with a key prototype carrying it")
        for kc in e["key_checkpoints"]:
            t = kc["step"]
            span = f"T{t}→T{t + 1}" + (f" (iteration {its[t]}→{its[t + 1]})" if len(its) > t + 1 else "")
            out.append(f"  {span}: confidence of {names[c]} {kc['delta_confidence']:+.3f}")
            for p in kc["prototypes"]:
                verb = "raises" if p["weight"] > 0 else "lowers"
                opp = ", ".join(f"{names[o['class']]} ({o['weight']:+.3g})" for o in p["against"]) or "no class"
                out.append(f"      P-{p['prototype']} {verb} {names[c]} (W={p['weight']:+.3g}) against {opp}")
    if pair is not None:
        a, b = (_class_index(names, x, "--pair") for x in pair)
        if a == b:
            raise I2XError("--pair needs two different classes")
        dyn = r.dynamics()
        ia = r.arrays("intensity")
        lab = r.explain_set()["labels"]
        pe = pair_explanation(dyn.W, ia["contain"], lab, a, b, ExplainConfig(**ex.get("config", {})))
        d = pair_contribution(dyn.W, a, b)
        cm = r.arrays("evaluate")["confusion"]
        out.append(f"Pair {names[a]} vs {names[b]}: test errors {names[a]}→{names[b]} {cm[a, b]}, {names[b]}→{names[a]} {cm[b, a]}")
        out.append(f"  contribution d_t[k] = W_t[k,{names[a]}] − W_t[k,{names[b]}] per step (+ favours {names[a]}, − favours {names[b]}, · no effect)")
        out.append("  reliable prototypes (one sign throughout):")
        for p in pe["reliable"] or []:
            out.append(f"    P-{p['prototype']}: favours {names[p['favours']]} (Σd={p['total_contribution']:+.3g}; in {100 * p['contain_a']:.0f} % of {names[a]}, {100 * p['contain_b']:.0f} % of {names[b]})  {_signs(d[:, p['prototype']])}")
        if not pe["reliable"]:
            out.append("    none")
        out.append("  uncertain prototypes (in both classes, contribution changes sign):")
        for p in pe["uncertain"] or []:
            steps = ", ".join(f"T{s}" for s in p["sign_changes_at"])
            out.append(f"    P-{p['prototype']}: score {p['score']:.3g}, {p['sign_flips']} sign flips (at {steps}); in {100 * p['contain_a']:.0f} % of {names[a]}, {100 * p['contain_b']:.0f} % of {names[b]}  {_signs(d[:, p['prototype']])}")
        if not pe["uncertain"]:
            out.append("    none")
    return "\n".join(out)


def cmd_explain(a) -> int:
    from .pipeline import Run, check_complete

    r = Run(a.run_dir)
    check_complete(r)
    print(explain_text(r, a.cls, a.pair))
    return 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="stages 2-7 on records your own loop wrote, or on saved state_dicts")
    p.add_argument("run_dir", help="directory with record/ckpt_it*.npz (from i2x.Recorder) or to write into")
    p.add_argument("--checkpoints", metavar="DIR", help="folder of saved state_dicts (*.pt/*.pth) to record first")
    p.add_argument("--model", help="built-in architecture of the checkpoints (smallcnn, resnet50, inceptionv3)")
    p.add_argument("--dataset", help="dataset the checkpoints were trained on (gives the explanation set)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--layer", default=None)
    p.add_argument("--prototypes", type=int, help="K")
    p.add_argument("--min-cluster-size", type=int)
    p.add_argument("--device", default="auto")


def cmd_analyze(a) -> int:
    from .pipeline import analyze, analyze_checkpoints, load_model

    over = {k: v for k, v in (("prototypes", a.prototypes), ("min_cluster_size", a.min_cluster_size)) if v is not None}
    if a.checkpoints is None:
        if not (Path(a.run_dir) / "weights" / "final.pt").exists():
            raise I2XError(f"{a.run_dir} has no weights/final.pt: pass --checkpoints DIR --model NAME --dataset NAME, "
                           "or call i2x.analyze(run_dir, model=...) from Python")
        r = analyze(a.run_dir, load_model(a.run_dir), layer=a.layer, device=a.device, **over)
    else:
        from .data import explanation_indices, load_splits
        from .models import build_model
        from .presets import config_from

        if not (a.model and a.dataset):
            raise I2XError("--checkpoints needs --model NAME and --dataset NAME (the architecture and data they come from)")
        cfg = config_from(None, model=a.model, dataset=a.dataset, data_dir=a.data_dir, train_subset=a.train_subset, **over)
        sp = load_splits(cfg.dataset, cfg.data_dir, seed=cfg.seed, train_subset=cfg.train_subset,
                         subset_seed=cfg.explain_seed)
        eidx = explanation_indices(len(sp.train), cfg.explain_fraction, cfg.explain_seed)
        x, y = sp.train.tensors(eidx)
        model = build_model(cfg.model, in_channels=sp.train.shape[0], num_classes=len(sp.train.classes))
        r = analyze_checkpoints(a.checkpoints, model, a.run_dir, images=x, labels=y.numpy(), classes=sp.train.classes,
                                test=sp.test.tensors(), layer=a.layer, device=a.device, config=cfg)
    print(summary(r))
    return 0


COMMANDS = {"run": (_add_run, cmd_run), "explain": (_add_explain, cmd_explain),
            "analyze": (_add_analyze, cmd_analyze)}


def _register_stage_commands() -> None:
    # report and finetune own their subcommands (add_parser/cmd live next to the code they drive)
    from .finetune import add_parser as finetune_parser
    from .finetune import cmd as finetune_cmd
    from .report import add_parser as report_parser
    from .report import cmd as report_cmd

    COMMANDS.setdefault("report", (report_parser, report_cmd))
    COMMANDS.setdefault("finetune", (finetune_parser, finetune_cmd))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    _register_stage_commands()
    p = argparse.ArgumentParser(prog="i2x", description="I2X: why does the classifier look there?")
    p.add_argument("--version", action="version", version=f"i2x {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the subcommand
    argv = [x for x in argv if x != "--debug"]
    p = build_parser()
    a = p.parse_args(argv)
    a.debug = debug
    try:
        return COMMANDS[a.command][1](a)
    except I2XError as exc:
        if a.debug:
            raise
        print(f"i2x {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with `i2x run --resume DIR`", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
