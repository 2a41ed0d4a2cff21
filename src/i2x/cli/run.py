"""``i2x run``: train with recording and run every I2X stage into --out DIR."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..analysis.stats import format_effect
from ..config import RunConfig
from ..errors import I2XError
from ..presets import PRESETS
from ..words import pair_item, sanity_text
from .options import add_help, add_quiet, add_settings, given

NAME = "run"
_SETTINGS: list[str] = []


def add_parser(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="train with recording and run every I2X stage into --out DIR",
        usage="i2x run --out DIR [options]   (--help-all: every option)",
        add_help=False,
    )
    add_help(p)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="the paper's settings; other flags override them",
    )
    p.add_argument("--out", required=False, help="run directory to write (required unless --resume DIR)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        nargs="?",
        const=True,
        default=None,
        help="continue the run in DIR (or --out) where it stopped",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    add_quiet(p)
    _SETTINGS[:] = add_settings(p, RunConfig, NAME)


def cmd(a) -> int:
    from ..nn.pipeline import run

    out = a.resume if isinstance(a.resume, str) else a.out
    if out is None:
        raise I2XError("i2x run needs --out DIR (or --resume DIR)")
    _check_resumable_here(out, a.resume is not None)
    t0 = time.perf_counter()
    r = run(
        None,
        out,
        resume=a.resume is not None,
        overwrite=a.overwrite,
        progress=not a.quiet,
        preset=a.preset,
        report=not a.no_report,
        **given(a, _SETTINGS),
    )
    if r is not None:  # under torchrun only rank 0 returns the run
        print(summary(r, time.perf_counter() - t0))
    return 0


def summary(r, seconds: float | None = None) -> str:
    """What a run found, in a few lines: data, model, accuracy, the confused pairs."""
    m, ex, names = r.manifest, r.explanations(), r.classes
    d, mo = m["data"], m["model"]
    lines = [
        f"i2x run -> {r.path}",
        f"  data: {d['dataset']} ({d['train_size']} train, explanation set {d['explain_size']}); "
        f"test: {d['test_source']} ({d['test_size']})",
        f"  model: {mo['name']} (target layer {mo['layer']}, features {mo.get('feature_shape')}); "
        f"{len(m.get('checkpoints', []))} checkpoints",
        f"  test accuracy: {100 * m['metrics']['test_accuracy']:.2f} %",
    ]
    if ex.get("flagged_steps"):
        lines.append(f"  steps without any cluster (W_t = 0, flagged): {ex['flagged_steps']}")
    lines += [f"  WARNING: {w}" for w in m.get("warnings", [])]
    if not ex.get("model_health", {"passed": True})["passed"]:
        lines.append(f"  WARNING: {ex['model_health']['note']}")
    fb = r.dynamics().fallback
    if fb is not None and fb.any():
        lines.append(
            f"  steps where HDBSCAN found no cluster at min_cluster_size {r.config.min_cluster_size}, clustered "
            f"again (fallback): {np.flatnonzero(fb).tolist()}"
        )
    if m["metrics"].get("explained_coverage", 1.0) < 0.995:
        lines.append(
            f"  the class-level dynamics leave out {100 * (1 - m['metrics']['explained_coverage']):.1f} % of the "
            "classes' confidence change (steps where no group of images moved alike)"
        )
    if "saliency_randomisation" in m["metrics"]:
        lines.append("  saliency sanity check: " + sanity_text(m["metrics"]["saliency_randomisation"]))
    place = r.places
    if ex.get("background"):
        lines.append(
            "  background prototypes (the model does not look there; never listed): "
            + ", ".join(f"P-{k} ({place[k]})" for k in ex["background"])
        )
    lines += _pairs_section(r, ex, place)
    if seconds is not None:
        lines.append(f"  wall time: {seconds:.1f} s")
    first = names[ex["pairs"][0]["a"]] if ex["pairs"] else names[0]
    index = r.path / "report" / "index.html"
    lines.append(f"  next: i2x explain {r.path} --class {first}" + (f"   |   open {index}" if index.exists() else ""))
    return "\n".join(lines)


def _pairs_section(r, ex: dict, place: list[str]) -> list[str]:
    """The summary's confused pairs, with the words that say how to read them."""
    names, d, lines = r.classes, r.manifest["data"], []
    sig = ex.get("significance", {})
    stratum = "within-class " if sig.get("null_stratum") == "within-class" else ""
    level = f"{stratum}permutation p < {sig['alpha']}" if sig.get("calibrated") else "uncalibrated signs"
    if sig.get("pair_test") == "samples":
        lines.append(
            "  most confused pairs (test set); for each, the prototype whose pull on the pair changes direction "
            "during training (uncertain) and the first that pulls one way (reliable):"
        )
        lines += [pair_lines(p, names, place) for p in ex["pairs"]]
        lines.append(
            f"  effect: how many standard deviations an image's confidence moves towards that class per standard "
            f"deviation more growth of the prototype than other images of its class show [95 % interval]; listed "
            f"only beyond chance (false discovery rate {sig['alpha']:g} over all pairs)"
        )
    else:
        lines.append(f"  most confused pairs (test set), their top uncertain prototype and reliable ones ({level}):")
        lines += [pair_line(p, names) for p in ex["pairs"]]
    st = ex.get("stability")
    if st and sig.get("pair_test") == "samples":
        lines.append(
            f"  random halves: how often an item is listed when the analysis is redone on {st['resamples']} random "
            "halves of the explanation set (half the images, so less often than on all of them)"
        )
    elif st:
        lines.append(
            f"  listed: items selected in ≥ {100 * st['threshold']:.0f} % of {st['resamples']} half-subsamples of the "
            "explanation set (selection frequency in `i2x explain`)"
        )
    if (
        sig.get("pair_test") == "samples"
        and ex["pairs"]
        and not any(p["uncertain"] or p["reliable"] for p in ex["pairs"])
    ):
        lines.append(
            f"  no prototype role in these pairs passes the within-class test at this scale (explanation set "
            f"{d['explain_size']}): a larger explanation set (--explain-fraction) gives the test more samples"
        )
    elif stratum and ex["pairs"] and not any(p["uncertain"] or p["reliable"] for p in ex["pairs"]):
        n_class = sum(len(p.get("class_level", [])) for p in ex["pairs"])
        lines.append(
            f"  no prototype role in these pairs survives the within-class test{' and resampling' if st else ''} at "
            f"this scale (explanation set {d['explain_size']}): {n_class} class-level associations only say which "
            "prototypes the classes contain"
        )
    return lines


def pair_lines(p: dict, names: list[str], place: list[str]) -> str:
    """One confused pair of the run's summary under the samples test, in words (:mod:`i2x.words`): its errors,
    its top uncertain prototype and the first reliable one."""
    a, b, c = p["a"], p["b"], p.get("confusions", {})
    out = [f"    {names[a]}↔{names[b]}: {c.get('a_to_b', 0)} {names[a]}s taken for {names[b]}s, {c.get('b_to_a', 0)} "
           f"{names[b]}s for {names[a]}s"]  # fmt: skip
    for kind in ("uncertain", "reliable"):
        rows = p[kind]
        more = f" ({len(rows) - 1} more: i2x explain --pair {names[a]} {names[b]})" if len(rows) > 1 else ""
        first = pair_item(rows[0], names, a, b, place[rows[0]["prototype"]]) if rows else "none listed"
        out.append(f"      {kind}: {first}{more}")
    return "\n".join(out)


def pair_line(p: dict, names: list[str]) -> str:
    """One confused pair of the run's summary: its errors, its top uncertain prototype and, where the pair
    lists reliable ones, how many and the first (the pair's top item when no uncertain one is listed)."""
    c, u = p.get("confusions", {}), _top(p["uncertain"], p.get("below_threshold", {}).get("uncertain", 0))
    line = f"    {names[p['a']]}↔{names[p['b']]}: {c.get('a_to_b', 0)}+{c.get('b_to_a', 0)} errors; uncertain: {u}"
    if p.get("reliable"):
        t = p["reliable"][0]
        share = None if t.get("frequency") is None else f"{100 * t['frequency']:.0f} %"
        if "effect" in t:  # the samples test: effect and how often half-samples list it
            e = f" (effect {format_effect(t)}" + (f", listed in {share} of half-samples)" if share else ")")
        else:
            e = f", selected in {share} of resamples" if share else ""
        line += f"; reliable: {len(p['reliable'])} listed, first P-{t['prototype']} favouring {names[t['favours']]}{e}"
    return line


def sign_changes(n: int) -> str:
    """``1 sign change`` / ``3 sign changes``."""
    return f"{n} sign change{'s' * (n != 1)}"


def _top(rows: list[dict], below: int = 0) -> str:
    if not rows:
        return f"none stable ({below} significant but selected too rarely)" if below else "none significant"
    t = rows[0]
    p = "" if t.get("p_value") is None else f"p = {t['p_value']:.2g}, "
    f = "" if t.get("frequency") is None else f"selected in {100 * t['frequency']:.0f} % of resamples, "
    if "effect" in t:
        p = f"effect {format_effect(t)}, " + p.replace("p = ", f"q = {t['q_value']:.2g}, p = ")
        f = f.replace("selected", "listed").replace("resamples", "half-samples")
    return (
        f"P-{t['prototype']} ({p}{f}{sign_changes(t['sign_flips'])}, in {100 * t['contain_a']:.0f} % / "
        f"{100 * t['contain_b']:.0f} % of the two classes)"
    )


def _check_resumable_here(out: str, resume: bool) -> None:
    """A run of the caller's own model cannot be resumed from the command line: say how instead."""
    from .. import store

    path = Path(out) / store.MANIFEST
    if not (resume and path.exists()):
        return
    m = store.read_manifest(out)
    if m.get("config", {}).get("model") == "":
        name = m.get("model", {}).get("name", "your model")
        raise I2XError(
            f"{out} is a run of your own model ({name}), which the command line cannot rebuild: resume it from "
            f"Python with the same model and data, i2x.run(model=my_model, train=..., out={str(out)!r}, resume=True)"
        )
