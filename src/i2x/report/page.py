"""The report page: sections of figures and tables assembled into one HTML file."""

from __future__ import annotations

import html
from importlib import resources

import numpy as np

from ..analysis.stats import format_effect, format_p
from ..words import pair_item, places, sanity_text
from . import figures as F
from .load import RunData, finetune_summary

E = html.escape
MAX_EXAMPLE_ROWS = 8  # prototypes shown with examples per class (shared first, then specialized)
MAX_CURVES = 6  # key prototypes drawn per class curve
PAIR_EXAMPLE_ROWS = 3  # prototypes with saliency examples per pair
MAX_CLASS_FIGS = 20  # with more classes, figures only for these many + the classes of confused pairs


class Page:
    def __init__(self, d: RunData, fw: F.FigureWriter):
        self.d, self.fw = d, fw
        self.colors = F.proto_colors(d.k)
        self.hex = F.proto_hex(d.k)
        self.ex = d.explanations
        self.pair_ids = {(p["a"], p["b"]): f"pair-{p['a']}-{p['b']}" for p in self.ex.get("pairs", [])}
        self.place = places(d.assignments, d.k)  # where each prototype sits, in words

    # helpers -------------------------------------------------------------------------------
    def chip(self, k: int) -> str:
        where = f' title="P-{k}: {self.place[k]}"' if k < len(self.place) else ""
        return f'<span class="p"{where} style="--c:{self.hex[k]};--t:{F.text_on(self.colors[k])}">P-{k}</span>'

    def chips(self, ks) -> str:
        return " ".join(self.chip(int(k)) for k in ks) or '<span class="note">none</span>'

    def figure(self, fig, name: str, caption: str, alt: str) -> str:
        src = self.fw.save(fig, name)
        return (
            f'<figure><img src="{src}" alt="{E(alt)}" loading="eager"><figcaption>{caption}'
            f'<span class="dl">[<a href="fig/{name}.png">png</a>'
            + (f' · <a href="fig/{name}.svg">svg</a>' if self.fw.svg else "")
            + "]</span></figcaption></figure>"
        )

    def name(self, c: int) -> str:
        return E(self.d.classes[c])

    def step_text(self, t: int) -> str:
        its = self.d.iterations
        return f"T{t}→T{t + 1} (it. {its[t]}→{its[t + 1]})"

    # sections ------------------------------------------------------------------------------
    def warning_rows(self) -> list[tuple[str, str]]:
        """The run's warnings, and the flag of a model that failed a health check."""
        rows = [("warning", f'<b class="warn">{E(w)}</b>') for w in self.d.manifest.get("warnings", [])]
        health = self.d.explanations.get("model_health", {"passed": True})
        if not health["passed"]:
            rows.append(("model health", f'<b class="warn">{E(health["note"])}</b>'))
        check = self.d.manifest.get("metrics", {}).get("saliency_randomisation")
        if check:
            rows.append(("saliency sanity check", E(sanity_text(check))))
        return rows

    def prototypes_text(self, cfg: dict, met: dict) -> str:
        """The summary's prototypes row: K, the rows of Eq. 8 (HDBSCAN clusters or samples), τ, λ, flagged steps."""
        d = self.d
        rows = (
            "rows of Eq. 8: every sample of E (aggregate = samples, no HDBSCAN)"
            if self.d.samples_as_rows
            else f"HDBSCAN min cluster size {cfg.get('min_cluster_size')}"
        )
        coverage = (
            f"; steps with a fitted W_t cover {100 * met['explained_coverage']:.1f} % of the class-confidence change"
            if "explained_coverage" in met
            else ""
        )
        return (
            f"K = {d.k}; {rows}, τ = {cfg.get('tau')}, ridge λ = {cfg.get('ridge_lambda')} "
            f"({cfg.get('ridge_scale', 'absolute')}); steps without clusters (W_t = 0): "
            f"{int(d.flagged.sum())} of {len(d.flagged)}{coverage}"
        )

    def summary(self) -> str:
        d, m = self.d, self.d.manifest
        cfg, data, model, met = m.get("config", {}), m.get("data", {}), m.get("model", {}), m.get("metrics", {})
        its = d.iterations
        rows = [
            (
                "data",
                f"{E(str(data.get('dataset')))}: {data.get('train_size')} training images, explanation set E = "
                f"{data.get('explain_size')} (seed {cfg.get('explain_seed')}); "
                f"test: {E(str(data.get('test_source', '')))} "
                f"({data.get('test_size')} images); classes: {E(', '.join(d.classes))}",
            ),
            (
                "model",
                f"{E(str(model.get('name')))}, target layer <code>{E(str(model.get('layer')))}</code>"
                f"{E(_layout(model.get('target')))}, feature map "
                f"{E(str(model.get('feature_shape')))}; {cfg.get('epochs')} epochs, "
                f"batch {cfg.get('batch_size')}, seed {cfg.get('seed')}",
            ),
            (
                "checkpoints",
                f"{len(its)} (iterations {its[0]}–{its[-1]}, every {cfg.get('every')}); saliency "
                f"{E(str(cfg.get('method')))} of the {'true label' if cfg.get('target') == 'label' else 'prediction'}",
            ),
            ("prototypes", self.prototypes_text(cfg, met)),
            ("background", self.background_text()),
            ("significance", E(self.significance_text())),
            ("test accuracy", f"<b>{100 * met['test_accuracy']:.2f} %</b>" if "test_accuracy" in met else "n/a"),
            *self.warning_rows(),
        ]
        tbl = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        cm = d.confusion
        pairs = met.get("confused_pairs") or []
        prow = []
        for p in pairs:
            a, b = p["a"], p["b"]
            pid = self.pair_ids.get((a, b)) or self.pair_ids.get((b, a))
            label = f"{self.name(a)} ↔ {self.name(b)}"
            link = f'<a href="#{pid}">{label}</a>' if pid else label
            prow.append(
                f"<tr><td>{link}</td>"
                f"<td class=num>{cm[a, b]}</td><td class=num>{cm[b, a]}</td><td class=num>{p['count']}</td></tr>"
            )
        ptbl = (
            (
                "<table><tr><th>pair</th><th class=num>a→b</th><th class=num>b→a</th><th class=num>a↔b</th></tr>"
                + "".join(prow)
                + "</table>"
            )
            if prow
            else '<p class="note">no confusions on the test set.</p>'
        )
        fig = self.figure(
            F.confusion_figure(d),
            "confusion",
            "Confusion matrix of the final model on the test set (paper Fig. 8). Rows are true classes; "
            "colour is the share of the row's images predicted as that column (errors only, the diagonal is grey); "
            "numbers are counts. Dark cells are the pairs worth reading below.",
            "confusion matrix",
        )
        return (
            f'<section id="summary"><h2>Summary</h2><table>{tbl}</table><div class="grid2"><div>{fig}</div>'
            f"<div><h3>Most confused pairs (test set)</h3>{ptbl}"
            "<p class=note>Pairs with a section below are linked; "
            "each section explains the pair by the prototypes whose contribution changes sign during training."
            "</p></div></div></section>"
        )

    def gallery(self) -> str:
        d = self.d
        figs = F.gallery_figures(d, self.colors)
        per = -(-d.k // len(figs))
        parts = []
        for i, fig in enumerate(figs):
            a, b = i * per, min(d.k, (i + 1) * per) - 1
            parts.append(
                self.figure(
                    fig,
                    f"prototypes-{i + 1}",
                    f"Prototypes P-{a}…P-{b}: each row shows the positions of E nearest the prototype's centroid, "
                    "one image each, with the target-layer cell outlined in the prototype's colour (the cell, not the "
                    "full receptive field, which is larger). "
                    "Under each name: the classes whose samples contain it most often. "
                    f'Read a row as "what this prototype looks like": {self.looks_like()} …',
                    f"prototype gallery {i + 1}",
                )
            )
        return (
            '<section id="prototypes"><h2>Prototype gallery</h2>'
            f'<p class="note">{d.k} prototypes = K-Means clusters of the '
            "final model's target-layer feature vectors (paper Eq. 3). "
            "Every figure colours a prototype the same way.</p>" + "".join(parts) + "</section>"
        )

    def classes(self) -> str:
        d, ex = self.d, self.ex.get("classes", {})
        out, nav = [], []
        drawn = set(range(MAX_CLASS_FIGS)) | {c for p in self.ex.get("pairs", []) for c in (p["a"], p["b"])}
        for c, cname in enumerate(d.classes):
            e = ex.get(cname)
            if e is None:
                continue
            nav.append(f'<a href="#class-{c}">{E(cname)}</a>')
            out.append(self.one_class(c, e, figs=c in drawn))
        return (
            f'<section id="classes"><h2>Per class: how the model learned it</h2><p class="classnav">{"".join(nav)}</p>'
            + "".join(out)
            + "</section>"
        )

    def one_class(self, c: int, e: dict, figs: bool = True) -> str:
        d = self.d
        kcs = e.get("key_checkpoints", [])
        key = []
        for kc in kcs:
            for p in kc["prototypes"]:
                if p["prototype"] not in key:
                    key.append(p["prototype"])
        spec = sorted({k for g in e.get("specialized", []) for k in g["prototypes"]})
        m = d.labels == c
        if not key:  # no key step: the shared/specialized prototypes with most final intensity
            cand = list(dict.fromkeys(list(e.get("shared", [])) + spec))
            key = sorted(cand, key=lambda k: -d.intensity[-1, m, k].mean())
        curves = key[:MAX_CURVES]
        fig = (
            ""
            if not figs
            else self.figure(
                F.class_curves_figure(d, c, curves, [kc["step"] for kc in kcs], self.colors),
                f"class-{c}-curves",
                f"Paper Fig. 3 for class {self.name(c)}. "
                f"Top: mean confidence of {self.name(c)} over its {e['n_samples']} samples in E "
                "at each checkpoint. "
                "Bottom: mean intensity (saliency summed over the prototype's cells) of its key prototypes "
                f"{self.chips(curves)}. Yellow bands K1, K2 … are the key steps of the table below; hatched grey steps "
                "had no HDBSCAN cluster (W_t = 0). Look for a prototype whose intensity rises where confidence jumps.",
                f"confidence and intensity of class {d.classes[c]}",
            )
        )
        timeline = self.class_timeline(c, kcs)
        shared = e.get("shared", [])
        groups = "".join(
            f"<li>sub-group {i + 1} ({g['size']} samples): {self.chips(g['prototypes'])}"
            f"{self.not_specific(g.get('not_class_specific', []))}</li>"
            for i, g in enumerate(e.get("specialized", []))
        )
        ex_rows = list(dict.fromkeys(list(shared) + spec))[:MAX_EXAMPLE_ROWS]
        exfig = ""
        if ex_rows and figs:
            img, _ = F.examples_image(d, ex_rows, [np.flatnonzero(m)], self.colors, 5, False, 1.0)
            labels = [(f"P-{k}", "shared" if k in shared else "specialized") for k in ex_rows]
            exfig = self.figure(
                F.image_figure(img, labels, [self.colors[k] for k in ex_rows], label_w=1.1),
                f"class-{c}-prototypes",
                f"Shared and specialized prototypes of {self.name(c)}: "
                f"per row, the samples of {self.name(c)} with the largest "
                "final intensity of that prototype, its cells outlined in its colour.",
                f"prototype examples of class {d.classes[c]}",
            )
        return (
            f'<h3 id="class-{c}">Class {self.name(c)} '
            f'<span class="note">({e["n_samples"]} samples in E)</span></h3>{fig}'
            "<p><b>Annotated timeline of key checkpoints</b> (paper Fig. 4): "
            f"steps where the mean confidence of {self.name(c)} "
            "changed by ≥ 20 % of its largest change and one of its prototypes carried it; "
            "opposing classes have W of the other sign.</p>"
            f"{timeline}<p><b>Shared prototypes</b> (in every sample, more often than in the other classes): "
            f"{self.chips(shared)}{self.not_specific(e.get('shared_not_class_specific', []))}</p>"
            f"<p><b>Specialized prototypes</b> (sub-groups by containment):</p><ul>{groups}</ul>{exfig}"
        )

    def not_specific(self, protos: list[int]) -> str:
        if not protos:
            return ""
        return f' <span class="note">(also, but as often in other classes: {self.chips(protos)})</span>'

    def class_timeline(self, c: int, kcs: list[dict]) -> str:
        """The table of class ``c``'s key checkpoints (paper Fig. 4), or a note that it has none."""
        rows = []
        for i, kc in enumerate(kcs):
            for j, p in enumerate(kc["prototypes"]):
                verb = "raises" if p["weight"] > 0 else "lowers"
                against = ", ".join(f"{self.name(o['class'])} ({o['weight']:+.2g})" for o in p["against"]) or "—"
                lead = (
                    (
                        f"<td rowspan={len(kc['prototypes'])}>K{i + 1}</td>"
                        f"<td rowspan={len(kc['prototypes'])}>{self.step_text(kc['step'])}</td>"
                        f"<td rowspan={len(kc['prototypes'])} class=num>{kc['delta_confidence']:+.3f}</td>"
                    )
                    if j == 0
                    else ""
                )
                rows.append(
                    f"<tr>{lead}<td>{self.chip(p['prototype'])} {verb} {self.name(c)} "
                    f"(W = {p['weight']:+.2g})</td><td>{against}</td></tr>"
                )
        timeline = (
            (
                "<table><tr><th>#</th><th>step</th><th class=num>Δ conf.</th><th>prototype</th>"
                "<th>against (opposing classes, W)</th></tr>" + "".join(rows) + "</table>"
            )
            if rows
            else '<p class="note">No key checkpoint: no step changed this class\'s confidence '
            "with one of its prototypes carrying the change.</p>"
        )
        return timeline

    def pair_nav(self) -> str:
        """Links to every pair's heading (the page is long: 10 classes and their pairs run to ~17,000 px)."""
        links = [f'<a href="#{i}">{self.name(a)}↔{self.name(b)}</a>' for (a, b), i in self.pair_ids.items()]
        return f'<p class="classnav">{"".join(links)}</p>' if links else ""

    def pairs(self) -> str:
        d = self.d
        out = []
        vmax = float(np.percentile(d.saliency, 99)) if d.saliency.size else 1.0
        for p in self.ex.get("pairs", []):
            a, b = p["a"], p["b"]
            unc = [u["prototype"] for u in p.get("uncertain", [])]
            rel = [r["prototype"] for r in p.get("reliable", [])][:3]
            conf, below = p.get("confusions", {}), p.get("below_threshold", {})
            fig = self.figure(
                F.pair_contribution_figure(
                    d, a, b, unc, rel, self.colors, {r["prototype"]: r["favours"] for r in p.get("reliable", [])}
                ),
                f"pair-{a}-{b}-contribution",
                self.pair_caption(a, b),
                f"contribution {d.classes[a]} vs {d.classes[b]}",
            )

            ex_protos = (unc or rel)[:PAIR_EXAMPLE_ROWS]
            exfig = ""
            if ex_protos:
                n = 4
                img, _ = F.examples_image(
                    d,
                    ex_protos,
                    [np.flatnonzero(d.labels == a), np.flatnonzero(d.labels == b)],
                    self.colors,
                    n,
                    True,
                    vmax,
                )
                labels = [(f"P-{k}", "uncertain" if k in unc else "reliable") for k in ex_protos]
                fg = F.image_figure(
                    img,
                    labels,
                    [self.colors[k] for k in ex_protos],
                    header=[(0.25, f"class {d.classes[a]}"), (0.75, f"class {d.classes[b]}")],
                    label_w=1.1,
                )
                exfig = self.figure(
                    fg,
                    f"pair-{a}-{b}-examples",
                    f"Samples of {self.name(a)} (left) and {self.name(b)} (right) "
                    "that contain the prototype, with the final "
                    "checkpoint's saliency (upsampled, one colour scale for all tiles: "
                    "the 99th percentile of E) and the "
                    "prototype's cells outlined. "
                    "Where the bright saliency sits on the outlined cells in both classes, the model "
                    "looks at the same pattern in both.",
                    f"examples {d.classes[a]} vs {d.classes[b]}",
                )
            out.append(
                f'<h3 id="{self.pair_ids[(a, b)]}">{self.name(a)} ↔ {self.name(b)} <span class="note">(test errors '
                f"{self.name(a)}→{self.name(b)}: {conf.get('a_to_b', '?')}, "
                f"{self.name(b)}→{self.name(a)}: {conf.get('b_to_a', '?')})</span></h3>"
                f"{self.pair_words(p)}{fig}<div class=grid2>"
                f"<div>{self.pair_table(p.get('uncertain', []), 'uncertain', a, b, below.get('uncertain', 0))}</div>"
                f"<div>{self.pair_table(p.get('reliable', []), 'reliable', a, b, below.get('reliable', 0))}</div>"
                f"</div>{self.class_level(p)}{exfig}"
            )
        if not out:
            out.append(
                '<p class="note">No confused pair: '
                "the final model made no error between two classes on the test set.</p>"
            )
        return (
            '<section id="pairs"><h2>Per confused pair: why the model mixes them up</h2>'
            f'<p class="note">{E(self.significance_text())}. Prototypes must be contained in ≥ '
            f"{100 * d.explanations.get('config', {}).get('min_pair_contain', 0.05):.0f} % of each class; "
            "background prototypes are never listed. Steps T<i>t</i> are checkpoint indices.</p>"
            + self.pair_nav()
            + "".join(out)
            + "</section>"
        )

    def pair_words(self, p: dict) -> str:
        """The pair's first uncertain and first reliable prototype in the words of ``i2x explain``."""
        rows = [(kind, p[kind][0]) for kind in ("uncertain", "reliable") if p.get(kind) and "effect" in p[kind][0]]
        items = "".join(
            f"<li>{kind}: {E(pair_item(r, self.d.classes, p['a'], p['b'], self.place[r['prototype']]))}</li>"
            for kind, r in rows
        )
        return f"<ul class=words>{items}</ul>" if items else ""

    def pair_caption(self, a: int, b: int) -> str:
        """The caption of a pair's contribution figure (the samples test's β_t, or the paper's d_t)."""
        d = self.d
        return (
            (
                f"Paper Fig. 5, on every sample: each prototype's standardised within-class link β_t at each "
                f"training step (within a class, how many SD the confidence moved towards {self.name(a)} "
                "rather than the other class per SD of the prototype's intensity change); "
                if d.links is not None
                else f"Paper Fig. 5: contribution d_t[k] = W_t[k,{self.name(a)}] − W_t[k,{self.name(b)}] "
                "of each prototype at each training step; "
            )
            + f"red favours {self.name(a)}, blue {self.name(b)}. "
            "Left: all prototypes, uncertain ones marked ◆. "
            "Right: the uncertain prototypes (solid: the link changes direction during training) "
            "and the top reliable ones "
            "(dashed: one sign throughout). "
            "An uncertain prototype whose swings are not backed by a reliable one is a "
            "candidate cause of the confusion."
        )

    def looks_like(self) -> str:
        name = str(self.d.manifest.get("data", {}).get("dataset", "")).lower()
        return "a stroke end, a corner, a loop" if "mnist" in name or "digits" in name else "a part, an edge, a texture"

    def significance_text(self) -> str:
        sig = self.d.explanations.get("significance", {})
        if not sig.get("calibrated"):
            return "Uncalibrated: every non-zero sign of d_t[k] counts (no p-values in this run)"
        if sig.get("pair_test") == "samples":
            return f"Tested against {sig['null']}, {sig['permutations']} permutations: {sig['test']}. {sig['effect']}"
        return (
            f"Signs are tested against {sig['null']}, {sig['permutations']} permutations per step: {sig['test']}; "
            f"alpha = {sig['alpha']}"
        )

    def background_text(self) -> str:
        bg = self.d.explanations.get("background", [])
        if not bg:
            return "none"
        return (
            f"{self.chips(bg)}: their cells carry less than "
            f"{self.d.manifest['config'].get('background_saliency', 0.5):g} × the mean saliency per cell; "
            "never listed as shared, specialized, key, uncertain or reliable"
        )

    def class_level(self, p: dict) -> str:
        """The pair's class-level associations: named as such, never as uncertain or reliable."""
        if "class_level" not in p:
            return ""
        items = ", ".join(
            f"{self.chip(r['prototype'])} ({r['pattern']}, p = {format_p(r['p_value_class_level'])})"
            for r in p["class_level"]
        )
        return (
            '<p class="note"><b>Class-level associations</b> (significant against permuting all samples, not '
            "within class: the prototype belongs to these classes; its link to their confidence is not shown): "
            f"{items or 'none'}</p>"
        )

    def pair_table(self, rows: list[dict], kind: str, a: int, b: int, below: int = 0) -> str:
        left = (
            f' <span class="note">({below} more significant but selected in too few half-subsamples of E)</span>'
            if below
            else ""
        )
        if not rows:
            return f'<p class="note">No {kind} prototype for this pair.{left}</p>'
        body = "".join(
            f"<tr><td>{self.chip(r['prototype'])}</td><td class=num>{format_p(r.get('p_value'))}</td>"
            f"<td class=num>{_share(r.get('frequency'))}</td>"
            f"<td class=num>{r['sign_flips']}</td>"
            f"<td class=num>{format_effect(r)}</td><td class=num>{100 * r['contain_a']:.0f} %</td>"
            f"<td class=num>{100 * r['contain_b']:.0f} %</td>"
            + (
                f"<td>{', '.join(f'T{s}' for s in r['sign_changes_at'][:8])}"
                f"{' …' if len(r['sign_changes_at']) > 8 else ''}</td>"
                if kind == "uncertain"
                else f"<td>{self.name(r['favours'])}</td>"
            )
            + "</tr>"
            for r in rows
        )
        last = "sign changes at" if kind == "uncertain" else "favours"
        size = "effect [95 % CI]" if "effect" in rows[0] else "Σ d"
        return (
            f"<table><tr><th>{kind}</th><th class=num>p</th><th class=num>selected</th><th class=num>flips</th>"
            f"<th class=num>{size}</th><th class=num>in {self.name(a)}</th><th class=num>in {self.name(b)}</th>"
            f"<th>{last}</th></tr>{body}</table>{left}"
        )

    def dynamics(self) -> str:
        d = self.d
        w = self.figure(
            F.w_heatmap_figure(d, self.colors),
            "ridge-W",
            "Ridge coefficients W_t[k, c] (paper Eq. 8): one panel per class, prototypes down, steps across. "
            "Red: a rise in the "
            "prototype's intensity raised the class's confidence at that step; blue: lowered it. "
            "Dotted lines mark steps without clusters.",
            "ridge coefficients heatmap",
        )
        cl = self.figure(
            F.clusters_figure(d),
            "clusters",
            "Rows of the ridge regression per step: every sample of E is its own row (aggregate = samples, no "
            "HDBSCAN; no step can be flagged)."
            if self.d.samples_as_rows
            else f"HDBSCAN clusters of confidence changes per step (paper Eq. 5). Red × = flagged: no cluster, "
            f"W_t = 0 ({int(d.flagged.sum())} of {len(d.flagged)} steps). "
            "Many flagged steps mean min_cluster_size is too large for E.",
            "clusters per step",
        )
        return f'<section id="dynamics"><h2>Training dynamics</h2>{w}{cl}</section>'

    def finetune(self) -> str:
        d = self.d
        if d.finetune is None and d.finetune_table is None:
            return ""
        parts = []
        if d.finetune_table:
            parts.append(md_tables(d.finetune_table))
        summ = finetune_summary(d.finetune) if d.finetune else None
        if summ:
            pair = f"{self.name(summ['a'])}↔{self.name(summ['b'])}" if summ["a"] is not None else "the pair"
            n = sorted({r["n"] for r in summ["schedules"].values()})
            parts.append(
                self.figure(
                    F.finetune_figure(summ, d.classes),
                    "finetune",
                    f"Guided fine-tuning (paper §3.5, Table 1): test accuracy and {pair} errors per schedule, "
                    "mean ± std over "
                    f"{'/'.join(map(str, n))} repeats (sample std); "
                    "the dashed line is the final model before fine-tuning. "
                    "Differences smaller than the error bars are not evidence of an effect.",
                    "fine-tuning results",
                )
            )
        if d.perturbed is not None and d.finetune:
            parts.append(self.perturbed_examples(int(d.finetune.get("prototype", 0))))
        return f'<section id="finetune"><h2>Guided fine-tuning</h2>{"".join(parts)}</section>'

    def perturbed_examples(self, k: int) -> str:
        """intervention=perturb: the first perturbed samples of E before (top) and after (bottom), the
        imputed cells of P-k outlined, so a person can see what was taken out."""
        p, color = self.d.perturbed, self.colors[k]
        s = F.scale_for(p["before"].shape[2], 96)
        rows = [[F.tile(img, cells, color, scale=s) for img, cells in zip(p[key], p["cells"], strict=True)]
                for key in ("before", "after")]  # fmt: skip
        fill = self.d.finetune.get("fill", "")
        return self.figure(
            F.image_figure(F.grid(rows), [("before", ""), ("after", fill)], ["#444444", color]),
            "finetune-perturbed",
            f"What intervention=perturb took out: the first {len(p['rows'])} samples of the pair that contain "
            f"{self.chip(k)}, before (top) and with its cells imputed ({E(fill)}, bottom), the cells outlined. "
            "The fine-tuning set holds every sample of E, these ones perturbed.",
            "samples before and after the prototype's cells were imputed",
        )

    def faithfulness(self) -> str:
        f = self.d.faithfulness
        try:
            s, rc, br = f["summary"], f["summary"]["rank_correlation"], f["summary"]["beats_random"]
        except (TypeError, KeyError):
            return ""
        rho = (
            "n/a"
            if rc.get("rho") is None
            else f"{rc['rho']:+.3f} (p = {format_p(rc.get('p_value'))}, {rc['n_pairs']} pairs)"
        )
        share = "n/a" if br.get("share") is None else f"{100 * br['share']:.0f} %"
        lines = [
            f"<p>Each prototype's region was deleted ({E(f['config']['fill'])} fill) from the explanation-set images "
            f"that contain it, against {f['config']['random_draws']} random deletions of as many cells in the same "
            f"images; {s['deletions']} deletions. Spearman correlation between what the explanation says a "
            f"prototype does for a class (Σ_t W_t[k,c]) and what deleting it does (minus the confidence change "
            f"beyond random): <b>{rho}</b>. Prototypes whose deletion lowers the image's own class more than "
            f"random (p &lt; {s.get('alpha', 0.05)}): <b>{share}</b> ({br['count']} of {br['tested']}; "
            f"{br.get('count_holm', 'n/a')} after Holm).</p>"
        ]
        for p in f.get("pairs", []):
            na, nb = (self.name(c) for c in (p["a"], p["b"]))
            lines.append(
                f"<p>Pair {na}↔{nb}, top uncertain {self.chip(p['prototype'])}: {_flips(p['a_to_b'], na, nb)}; "
                f"{_flips(p['b_to_a'], nb, na)}.</p>"
            )
        fig = self.figure(
            F.faithfulness_figure(f, self.colors),
            "faithfulness",
            "Deletion effect of each prototype on its images' own class (confidence change beyond random "
            "deletion, mean and 95 % interval over images); filled: lower than random at p < alpha.",
            "prototype deletion effects",
        )
        return f'<section id="faithfulness"><h2>Faithfulness: deleting prototypes</h2>{"".join(lines)}{fig}</section>'


def _flips(f: dict, x: str, y: str) -> str:
    if not f.get("n_images"):
        return f"{x}→{y}: no image"
    deleted, rand = 100 * (f["deleted_rate"] or 0), 100 * (f["random_rate"] or 0)
    tail = f"(p = {format_p(f.get('p_value'))}, {f['n_images']} images)"
    return f"{x}→{y} flips {deleted:.1f} % after deleting it vs {rand:.1f} % after random deletion {tail}"


def _share(v) -> str:
    """A selection frequency as a percentage, or — when the run has none."""
    return "—" if v is None else f"{100 * v:.0f} %"


def md_tables(text: str) -> str:
    """Markdown pipe tables to HTML tables; other lines as escaped paragraphs."""
    out, rows = [], []

    def flush():
        if rows:
            head, *body = rows
            out.append(
                "<table><tr>"
                + "".join(f"<th>{E(c)}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{E(c)}</td>" for c in r) + "</tr>" for r in body)
                + "</table>"
            )
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(set(c) <= set(":- ") for c in cells):
                rows.append(cells)
        else:
            flush()
            if s:
                out.append(f"<p>{E(s.lstrip('#').strip())}</p>")
    flush()
    return "".join(out)


def css() -> str:
    return resources.files("i2x.report").joinpath("style.css").read_text()


def build(d: RunData, fw: F.FigureWriter) -> str:
    pg = Page(d, fw)
    sections = [pg.summary(), pg.gallery(), pg.classes(), pg.pairs(), pg.dynamics(), pg.finetune(), pg.faithfulness()]
    toc = [
        ("summary", "Summary"),
        ("prototypes", "Prototypes"),
        ("classes", "Classes"),
        ("pairs", "Confused pairs"),
        ("dynamics", "Dynamics"),
    ]
    toc += [("finetune", "Fine-tuning")] if sections[-2] else []
    toc += [("faithfulness", "Faithfulness")] if sections[-1] else []
    m = d.manifest
    title = f"I2X report: {m.get('data', {}).get('dataset', '')} · {m.get('model', {}).get('name', '')}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{E(title)}</title><link rel="icon" href="data:,"><style>{css()}</style></head><body>'
        f'<header class="top"><h1>{E(title)}</h1>'
        "<p>Why does the model look there? Structured explanations (I2X) of the run "
        f"<code>{E(d.path.name)}</code>, drawn from its saved arrays.</p></header>"
        '<nav class="toc">' + "".join(f'<a href="#{i}">{t}</a>' for i, t in toc) + "</nav>"
        "<main>" + "".join(sections) + "</main></body></html>\n"
    )


def _layout(target: dict | None) -> str:
    """' (tokens on an 8x8 patch grid, 1 prefix token dropped)' for the model line (nothing for a CNN's NCHW map)."""
    if not target or target.get("layout") == "nchw":
        return ""
    h, w = target["grid"]
    what = {"tokens": "tokens on a", "nhwc": "NHWC map, a"}.get(target["layout"], f"{target['layout']} map, a")
    pre = target.get("prefix_tokens", 0)
    return f" ({what} {h}x{w} grid" + (f", {pre} prefix token{'s' * (pre > 1)} dropped)" if pre else ")")
