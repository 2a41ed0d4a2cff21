"""``i2x compare RUN_A RUN_B --out DIR``: two training runs side by side (paper §3.4, Fig. 6-8)."""

from __future__ import annotations

NAME = "compare"


def add_parser(sub) -> None:
    p = sub.add_parser(
        NAME,
        help="two finished runs side by side (e.g. another --data-seed): prototypes matched, "
        "key prototypes, pair explanations and confusion matrices in run A's numbering",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run directory whose prototype numbering is used")
    p.add_argument(
        "run_b",
        metavar="RUN_B",
        help="run directory to compare with it (same data and model; the same explanation set, or another one "
        "of the same trained model, e.g. another --explain-seed)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: compare.json, index.html, fig/")
    p.add_argument("--no-html", action="store_true", help="write compare.json only")


def cmd(a) -> int:
    import time

    from ..compare_runs import compare

    t0 = time.perf_counter()
    res = compare(a.run_a, a.run_b, out=a.out, html=not a.no_html)
    for line in summary_lines(res.data, res.top_pairs(3)):
        print(line)
    written = "compare.json" + ("" if a.no_html else ", index.html and fig/")
    print(f"wrote {written} to {res.path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def summary_lines(data: dict, top: list[dict]) -> list[str]:
    from ..analysis.compare import BASIS_TEXT

    s = data["matching_summary"]
    q = s["overlap_quartiles"]
    st = s["status"]
    lines = [BASIS_TEXT[data["matching_basis"]]] if data.get("matching_basis") in BASIS_TEXT else []
    lines += [
        f"matched {s['matched']} of {s['k_a']} prototypes of run A ({100 * s['matched_share']:.0f} %, overlap "
        f"≥ {data['threshold']:g}); {st['split']} split, {st['merged']} merged, {st['unmatched']} unmatched; "
        f"{s['unmatched_b']} of {s['k_b']} of run B without a match",
        "overlap with the Hungarian partner: quartiles " + " / ".join(f"{x:.2f}" for x in q),
        f"test errors: run A {data['confusion']['errors'][0]}, run B {data['confusion']['errors'][1]}",
    ]
    for key, what in (("pair_roles", "pair roles"), ("class_lists", "shared/specialized prototypes")):
        g = data.get("agreement", {}).get(key)
        if g is not None:
            lines.append(f"agreement of the listed {what}: {_agreement_text(g)}")
    if not top:
        lines.append("no pair explained differently by the two runs")
    else:
        lines.append("pairs whose strategy differs most:")
        lines += [f"  {p['why']}" for p in top]
    return lines


def _agreement_text(g: dict) -> str:
    n_a, n_b = g["items"]
    if g["jaccard"] is None:
        return "neither run lists any"
    ch = g["random_matching"]
    chance = f"; random matching {ch['mean']:.2f} (95th percentile {ch['p95']:.2f})" if ch else ""
    return f"Jaccard {g['jaccard']:.2f} ({g['shared']} shared of {n_a} / {n_b}){chance}"
