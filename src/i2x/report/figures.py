"""The report's figures: matplotlib ``Figure`` objects (no pyplot, so no global backend is set;
Agg renders PNG, the SVG backend SVG) and numpy-composited image grids.

Every figure that names a prototype uses :func:`proto_colors`, one colour per prototype index,
so P-20 has the same colour in the gallery, the class curves and the pair contributions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm, to_hex
from matplotlib.figure import Figure

from .load import RunData

DPI = 100
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
}  # SVG text stays text: smaller files, selectable labels
SAL_CMAP = colormaps["inferno"]


def proto_colors(k: int) -> np.ndarray:
    """(k, 3) RGB in 0..1, a fixed colour per prototype index (tab10 / tab20 + tab20b + tab20c,
    then evenly spaced hues when k > 60)."""
    if k <= 10:
        base = list(colormaps["tab10"].colors)
    else:
        t20 = list(colormaps["tab20"].colors)
        base = t20[0::2] + t20[1::2] + list(colormaps["tab20b"].colors) + list(colormaps["tab20c"].colors)
    if k > len(base):
        hsv = colormaps["hsv"]
        base = [hsv((i * 0.618034) % 1.0)[:3] for i in range(k)]
    return np.asarray(base[:k], dtype=np.float64)[:, :3]


def proto_hex(k: int) -> list[str]:
    return [to_hex(c) for c in proto_colors(k)]


def luminance(rgb) -> float:
    """WCAG 2 relative luminance of an RGB colour in 0..1."""
    c = np.asarray(rgb, dtype=np.float64)[:3]
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def contrast(a, b) -> float:
    """WCAG 2 contrast ratio of two colours (1..21; text needs ≥ 4.5)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_on(rgb) -> str:
    """Black or white, whichever contrasts more with ``rgb`` (always ≥ 4.5:1)."""
    return "#000000" if contrast(rgb, (0, 0, 0)) >= contrast(rgb, (1, 1, 1)) else "#ffffff"


class FigureWriter:
    """Saves each figure as ``fig/NAME.png`` and ``fig/NAME.svg``; remembers what it wrote."""

    def __init__(self, fig_dir: Path, svg: bool = True):
        self.dir = Path(fig_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.svg = svg
        self.written: list[str] = []

    def save(self, fig: Figure, name: str) -> str:
        # zlib level 1: PNG encoding was the largest single cost; files grow ~30 %
        fig.savefig(self.dir / f"{name}.png", dpi=DPI, pil_kwargs={"compress_level": 1})
        if self.svg:
            fig.savefig(self.dir / f"{name}.svg")
        self.written.append(name)
        return f"fig/{name}.png"


def new_figure(
    w: float,
    h: float,
    left: float = 0.8,
    right: float = 0.15,
    bottom: float = 0.5,
    top: float = 0.25,
    wspace: float = 0.3,
    hspace: float = 0.25,
) -> Figure:
    """A figure with fixed margins in inches (constrained layout doubled the drawing time)."""
    fig = Figure(figsize=(w, h), dpi=DPI)
    fig.subplots_adjust(
        left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace, hspace=hspace
    )
    return fig


# --- image tiles -----------------------------------------------------------------------------


def scale_for(h: int, target: int = 72) -> int:
    """Integer upscaling so a tile is about ``target`` px high (72: 28 px MNIST -> 3x, 8 px digits -> 9x;
    tiles with a saliency overlay ask for 128, so that the overlay can be made out)."""
    return max(1, int(round(target / h)))


def to_rgb(img: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W, 3) float in 0..1 (grey images repeated over channels)."""
    x = np.asarray(img, dtype=np.float64) / 255.0
    x = x[:1].repeat(3, 0) if x.shape[0] != 3 else x
    return x.transpose(1, 2, 0)


def upsample(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (h', w') map to (h, w), pixel centres aligned (like align_corners=False)."""
    hh, ww = m.shape

    def axis(n_out, n_in):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(x).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), x - i0

    y0, y1, wy = axis(h, hh)
    x0, x1, wx = axis(w, ww)
    top = m[y0][:, x0] * (1 - wx) + m[y0][:, x1] * wx
    bot = m[y1][:, x0] * (1 - wx) + m[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bot * wy[:, None]


def tile(
    img: np.ndarray,
    cells: np.ndarray | None = None,
    color=(1, 0, 0),
    sal: np.ndarray | None = None,
    vmax: float = 1.0,
    scale: int = 3,
) -> np.ndarray:
    """One upscaled image (H*s, W*s, 3): optionally the saliency blended in (alpha ∝ saliency, so
    the digit stays visible where the model does not look) and the target-layer cells where
    ``cells`` (H', W') is True outlined in ``color``."""
    rgb = to_rgb(img)
    h, w = rgb.shape[:2]
    if sal is not None:
        s = np.clip(upsample(np.asarray(sal, dtype=np.float64), h, w) / max(vmax, 1e-12), 0, 1)
        a = 0.75 * s[..., None]
        rgb = (1 - a) * (0.8 * rgb) + a * SAL_CMAP(s)[..., :3]
    out = rgb.repeat(scale, 0).repeat(scale, 1)
    if cells is not None and cells.any():
        hp, wp = cells.shape
        t = max(1, scale // 2 + 1)  # outline width in px
        ys = np.round(np.arange(hp + 1) * h / hp).astype(int) * scale
        xs = np.round(np.arange(wp + 1) * w / wp).astype(int) * scale
        col = np.asarray(color, dtype=np.float64)[:3]
        for u, v in zip(*np.nonzero(cells), strict=True):
            y0, y1, x0, x1 = ys[u], ys[u + 1], xs[v], xs[v + 1]
            out[y0 : y0 + t, x0:x1] = col
            out[y1 - t : y1, x0:x1] = col
            out[y0:y1, x0 : x0 + t] = col
            out[y0:y1, x1 - t : x1] = col
    return out


def grid(tiles: list[list[np.ndarray | None]], pad: int = 3, gap_after: int | None = None) -> np.ndarray:
    """Rows of equally sized tiles into one white-padded RGB image; None leaves a blank cell;
    ``gap_after``: a wider gap after that many columns (separates two classes)."""
    th, tw = next(t for row in tiles for t in row if t is not None).shape[:2]
    ncol = max(len(r) for r in tiles)
    extra = 4 * pad if gap_after else 0
    H = len(tiles) * (th + pad) + pad
    Wd = ncol * (tw + pad) + pad + extra
    out = np.ones((H, Wd, 3))
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            if t is None:
                continue
            x = pad + j * (tw + pad) + (extra if gap_after and j >= gap_after else 0)
            y = pad + i * (th + pad)
            out[y : y + th, x : x + tw] = t
    return out


def image_figure(
    img: np.ndarray,
    row_labels: list[tuple[str, str]],
    row_colors: list,
    header: list[tuple[float, str]] = (),
    label_w: float = 1.6,
    title: str | None = None,
) -> Figure:
    """An image grid with a coloured label left of each row and optional column headers
    (x in 0..1 of the grid width, text)."""
    h, w = img.shape[:2]
    top = 0.3 if header or title else 0.05
    fw, fh = w / DPI + label_w, h / DPI + top
    fig = Figure(figsize=(fw, fh), dpi=DPI)
    ax = fig.add_axes((label_w / fw, 0, (w / DPI) / fw, (h / DPI) / fh))
    ax.imshow(img, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    nrow = max(1, len(row_labels))
    for i, ((main, sub), col) in enumerate(zip(row_labels, row_colors, strict=True)):
        y = (i + 0.5) / nrow
        ax.text(-0.01 * w, h * y - 6, main, ha="right", va="center", fontsize=10, fontweight="bold", color=col)
        if sub:
            ax.text(-0.01 * w, h * y + 8, sub, ha="right", va="center", fontsize=7.5, color="#444")
    for x, text in header:
        ax.text(x * w, -4, text, ha="center", va="bottom", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return fig


# --- figures -------------------------------------------------------------------------------


def confusion_figure(d: RunData) -> Figure:
    cm = d.confusion
    C = len(cm)
    rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    off = rate.copy()
    np.fill_diagonal(off, np.nan)
    s = 0.45 + 0.38 * C
    names = [n[:12] for n in d.classes]
    long = max(map(len, names)) > 2
    lab = 0.3 + 0.075 * max(map(len, names))  # room for the tick labels (inches)
    fig = new_figure(
        min(s + 1.6, 9) + lab,
        min(s + 0.2, 8) + (lab if long else 0),
        left=0.45 + lab,
        bottom=0.45 + (lab if long else 0.3),
        right=1.2,
        top=0.1,
    )
    with np.errstate(invalid="ignore"):
        vmax = max(np.nanmax(off) if np.isfinite(off).any() else 0, 1e-9)
    ax = fig.add_subplot()
    im = ax.imshow(off, cmap="Reds", vmin=0, vmax=vmax)
    ax.imshow(np.where(np.eye(C, dtype=bool), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
    if C <= 20:
        for i in range(C):
            for j in range(C):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7 if C > 10 else 8,
                        color="white" if i != j and off[i, j] > 0.6 * vmax else "black",
                    )
    ax.set_xticks(range(C), names, rotation=90 if long else 0)
    ax.set_yticks(range(C), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, shrink=0.8, pad=0.03, label="share of the true class (errors only)")
    return fig


def gallery_image(d: RunData, colors: np.ndarray, n: int = 8) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """One row per prototype: its most typical positions, each on its own image of E with the
    target-layer cell outlined in the prototype's colour."""
    K = d.k
    s = scale_for(d.images.shape[2])
    typ = d.typical
    rows, labels = [], []
    frac_by_class = _class_fractions(d)  # (C, K)
    for k in range(K):
        row = []
        if typ is not None:
            for r, u, v in typ[k][:n]:
                if r < 0:
                    row.append(None)
                    continue
                cells = np.zeros(d.assignments.shape[1:], dtype=bool)
                cells[u, v] = True
                row.append(tile(d.images[r], cells, colors[k], scale=s))
        else:  # older runs: the first samples whose map contains k, every cell of k outlined
            for r in np.flatnonzero(d.contain[:, k])[:n]:
                row.append(tile(d.images[r], d.assignments[r] == k, colors[k], scale=s))
        rows.append(row + [None] * (n - len(row)))
        top = np.argsort(-frac_by_class[:, k], kind="stable")[:2]
        where = [f"{d.classes[c][:10]}: {100 * frac_by_class[c, k]:.0f}%" for c in top if frac_by_class[c, k] > 0]
        labels.append((f"P-{k}", "in " + ", ".join(where) if where else "in no sample's salient cells"))
    if all(t is None for r in rows for t in r):
        rows[0][0] = np.ones((8 * s, 8 * s, 3))
    return grid(rows), labels


def _class_fractions(d: RunData) -> np.ndarray:
    C = len(d.classes)
    out = np.zeros((C, d.k))
    for c in range(C):
        m = d.labels == c
        if m.any():
            out[c] = d.contain[m].mean(0)
    return out


def gallery_figures(d: RunData, colors: np.ndarray, per_fig: int = 16) -> list[Figure]:
    """The gallery in chunks of ``per_fig`` prototypes (one tall figure per chunk)."""
    img, labels = gallery_image(d, colors)
    K = d.k
    th = (img.shape[0] - 3) / K
    figs = []
    for a in range(0, K, per_fig):
        b = min(K, a + per_fig)
        part = img[int(round(a * th)) : int(round(b * th)) + 3]
        label_w = max(1.1, 0.25 + 0.05 * max(len(sub) for _, sub in labels))  # 7.5 pt text, ~0.05 in per character
        figs.append(image_figure(part, labels[a:b], [colors[k] for k in range(a, b)], label_w=label_w))
    return figs


def examples_image(
    d: RunData, rows: list[int], members: list[np.ndarray], colors: np.ndarray, n: int, saliency: bool, vmax: float
) -> tuple[np.ndarray, int]:
    """For each prototype k in ``rows`` and each sample group in ``members``: the ``n`` samples of
    the group containing k with the largest final intensity of k, cells of k outlined."""
    s = scale_for(d.images.shape[2], 128 if saliency else 72)
    tiles = []
    for k in rows:
        row = []
        for m in members:
            cand = m[d.contain[m, k]]
            cand = cand[np.argsort(-d.intensity[-1, cand, k], kind="stable")][:n]
            row += [
                tile(d.images[r], d.assignments[r] == k, colors[k], d.saliency[r] if saliency else None, vmax, s)
                for r in cand
            ] + [None] * (n - len(cand))
        tiles.append(row)
    if all(t is None for r in tiles for t in r):
        tiles[0][0] = np.ones((d.images.shape[2] * s, d.images.shape[3] * s, 3))
    return grid(tiles, gap_after=n if len(members) > 1 else None), n


def class_curves_figure(d: RunData, c: int, protos: list[int], key_steps: list[int], colors: np.ndarray) -> Figure:
    """Paper Fig. 3: class c's mean confidence (top) and the mean intensity of its key prototypes
    over c's samples (bottom) at every checkpoint; key steps t→t+1 shaded and numbered."""
    its = d.iterations
    m = d.labels == c
    fig = new_figure(7.2, 3.6, left=0.95, hspace=0.12)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.3))
    ax1.plot(its, d.class_conf(c), color="black", marker="o", ms=2.5, lw=1.5)
    ax1.set_ylabel(f"confidence\nof {d.classes[c]}")
    ax1.set_ylim(-0.02, 1.02)
    for k in protos:
        ax2.plot(its, d.intensity[:, m, k].mean(1), color=colors[k], lw=1.8, marker="o", ms=2, label=f"P-{k}")
    ax2.set_ylabel("mean intensity\n(Σ saliency on P)")
    ax2.set_xlabel("training iteration (checkpoints)")
    if protos:
        ax2.legend(ncols=min(6, len(protos)), fontsize=7.5, loc="upper left", frameon=False)
    for i, t in enumerate(key_steps):
        for ax in (ax1, ax2):
            ax.axvspan(its[t], its[t + 1], color="#f2c94c", alpha=0.35, lw=0)
        ax1.text((its[t] + its[t + 1]) / 2, 1.0, f"K{i + 1}", ha="center", va="bottom", fontsize=7.5)
    _mark_flagged(ax1, d)
    return fig


def _mark_flagged(ax, d: RunData) -> None:
    its = d.iterations
    for t in np.flatnonzero(d.flagged):
        ax.axvspan(its[t], its[t + 1], color="#bbbbbb", alpha=0.3, lw=0, hatch="//")


def pair_contribution_figure(
    d: RunData, a: int, b: int, unc: list[int], rel: list[int], colors: np.ndarray, favours: dict | None = None
) -> Figure:
    """Paper Fig. 5: each prototype's contribution to the pair per step (:meth:`RunData.pair_curves`: the
    samples test's β_t, or the paper's d_t). Left: every prototype (rows), uncertain ones marked ◆.
    Right: the uncertain (solid) and reliable (dashed) prototypes as curves; ``favours`` {k: class}: the
    class each reliable one favours, as listed (default: the sign of its summed curve)."""
    D, name = d.pair_curves(a, b)  # (T, K)
    T, K = D.shape
    x = d.iterations[1:]
    fig = new_figure(10, max(3.2, min(7.5, 0.16 * K + 1.2)), left=0.65, right=0.2, bottom=0.5, wspace=0.35)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1, 1.5))
    lim = max(np.abs(D).max(), 1e-12)
    im = ax1.imshow(D.T, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0, -lim, lim), interpolation="nearest")
    ticks = list(range(K)) if K <= 48 else sorted(set(range(0, K, 8)) | set(unc))  # K = 128: no wall of labels
    ax1.set_yticks(ticks, [("◆ " if k in unc else "") + f"P-{k}" for k in ticks], fontsize=6.5 if K > 24 else 8)
    for k, lab in zip(ticks, ax1.get_yticklabels(), strict=True):
        lab.set_color(colors[k])
        if k in unc:
            lab.set_fontweight("bold")
    step = max(1, T // 6)
    ax1.set_xticks(range(0, T, step), [str(i) for i in x[::step]], fontsize=7)
    ax1.set_xlabel("step ending at iteration")
    for t in np.flatnonzero(d.flagged):
        ax1.axvline(t, color="#999999", lw=0.6, ls=":")
    fig.colorbar(im, ax=ax1, shrink=0.7, pad=0.02, label=f"{name} (+ → {d.classes[a]}, − → {d.classes[b]})")
    ax2.axhline(0, color="black", lw=0.8)
    for k in unc:
        ax2.plot(x, D[:, k], color=colors[k], lw=2, marker="o", ms=3, label=f"P-{k} (uncertain)")
    for k in rel:
        ax2.plot(
            x,
            D[:, k],
            color=colors[k],
            lw=1.3,
            ls="--",
            label=f"P-{k} (reliable → {d.classes[(favours or {}).get(k, a if D[:, k].sum() > 0 else b)]})",
        )
    _mark_flagged(ax2, _Shifted(d))
    ax2.set_xlabel("training iteration (end of step t→t+1)")
    ax2.set_ylabel(
        f"d_t = W[k,{d.classes[a]}] − W[k,{d.classes[b]}]" if name == "d" else "β_t: standardised within-class link"
    )
    ax2.set_title(f"▲ favours {d.classes[a]}   ▼ favours {d.classes[b]}", fontsize=8.5, loc="left")
    if unc or rel:
        ax2.legend(fontsize=7, framealpha=0.8, loc="best")
    else:  # nothing to draw: say so instead of an empty 0-1 plot
        ax2.cla()
        ax2.set_axis_off()
        ax2.text(
            0.5, 0.5, "no uncertain or reliable prototype is listed for this pair\n(none passed the within-class "
            "test and resampling;\nthe left panel shows every prototype's d_t)", ha="center", va="center",
            fontsize=8.5, color="#444", transform=ax2.transAxes, wrap=True,
        )  # fmt: skip
    return fig


class _Shifted:
    """Flagged steps drawn on an axis whose x is the iteration at the *end* of each step."""

    def __init__(self, d: RunData):
        its = d.iterations
        self.flagged = d.flagged
        self.iterations = (
            np.concatenate(
                [[its[1] - (its[2] - its[1]) / 2 if len(its) > 2 else its[0]], (its[1:-1] + its[2:]) / 2, [its[-1]]]
            )
            if len(its) > 1
            else its
        )


def w_heatmap_figure(d: RunData, colors: np.ndarray) -> Figure:
    """Ridge coefficients W_t[k, c]: one panel per class, prototypes × steps, one colour scale."""
    T, K, C = d.W.shape
    ncol = min(5, C)
    nrow = -(-C // ncol)
    fig = new_figure(
        1.9 * ncol + 1.6,
        max(2.0, (0.09 * K + 0.7)) * nrow + 0.3,
        left=0.65,
        right=1.0,
        bottom=0.45,
        wspace=0.08,
        hspace=0.3,
    )
    axes = np.atleast_1d(fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False)).ravel()
    lim = max(float(np.percentile(np.abs(d.W), 99.5)) if d.W.size else 0, 1e-12)
    im = None
    for c, ax in enumerate(axes):
        if c >= C:
            ax.set_axis_off()
            continue
        im = ax.imshow(
            d.W[:, :, c].T, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0, -lim, lim), interpolation="nearest"
        )
        ax.set_title(d.classes[c])
        for t in np.flatnonzero(d.flagged):
            ax.axvline(t, color="#999999", lw=0.6, ls=":")
        if c % ncol == 0:
            step = max(1, K // 8)
            ax.set_yticks(range(0, K, step), [f"P-{k}" for k in range(0, K, step)], fontsize=7)
        if c // ncol == nrow - 1:
            ax.set_xlabel("step t", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.6, pad=0.02, label="W_t[k, c]  (clipped at 99.5th pct)")
    return fig


def clusters_figure(d: RunData) -> Figure:
    T = len(d.n_clusters)
    fig = new_figure(7.2, 2.1, bottom=0.5)
    ax = fig.add_subplot()
    x = np.arange(T)
    ax.bar(x, d.n_clusters, color=np.where(d.flagged, "#d62728", "#4c72b0"), width=0.8)
    for t in np.flatnonzero(d.flagged):
        ax.text(t, 0.05, "×", ha="center", va="bottom", color="#d62728", fontsize=10, fontweight="bold")
    ax.set_xlabel("step t (checkpoint t → t+1)")
    ax.set_ylabel("samples (rows)" if d.samples_as_rows else "HDBSCAN clusters")
    ax.set_xlim(-0.6, T - 0.4)
    return fig


def finetune_figure(summary: dict, classes: list[str]) -> Figure:
    names = list(summary["schedules"])
    rows = summary["schedules"].values()
    has_pair = all("both" in r for r in rows)
    fig = new_figure(max(7.2, 0.6 * len(names) * 2), 3.0, left=0.7, bottom=1.2, wspace=0.25)  # control arms widen it
    axes = fig.subplots(1, 2 if has_pair else 1, squeeze=False).ravel()
    x = np.arange(len(names))
    acc = np.array([r["accuracy"] for r in rows])
    axes[0].bar(x, acc[:, 0], yerr=acc[:, 1], color="#4c72b0", capsize=3)
    b_acc = (summary.get("baseline") or {}).get("accuracy")
    ext = [*(acc[:, 0] - acc[:, 1]), *(acc[:, 0] + acc[:, 1]), *([b_acc] if b_acc is not None else [])]
    axes[0].set_ylim(max(0.0, min(ext) - 1.0), min(100.0, max(ext) + 0.5))
    axes[0].set_ylabel("test accuracy % (mean ± std)")
    base = summary.get("baseline") or {}
    if base.get("accuracy") is not None:
        axes[0].axhline(base["accuracy"], color="black", ls="--", lw=1, label="before fine-tuning")
        axes[0].legend(fontsize=7.5, frameon=False, loc="lower right")
    if has_pair:
        both = np.array([r["both"] for r in rows])
        a, b = summary["a"], summary["b"]
        axes[1].bar(x, both[:, 0], yerr=both[:, 1], color="#dd8452", capsize=3)
        axes[1].set_ylabel(f"{classes[a]}↔{classes[b]} errors (mean ± std)")
        if base.get("both") is not None:
            axes[1].axhline(base["both"], color="black", ls="--", lw=1)
    for ax in axes:
        ax.set_xticks(x, [n.replace("+", "→") for n in names], rotation=35, ha="right", fontsize=7.5)
    return fig


def faithfulness_figure(f: dict, colors) -> Figure:
    """Own-class deletion effect per prototype (mean and 95 % interval), filled where it beats random."""
    rows = [r for r in f["prototypes"] if r["own_class"]["effect"] is not None]
    fig = new_figure(max(6.0, 0.22 * len(rows) + 1.5), 2.8, left=0.9, bottom=0.6)
    ax = fig.subplots()
    for i, r in enumerate(rows):
        o, c = r["own_class"], colors[r["prototype"]]
        lo, hi = o.get("ci_low"), o.get("ci_high")
        if lo is not None and hi is not None:
            ax.plot([i, i], [lo, hi], color=c, lw=1.5)
        ax.plot(i, o["effect"], "o", ms=5, color=c, mfc=c if r["beats_random"] else "white")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), [f"P-{r['prototype']}" for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("Δ own-class confidence\nbeyond random deletion")
    return fig
