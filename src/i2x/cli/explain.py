"""``i2x explain DIR --class C | --pair A B``: the structured explanation in words (paper Fig. 4 / 5)."""

from __future__ import annotations

from ..analysis.stats import format_effect, format_p
from ..errors import I2XError
from ..rundir import Run
from ..words import pair_item
from .run import sign_changes

NAME = "explain"


def add_parser(sub) -> None:
    p = sub.add_parser(NAME, help="print the structured explanation of a class or a class pair")
    p.add_argument("run_dir")
    g = p.add_mutually_exclusive_group(required=False)  # neither: the run's summary
    g.add_argument("--class", dest="cls", help="class name or index")
    g.add_argument("--pair", nargs=2, metavar=("A", "B"), help="two class names or indices")


def cmd(a) -> int:
    print(explain_text(Run(a.run_dir).check_complete(), a.cls, a.pair))
    return 0


def explain_text(r, cls=None, pair=None) -> str:
    """The structured explanation of run ``r`` (a :class:`~i2x.Run` or its folder) in words, as ``i2x explain``
    prints it: of class ``cls`` (a name or an index) and/or the ``pair`` (two names or indices); neither: the
    run's summary.

    >>> print(i2x.explain_text("runs/demo", pair=(4, 9)))  # doctest: +SKIP
    """
    r = r if isinstance(r, Run) else Run(r).check_complete()
    if cls is None and pair is None:
        from .run import summary

        return summary(r)
    out = []
    if cls is not None:
        out += class_text(r, cls)
    if pair is not None:
        out += pair_text(r, pair)
    return "\n".join(out)


def class_text(r: Run, cls: str) -> list[str]:
    ex, names = r.explanations(), r.classes
    its = ex.get("checkpoints") or r.manifest.get("checkpoints", [])
    c = r.class_index(cls, "class")
    e = ex["classes"].get(names[c])
    if e is None:
        raise I2XError(f"--class {cls}: class {names[c]} has no sample in the explanation set")
    health = ex.get("model_health", {"passed": True})
    out = [f"WARNING: {health['note']}: {'; '.join(health['reasons'])}"] if not health["passed"] else []
    place = r.places
    out += [
        f"Class {names[c]} ({e['n_samples']} images in the explanation set)",
        "  shared prototypes (in every image of the class, more often than in the other classes): "
        + _ps(e["shared"], place),
    ]
    if e.get("shared_not_class_specific"):
        out.append(
            "    in every image but as often elsewhere (not class-specific): "
            + _ps(e["shared_not_class_specific"], place)
        )
    for i, g in enumerate(e["specialized"]):
        out.append(
            f"  specialized, sub-group {i + 1} ({g['size']} image{'s' * (g['size'] != 1)}): "
            + (_ps(g["prototypes"], place) if g["prototypes"] else "none beyond the shared ones")
            + (f"; not class-specific: {_ps(g['not_class_specific'], place)}" if g.get("not_class_specific") else "")
        )
    n = sum(e.get("below_threshold", {}).values())
    if n:
        b = e["below_threshold"]
        out.append(
            f"  left out as unstable (found in too few random halves of the explanation set): {b['shared']} shared, "
            f"{b['specialized']} specialized, {b['key']} key-checkpoint prototypes"
        )
    if not e["key_checkpoints"]:
        out.append(
            "  no key checkpoint: at no training step did a prototype pass the test as carrying a large change of "
            "this class's confidence"
        )
    for kc in e["key_checkpoints"]:
        t = kc["step"]
        span = f"step {t}" + (f" (iterations {its[t]}→{its[t + 1]})" if len(its) > t + 1 else "")
        out.append(f"  key checkpoint, {span}: the confidence of the {names[c]}s moved {kc['delta_confidence']:+.3f}")
        for p in kc["prototypes"]:
            verb = "raises" if p["weight"] > 0 else "lowers"
            opp = ", ".join(f"{names[o['class']]} ({o['weight']:+.3g})" for o in p["against"]) or "no class"
            out.append(
                f"      P-{p['prototype']} ({place[p['prototype']]}) {verb} {names[c]} (weight {p['weight']:+.3g}) "
                f"against {opp}"
            )
    return out


def pair_text(r: Run, pair: list[str]) -> list[str]:
    names = r.classes
    a, b = (r.class_index(x, "pair") for x in pair)
    if a == b:
        raise I2XError("--pair needs two different classes")
    pe, flagged = r.pair_explanation(a, b), r.dynamics().flagged
    T = len(flagged)
    cm, sig = r.arrays("evaluate")["confusion"], r.explanations().get("significance", {})
    na, nb = names[a], names[b]
    out = [f"Pair {na} vs {nb}: on the test set {cm[a, b]} {na}s were taken for {nb}s and {cm[b, a]} {nb}s for {na}s"]
    if sig.get("pair_test") == "samples":
        return out + _samples_pair_text(r, pe, a, b, flagged)
    else:
        null = "within-class " if sig.get("null_stratum") == "within-class" else ""
        test = f"{null}permutation p × {T} steps < {sig['alpha']}" if sig.get("calibrated") else "every non-zero sign"
        out.append(
            f"  contribution d_t[k] = W_t[k,{na}] − W_t[k,{nb}] per step: + favours {na}, - favours {nb} at a "
            f"significant step ({test}), · not significant, × not measured (no cluster, W_t = 0)"
        )
    out.append("  reliable prototypes (significant, one direction at every significant step):")
    for p in pe["reliable"]:
        out.append(
            f"    P-{p['prototype']}: favours {names[p['favours']]}, effect {format_effect(p)}{_p(p)}; "
            f"{_contain(p, na, nb)}  {_signs(p, a, flagged)}"
        )
    out += _below(pe, "reliable")
    both = "" if sig.get("pair_test") == "samples" else "in both classes, "
    out.append(f"  uncertain prototypes ({both}towards {na} at some steps and {nb} at others):")
    for p in pe["uncertain"]:
        steps = ", ".join(f"T{s}" for s in p["sign_changes_at"])
        out.append(
            f"    P-{p['prototype']}: effect {format_effect(p)}{_p(p)}; {sign_changes(p['sign_flips'])} (at {steps}); "
            f"{_contain(p, na, nb)}  {_signs(p, a, flagged)}"
        )
    out += _below(pe, "uncertain")
    if pe.get("below_min_effect"):
        out.append(
            f"  ({pe['below_min_effect']} more prototypes are significant for this pair but with effects below "
            f"{r.config.explain.min_effect:g} at every significant step: not listed)"
        )
    if "class_level" in pe:
        out.append(
            "  class-level associations (significant against permuting all samples, not within class: the prototype "
            "belongs to the classes, its link to their confidence is not shown):"
        )
        for p in pe["class_level"]:
            pv = format_p(p["p_value_class_level"])
            out.append(
                f"    P-{p['prototype']}: {p['pattern']}, favours {names[p['favours']]} (class-level p = {pv}; "
                f"{_contain(p, na, nb)})"
            )
        if not pe["class_level"]:
            out.append("    none")
    bg = r.explanations().get("background", [])
    if bg:
        out.append("  background prototypes (never listed): " + ", ".join(f"P-{k}" for k in bg))
    return out


def _samples_pair_text(r: Run, pe: dict, a: int, b: int, flagged) -> list[str]:
    """The pair's lists under the samples test, in words (:func:`i2x.words.pair_item`), with the steps' signs."""
    names, sig = r.classes, r.explanations().get("significance", {})
    na, nb = names[a], names[b]
    place = r.places
    out = [
        f"  A prototype is listed when, among images of one class, those in which it grew more during a training "
        f"step also moved more towards {na} (or {nb}), beyond chance (false discovery rate {sig['alpha']:g} over "
        "all pairs). effect: standard deviations of that move per standard deviation of growth, with a 95 % "
        f"interval. The steps: + towards {na}, - towards {nb}, · no evidence.",
        "  uncertain (the pull changes direction during training; i2x finetune curates the images of the first):",
    ]
    for kind in ("uncertain", "reliable"):
        if kind == "reliable":
            out.append("  reliable (one direction throughout):")
        for p in pe[kind]:
            out.append(f"    {pair_item(p, names, a, b, place[p['prototype']])}; q = {format_p(p['q_value'])}")
            out.append(f"      steps {_signs(p, a, flagged)}")
        out += _below(pe, kind)
    if pe.get("below_min_effect"):
        out.append(
            f"  ({pe['below_min_effect']} more prototypes pass the test with effects below "
            f"{r.config.explain.min_effect:g} at every step: not listed)"
        )
    bg = r.explanations().get("background", [])
    if bg:
        out.append("  background prototypes (carry no evidence, never listed): " + ", ".join(f"P-{k}" for k in bg))
    return out


def _ps(protos: list[int], place: list[str] | None = None) -> str:
    """``P-3 (top), P-7 (centre)``: prototypes with where they sit."""
    return ", ".join(f"P-{k}" + (f" ({place[k]})" if place else "") for k in protos) or "none"


def _p(p: dict) -> str:
    """`` (p = 0.013)``, with the q-value and selection frequency when the row has them:
    `` (q = 0.004, p = 0.001, listed in 92 % of half-samples)``."""
    f = "" if p.get("frequency") is None else f", listed in {100 * p['frequency']:.0f} % of half-samples"
    q = format_p(p.get("q_value"), missing="", template="q = {}, ")
    return format_p(p.get("p_value"), missing="", template=" (" + q + "p = {}" + f + ")")


def _below(e: dict, kind: str) -> list[str]:
    """``none`` under an empty list, and how many items the stability threshold left out."""
    n = e.get("below_threshold", {}).get(kind, 0)
    left = [f"    ({n} more pass the test but are found in too few random halves: left out)"] if n else []

    return ([] if e[kind] else ["    none"]) + left


def _signs(p: dict, a: int, flagged) -> str:
    s = ["×" if f else "·" for f in flagged]
    for st in p["significant_steps"]:
        s[st["step"]] = "+" if st["favours"] == a else "-"
    return "".join(s)


def _contain(p: dict, na: str, nb: str) -> str:
    return f"in {100 * p['contain_a']:.0f} % of {na}, {100 * p['contain_b']:.0f} % of {nb}"
