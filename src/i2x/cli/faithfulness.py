"""``i2x faithfulness DIR``: does the final model use the prototypes the explanation names? (deletion test)"""

from __future__ import annotations

from ..analysis.stats import format_p
from ..config import FaithfulnessConfig
from .options import add_run_command, given

NAME = "faithfulness"
_SETTINGS: list[str] = []


def add_parser(sub) -> None:
    _SETTINGS[:] = add_run_command(
        sub,
        NAME,
        "delete each prototype's region against random deletion (final model)",
        FaithfulnessConfig,
        "output file (default DIR/faithfulness.json)",
    )


def cmd(a) -> int:
    from ..nn.faithfulness import faithfulness

    res = faithfulness(a.run_dir, out=a.out, progress=not a.quiet, **given(a, _SETTINGS))
    print(summary_lines(res), end="")
    print(f"wrote {res['path']} ({res['timings']['total']:.1f} s)")
    return 0


def summary_lines(res: dict) -> str:
    """The rank correlation, the share beating random and one line per reported pair."""
    s = res["summary"]
    rc, br = s["rank_correlation"], s["beats_random"]
    rho = (
        "n/a"
        if rc["rho"] is None
        else f"{rc['rho']:+.3f} (p = {format_p(rc['p_value'])}, {rc['n_pairs']} (k, c) pairs)"
    )
    share = "n/a" if br["share"] is None else f"{br['share']:.0%}"
    lines = [
        f"fill {res['config']['fill']}, {res['config']['random_draws']} random draws, {s['deletions']} deletions",
        f"explanation S[k,c] vs deletion effect, Spearman rho: {rho}",
        f"prototypes whose deletion beats random on the own class: {share} ({br['count']} of {br['tested']}; "
        f"{br['count_holm']} after Holm)",
    ]
    for p in res["pairs"]:
        na, nb = p["names"]
        ab, ba = _flip(p["a_to_b"]), _flip(p["b_to_a"])
        lines.append(f"pair {na}/{nb}, prototype {p['prototype']}: {na}→{nb} {ab}; {nb}→{na} {ba}")
        if p["effect_on_a"] is not None:
            ea, eb = p["effect_on_a"], p["effect_on_b"]
            lines.append(
                f"  deleting it vs random: conf({na}) {ea:+.3f}, conf({nb}) {eb:+.3f} (images of {na} or {nb})"
            )
    if not res["pairs"]:
        lines.append("no reported pair has an uncertain prototype")
    return "\n".join(lines) + "\n"


def _flip(f: dict) -> str:
    if not f["n_images"]:
        return "no image"
    p = format_p(f["p_value"], missing="n/a")
    return f"{f['deleted_rate']:.1%} vs random {f['random_rate']:.1%} (p = {p}, n = {f['n_images']})"
