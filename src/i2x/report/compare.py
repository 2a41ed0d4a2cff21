"""The page of ``i2x compare``: two runs side by side (paper §3.4, Fig. 6-8) as ``DIR/index.html``
with ``DIR/fig/NAME.png``, referenced relatively so the folder opens from disk.

It draws the numbers of :func:`i2x.compare_runs.comparison` (the ``compare.json`` dict,
passed in; of the analysis, only its p-value formatter is imported) and reads the two runs' saved arrays for
the images, assignment maps and ridge coefficients (numpy + matplotlib, no torch, no model).
Prototypes are named and coloured in run A's numbering: B's prototypes take the colour of their
match in A; unmatched ones of B are grey.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm, to_hex, to_rgb
from matplotlib.figure import Figure

from .. import store
from ..analysis.compare import BASIS_TEXT
from ..analysis.stats import format_p
from ..rundir import Run
from . import figures as F
from .load import display_images
from .page import css

E = html.escape
UNMATCHED_GREYS = ("#4d4d4d", "#8c8c8c", "#262626", "#b3b3b3", "#666666")
EXAMPLE_ROWS = 6  # matched prototypes shown with example cells of both runs
EXAMPLES_PER_RUN = 4  # images per run and prototype
DETAIL_PAIRS = 6  # pairs drawn with a figure (the ones whose strategy differs most)


# --- figures ---------------------------------------------------------------------------------


def matching_figure(data: dict, colors: np.ndarray) -> Figure:
    """Left: the overlap matrix, B's columns in the order of their match in A (matched pairs on the
    diagonal). Right: each prototype of A's overlap with its Hungarian partner, threshold dashed."""
    J = np.asarray(data["overlap"], dtype=np.float64)
    rows, thr = data["matching"], data["threshold"]
    ka, kb = J.shape
    order = [r["b"] for r in rows if r["b"] is not None]
    order += sorted(set(range(kb)) - set(order), key=lambda j: (int(J[:, j].argmax()), j))
    h = max(3.0, min(9.0, 0.15 * ka + 1.2))
    fig = F.new_figure(10, h, left=0.75, right=0.3, bottom=0.75, wspace=0.3)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1.3, 1))
    im = ax1.imshow(J[:, order], cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    fs = 6 if max(ka, kb) > 24 else 8
    step_a, step_b = max(1, ka // 40), max(1, kb // 40)
    ax1.set_yticks(range(0, ka, step_a), [f"P-{i}" for i in range(0, ka, step_a)], fontsize=fs)
    ax1.set_xticks(range(0, kb, step_b), [f"P-{order[c]}" for c in range(0, kb, step_b)], rotation=90, fontsize=fs)
    ax1.set_ylabel("run A prototype")
    ax1.set_xlabel("run B prototype (ordered by its match in A)")
    fig.colorbar(im, ax=ax1, shrink=0.8, pad=0.02, label="overlap (Jaccard)")
    y = np.arange(ka)
    ov = np.array([r["overlap"] for r in rows])
    bar_c = [colors[r["a"]] if r["b"] is not None else (0.8, 0.8, 0.8) for r in rows]
    ax2.barh(y, ov, color=bar_c, height=0.8)
    ax2.axvline(thr, color="black", ls="--", lw=1)
    for r in rows:
        tag = ("bg " if r["background_a"] else "") + ("" if r["status"] == "matched" else r["status"])
        tag += f" (best: P-{r['best_b']}, {r['best_overlap']:.2f})" if r["b"] is None else ""
        if tag:
            ax2.text(r["overlap"] + 0.01, r["a"], tag.strip(), va="center", fontsize=6.5, color="#444")
    ax2.set_ylim(ka - 0.5, -0.5)
    ax2.set_yticks(range(0, ka, step_a), [f"P-{i}" for i in range(0, ka, step_a)], fontsize=fs)
    ax2.set_xlim(0, 1.15)
    ax2.set_xlabel(f"overlap with its Hungarian partner (dashed: threshold {thr:g})")
    return fig


def confusions_figure(cm_a: np.ndarray, cm_b: np.ndarray, classes: list[str]) -> Figure:
    """Paper Fig. 8: both confusion matrices (errors as share of the true class, one colour scale)
    and their difference B − A in counts (red: more errors in B)."""
    C = len(classes)
    names = [n[:8] for n in classes]
    s = 0.3 + 0.3 * C
    fig = F.new_figure(3 * s + 2.4, s + 0.9, left=0.6, right=0.6, bottom=0.6, top=0.35, wspace=0.35)
    axes = fig.subplots(1, 3)
    rates = [cm / np.maximum(cm.sum(1, keepdims=True), 1) for cm in (cm_a, cm_b)]
    for r in rates:
        np.fill_diagonal(r, np.nan)
    vmax = max(max(np.nanmax(r) if np.isfinite(r).any() else 0 for r in rates), 1e-9)
    diff = cm_b - cm_a
    off = diff.astype(float)
    np.fill_diagonal(off, np.nan)
    lim = max(np.nanmax(np.abs(off)) if np.isfinite(off).any() else 0, 1)
    panels = [
        (rates[0], cm_a, "Reds", None, "run A"),
        (rates[1], cm_b, "Reds", None, "run B"),
        (off, diff, "RdBu_r", TwoSlopeNorm(0, -lim, lim), "difference B − A"),
    ]
    for ax, (img, num, cmap, norm, title) in zip(axes, panels, strict=True):
        kw = {"norm": norm} if norm is not None else {"vmin": 0, "vmax": vmax}
        ax.imshow(img, cmap=cmap, interpolation="nearest", **kw)
        ax.imshow(np.where(np.eye(C, dtype=bool), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
        if C <= 20:
            for i in range(C):
                for j in range(C):
                    if num[i, j] and (i != j or num is not diff):
                        txt = f"{num[i, j]:+d}" if num is diff else str(num[i, j])
                        dark = i != j and abs(img[i, j]) > 0.6 * (lim if num is diff else vmax)
                        ax.text(
                            j,
                            i,
                            txt,
                            ha="center",
                            va="center",
                            fontsize=6.5 if C > 10 else 8,
                            color="white" if dark else "black",
                        )
        ax.set_title(title)
        ax.set_xticks(range(C), names, fontsize=7)
        ax.set_yticks(range(C), names, fontsize=7)
        ax.set_xlabel("predicted class")
    axes[0].set_ylabel("true class")
    return fig


def pair_figure(p: dict, runs: tuple[Run, Run], colors: tuple, classes: list[str]) -> Figure:
    """d_t[k] = W_t[k,a] − W_t[k,b] of each run's uncertain (solid) and reliable (dashed)
    prototypes, named in A's numbering; the dotted line marks the run's onset (end of that step)."""
    a, b = p["a"], p["b"]
    fig = F.new_figure(10, 3.2, left=0.8, right=0.2, bottom=0.55, wspace=0.12)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, key, run, cols in zip(axes, ("run_a", "run_b"), runs, colors, strict=True):
        W, its = run.dynamics().W, np.asarray(run.manifest["checkpoints"])
        side, own = p[key], "a" if key == "run_a" else "b"
        x = its[1 : len(W) + 1]
        ax.axhline(0, color="black", lw=0.8)
        for role, ls in (("uncertain", "-"), ("reliable", "--")):
            for r in side[role]:
                k = r[own]
                ax.plot(x, W[:, k, a] - W[:, k, b], ls=ls, lw=1.8, color=cols[k], label=f"{_label(r, own)} ({role})")
        if side["onset"] is not None:
            ax.axvline(x[side["onset"]], color="#555", ls=":", lw=1)
        ax.set_title(f"{'run A' if own == 'a' else 'run B'}: ▲ {classes[a]}  ▼ {classes[b]}", loc="left", fontsize=9)
        ax.set_xlabel("training iteration (end of step)")
        if side["uncertain"] or side["reliable"]:
            ax.legend(fontsize=6.5, framealpha=0.8, loc="best")
        else:
            ax.text(0.5, 0.5, "no uncertain or reliable prototype", transform=ax.transAxes, ha="center", color="#666")
            ax.set_xlim(x[0], x[-1])
    axes[0].set_ylabel(f"d_t = W[k,{classes[a]}] − W[k,{classes[b]}]")
    return fig


def _pname(k: int | None) -> str:
    return "—" if k is None else f"P-{k}"


def _label(ref: dict, own: str) -> str:
    if own == "a" or ref["a"] is not None:
        return f"P-{ref['a']}"
    return f"B's P-{ref['b']}"


def examples_figure(rows: list[dict], images: np.ndarray, assigns: tuple, colors: tuple) -> Figure:
    """Per matched prototype (A's P-i = B's P-j): the images of E where the two share most cells,
    A's cells of P-i outlined on the left, B's cells of P-j on the right (the same images)."""
    n, s = EXAMPLES_PER_RUN, F.scale_for(images.shape[2])
    aa, ab = assigns
    tiles, labels = [], []
    for r in rows:
        i, j = r["a"], r["b"]
        shared = ((aa == i) & (ab == j)).sum((1, 2))
        pick = [int(x) for x in np.argsort(-shared, kind="stable")[:n] if shared[x] > 0]
        left = [F.tile(images[x], aa[x] == i, colors[0][i], scale=s) for x in pick]
        right = [F.tile(images[x], ab[x] == j, colors[1][j], scale=s) for x in pick]
        pad = [None] * (n - len(pick))
        tiles.append(left + pad + right + pad)
        labels.append((f"P-{i} = B's P-{j}", f"overlap {r['overlap']:.2f}, {r['status']}"))
    if all(t is None for row in tiles for t in row):
        tiles[0][0] = np.ones((images.shape[2] * s, images.shape[3] * s, 3))
    img = F.grid(tiles, gap_after=n)
    header = [(0.25, "run A: cells of P-i"), (0.75, "run B: cells of its match")]
    return F.image_figure(img, labels, [colors[0][r["a"]] for r in rows], header=header, label_w=1.9)


def run_colors(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(A's colours by A's number, B's colours by B's number: the colour of its match, else a grey)."""
    ka, kb = len(data["matching"]), len(data["overlap"][0]) if data["overlap"] else 0
    ca = F.proto_colors(ka)
    b_to_a = {r["b"]: r["a"] for r in data["matching"] if r["b"] is not None}
    unmatched = [j for j in range(kb) if j not in b_to_a]
    cb = np.zeros((kb, 3))
    for j in range(kb):
        cb[j] = ca[b_to_a[j]] if j in b_to_a else to_rgb(UNMATCHED_GREYS[unmatched.index(j) % len(UNMATCHED_GREYS)])
    return ca, cb


# --- the page --------------------------------------------------------------------------------


class ComparePage:
    def __init__(self, data: dict, ra: Run, rb: Run, fw: F.FigureWriter):
        self.data, self.runs, self.fw = data, (ra, rb), fw
        self.classes = data["classes"]
        self.colors = run_colors(data)
        self.hex = tuple([to_hex(c) for c in cs] for cs in self.colors)

    def figure(self, fig, name: str, caption: str, alt: str) -> str:
        src = self.fw.save(fig, name)
        return f'<figure><img src="{src}" alt="{E(alt)}" loading="eager"><figcaption>{caption}</figcaption></figure>'

    def chip(self, ref: dict, run: str) -> str:
        """A prototype in A's numbering; for run B, its own number follows ("P-20 = B's P-11")."""
        if run == "a":
            col, text = self.hex[0][ref["a"]], f"P-{ref['a']}"
            tail = f' <span class="note">= B\'s P-{ref["b"]}</span>' if ref.get("b") is not None else ""
        else:
            col = self.hex[1][ref["b"]]
            text = f"P-{ref['a']}" if ref["a"] is not None else f"B's P-{ref['b']}"
            tail = f' <span class="note">(B\'s P-{ref["b"]})</span>' if ref["a"] is not None else " (no match)"
        return f'<span class="p" style="--c:{col};--t:{F.text_on(to_rgb(col))}">{text}</span>{tail}'

    def name(self, c: int) -> str:
        return E(self.classes[c])

    def header(self) -> str:
        rows = []
        for key, label in (("a", "run A"), ("b", "run B")):
            r = self.data["runs"][key]
            acc = r.get("test_accuracy")
            errs = self.data["confusion"]["errors"][0 if key == "a" else 1]
            seeds = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["seeds"].items())
            rows.append(
                f"<tr><th>{label}</th><td><code>{E(r['path'])}</code></td><td>{E(seeds)}</td>"
                f"<td class=num>{'n/a' if acc is None else f'{100 * acc:.2f} %'}</td><td class=num>{errs}</td></tr>"
            )
        return (
            "<table><tr><th></th><th>run directory</th><th>seeds</th><th class=num>test accuracy</th>"
            f"<th class=num>test errors</th></tr>{''.join(rows)}</table>"
        )

    def b_assignments(self) -> np.ndarray:
        """Run B's prototypes on A's explanation set: B's own assignments (the same E), or A's when both
        runs have the same prototypes and explained other images (they assign every cell alike)."""
        ra, rb = self.runs
        if "b_of_a" in self.data:  # compare.json: B's number of each of A's prototypes (the same centroids)
            return np.asarray(self.data["b_of_a"])[ra.prototypes().assignments]
        return rb.prototypes().assignments

    def summary(self) -> str:
        s = self.data["matching_summary"]
        q = s["overlap_quartiles"]
        top = [p for p in self.data["pairs"] if p["difference"]["score"] > 0][:3]
        items = "".join(f'<li><a href="#pair-{p["a"]}-{p["b"]}">{E(p["why"])}</a></li>' for p in top)
        text = BASIS_TEXT.get(self.data.get("matching_basis"))
        basis = f'<p class="note">{E(text)}.</p>' if text else ""
        return (
            f'<section id="summary"><h2>Summary</h2>{self.header()}{basis}'
            f"<p><b>{s['matched']} of {s['k_a']}</b> prototypes of run A ({100 * s['matched_share']:.0f} %) have a "
            f"match in run B (overlap ≥ {self.data['threshold']:g}); overlap with the Hungarian partner: quartiles "
            f"{' / '.join(f'{x:.2f}' for x in q)}; {s['status']['split']} split, {s['status']['merged']} merged, "
            f"{s['status']['unmatched']} unmatched; {s['unmatched_b']} prototypes of B without a match.</p>"
            "<p><b>Pairs whose strategy differs most</b> (score = evidence distance + onset gap, 0…2):</p>"
            + (f"<ol>{items}</ol>" if items else '<p class="note">none: both runs explain every pair alike.</p>')
            + "</section>"
        )

    def matching(self) -> str:
        d = self.data
        fig = self.figure(
            matching_figure(d, self.colors[0]),
            "matching",
            "Prototype matching. Left: overlap of every prototype of A (rows) with every prototype of B "
            "(columns, ordered by their match, so matched pairs lie on the diagonal); overlap = share of the "
            "(sample, cell) positions of E covered by both among those covered by either. Right: each prototype "
            f"of A's overlap with its Hungarian partner; grey bars are below the threshold {d['threshold']:g} "
            "(reported unmatched); bg = background prototype.",
            "prototype matching",
        )
        body = "".join(
            f"<tr><td>{self.chip({'a': r['a'], 'b': None}, 'a')}</td>"
            f"<td>{_pname(r['b'])}</td><td class=num>{r['overlap']:.2f}</td>"
            f"<td>P-{r['best_b']} ({r['best_overlap']:.2f})</td><td class=num>{r['chance']:.3f}</td>"
            f"<td>{r['status']}{' + ' + ', '.join(f'P-{j}' for j in r['also_b']) if r['also_b'] else ''}</td>"
            f"<td>{'yes' if r['background_a'] else ''}</td></tr>"
            for r in d["matching"]
        )
        table = (
            "<details><summary>matching table</summary><table><tr><th>A</th><th>B</th><th class=num>overlap</th>"
            "<th>best in B</th><th class=num>chance</th><th>status</th><th>background</th></tr>"
            f"{body}</table></details>"
        )
        return f'<section id="matching"><h2>Prototype matching</h2>{fig}{table}</section>'

    def confusion(self) -> str:
        c = self.data["confusion"]
        fig = self.figure(
            confusions_figure(np.asarray(c["run_a"]), np.asarray(c["run_b"]), self.classes),
            "confusion",
            "Paper Fig. 8: confusion matrices of run A and run B on the test set (rows: true class; colour: share "
            "of the row's images predicted as that column, errors only, one scale) and their difference B − A "
            "in counts (red: more errors in run B, blue: fewer).",
            "confusion matrices and difference",
        )
        rows = "".join(
            f"<tr><td>{self.name(x['true'])} → {self.name(x['predicted'])}</td><td class=num>{x['run_a']}</td>"
            f"<td class=num>{x['run_b']}</td><td class=num>{x['run_b'] - x['run_a']:+d}</td></tr>"
            for x in c["largest_changes"]
        )
        tbl = (
            "<table><tr><th>true → predicted</th><th class=num>A</th><th class=num>B</th><th class=num>B − A</th>"
            f"</tr>{rows}</table>"
            if rows
            else '<p class="note">The two confusion matrices are equal.</p>'
        )
        return f'<section id="confusion"><h2>Confusion matrices</h2>{fig}{tbl}</section>'

    def pairs(self) -> str:
        out = []
        for n, p in enumerate(self.data["pairs"]):
            a, b = p["a"], p["b"]
            ca, cb = p["confusions"]["run_a"], p["confusions"]["run_b"]
            fig = ""
            if n < DETAIL_PAIRS:
                fig = self.figure(
                    pair_figure(p, self.runs, self.colors, self.classes),
                    f"pair-{a}-{b}",
                    f"Contribution d_t[k] = W_t[k,{self.name(a)}] − W_t[k,{self.name(b)}] of each run's uncertain "
                    "(solid) and reliable (dashed) prototypes, named in run A's numbering (a prototype of B takes "
                    "the name and colour of its match). Dotted: the onset, the end of the first step at which a "
                    "reliable prototype has a significant sign.",
                    f"contributions {self.classes[a]} vs {self.classes[b]} in both runs",
                )
            d = p["difference"]
            out.append(
                f'<h3 id="pair-{a}-{b}">{self.name(a)} ↔ {self.name(b)} <span class="note">(confused in run '
                f"{' and '.join(x.upper() for x in p['confused_in'])}; test errors {self.name(a)}→{self.name(b)} / "
                f"{self.name(b)}→{self.name(a)}: A {ca['a_to_b']} / {ca['b_to_a']}, B {cb['a_to_b']} / "
                f"{cb['b_to_a']})</span></h3>"
                f"<p><b>score {d['score']:.2f}</b> (evidence distance {d['evidence_distance']:.2f}, "
                f"{d['shared_evidence']} shared of {d['evidence'][0]} / {d['evidence'][1]}; onset gap "
                f"{d['onset_gap']:.2f}). {E(p['why'])}</p>{fig}<div class=grid2>"
                f"<div><h4>run A</h4>{self.pair_table(p['run_a'], 'a', a, b)}</div>"
                f"<div><h4>run B</h4>{self.pair_table(p['run_b'], 'b', a, b)}</div></div>"
            )
        if not out:
            out.append('<p class="note">Neither run confuses a pair of classes.</p>')
        return (
            '<section id="pairs"><h2>Confused pairs in both runs</h2><p class="note">Every pair confused in either '
            "run, explained in both (each run by its own rule and p-values), the most different first. "
            "Steps are checkpoint steps t→t+1.</p>" + "".join(out) + "</section>"
        )

    def pair_table(self, side: dict, run: str, a: int, b: int) -> str:
        rows = [
            f"<tr><td>{role}</td><td>{self.chip(r, run)}</td><td class=num>{format_p(r['p_value'])}</td>"
            f"<td>{self.name(r['favours']) if role == 'reliable' else str(r['sign_flips']) + ' flips'}</td>"
            f"<td class=num>{'—' if r['first_step'] is None else r['first_step']}</td></tr>"
            for role in ("uncertain", "reliable")
            for r in side[role]
        ]
        onset = "no reliable prototype" if side["onset"] is None else f"separates from step {side['onset']}"
        if not rows:
            return f'<p class="note">No uncertain or reliable prototype; {onset}.</p>'
        return (
            "<table><tr><th>role</th><th>prototype</th><th class=num>p</th><th>favours</th>"
            f"<th class=num>first step</th></tr>{''.join(rows)}</table><p class=note>{onset}</p>"
        )

    def key_prototypes(self) -> str:
        rows = []
        for c in self.data["key_prototypes"]:
            cells = []
            for run, key in (("a", "run_a"), ("b", "run_b")):
                order = c[key]["order"]
                cells.append(
                    ", ".join(f"{self.chip(r, run)} <span class=note>T{r['step']}</span>" for r in order[:6])
                    or '<span class="note">none</span>'
                )
            same = "same first" if c["same_first"] else "differs"
            rows.append(
                f"<tr><td>{self.name(c['class'])}</td><td>{cells[0]}</td><td>{cells[1]}</td><td>{same}</td></tr>"
            )
        return (
            '<section id="classes"><h2>Key prototypes per class</h2><p class="note">The order in which prototypes '
            "became key for the class (paper Fig. 4; Tt = the step at which it first did), in run A's numbering; the "
            "first one is the prototype the run learned the class with first.</p>"
            "<table><tr><th>class</th><th>run A</th><th>run B</th><th>first key</th></tr>"
            + "".join(rows)
            + "</table></section>"
        )

    def examples(self) -> str:
        d = self.data
        want = [p[s][x] for p in d["pairs"][:3] for s in ("run_a", "run_b") for x in ("uncertain", "reliable")]
        named = [ref["a"] for rs in want for ref in rs if ref["a"] is not None]
        matched = {r["a"]: r for r in d["matching"] if r["b"] is not None}
        order = list(dict.fromkeys([k for k in named if k in matched]))
        order += sorted(set(matched) - set(order), key=lambda k: -matched[k]["overlap"])
        rows = [matched[k] for k in order[:EXAMPLE_ROWS]]
        if not rows:
            return (
                '<section id="examples"><h2>Matched prototypes</h2><p class="note">No matched prototype.</p></section>'
            )
        ra, rb = self.runs
        d = ra.manifest["data"]
        images = display_images(ra.explain_set()["images"], d.get("mean"), d.get("std"))
        fig = self.figure(
            examples_figure(rows, images, (ra.prototypes().assignments, self.b_assignments()), self.colors),
            "matched-examples",
            "Matched prototypes on the same images of E: per row, the images where the two prototypes share most "
            "cells, run A's cells of the prototype outlined on the left, run B's cells of its match on the right. "
            "The prototypes named in the most different pairs come first.",
            "matched prototypes with example cells from both runs",
        )
        return f'<section id="examples"><h2>Matched prototypes</h2>{fig}</section>'


def build(data: dict, ra: Run, rb: Run, fw: F.FigureWriter) -> str:
    pg = ComparePage(data, ra, rb, fw)
    sections = [pg.summary(), pg.matching(), pg.confusion(), pg.pairs(), pg.key_prototypes(), pg.examples()]
    toc = [
        ("summary", "Summary"),
        ("matching", "Matching"),
        ("confusion", "Confusion"),
        ("pairs", "Pairs"),
        ("classes", "Key prototypes"),
        ("examples", "Matched prototypes"),
    ]
    title = f"I2X comparison: {Path(data['runs']['a']['path']).name} vs {Path(data['runs']['b']['path']).name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{E(title)}</title><link rel="icon" href="data:,"><style>{css()}</style></head><body>'
        f'<header class="top"><h1>{E(title)}</h1>'
        "<p>Two training runs side by side (paper §3.4): prototypes matched by the cells they cover, then "
        "every result of run B in run A's numbering.</p></header>"
        '<nav class="toc">' + "".join(f'<a href="#{i}">{t}</a>' for i, t in toc) + "</nav>"
        "<main>" + "".join(sections) + "</main></body></html>\n"
    )


def write_page(data: dict, ra: Run, rb: Run, out: Path) -> Path:
    """Write ``out/index.html`` and ``out/fig/*.png`` (earlier figures there are removed first)."""
    import matplotlib

    fig_dir = Path(out) / "fig"
    if fig_dir.is_dir():
        for f in fig_dir.glob("*.png"):
            f.unlink()
    with matplotlib.rc_context(F.RC):
        text = build(data, ra, rb, F.FigureWriter(fig_dir, svg=False))
    return store.atomic_write(Path(out) / "index.html", text)
