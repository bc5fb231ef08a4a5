"""PNG figures (matplotlib is an optional extra: pip install 'vdnacli[plot]').

compare_figure:  per-layer mean distance bars, then per neuron the two CDFs with the area between
                 them shaded (that area is the neuron's EMD in bins) over its density on a log scale
matrix_figure:   clustered, labelled heatmap of pairwise distances with its dendrogram (up to ~200 entries)
sheet_figure:    contact sheet of the best, middle and worst ranked images with distances
dna_figure:      overview of a DNA: per layer, the distribution of every neuron (a heatmap with a colour bar)

Each `*_figure` writes a PNG; the `draw_*` behind it returns the matplotlib Figure (for tests
and notebooks). The numbers the figures draw come from small functions here (`cdf_pair`, `neuron_picks`,
`bin_axis`, `short_label`, `matrix_layout`) so that tests can hold them against the distances.
matplotlib and scipy are imported only when a figure is drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from vdnacli.errors import ConfigError, VdnaError

A_COLOUR, B_COLOUR = "#dd8452", "#4c72b0"
UNITS = {"emd": "EMD (bins)", "nfd": "NFD", "fd": "FD"}
MATRIX_LABEL = {"emd": "EMD (bins, mean over neurons)", "nfd": "NFD (mean over neurons)", "fd": "FD (mean over layers)"}


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VdnaError("plots need matplotlib: pip install 'vdnacli[plot]'") from None
    return plt


def _check_png(out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"plots are written as PNG: use a .png file name (got {out.name})")
    return out


def _save(fig, out: Path, dpi: int = 110) -> Path:
    try:
        out = _check_png(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight")
    except OSError as e:
        raise VdnaError(f"cannot write the plot {out}: {e.strerror or e}") from None
    finally:
        _plt().close(fig)
    return out


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


# -- compare: what each neuron panel draws --------------------------------------------------
@dataclass(frozen=True)
class CdfPair:
    """Two neurons' CDFs over bins, as the EMD sees them: bin k holds its mass at its centre
    x = k + 0.5, so each CDF is a step function rising at the centres, and the area between
    the two steps over [0.5, B - 0.5] is sum_k |Fa(k) - Fb(k)| = the EMD in bins (Eq. 3-4)."""

    x: np.ndarray  # bin centres [B]
    fa: np.ndarray  # cumulative fraction of A at or below each bin [B]
    fb: np.ndarray
    lo: int  # first and last bin holding any activation of either side
    hi: int

    @property
    def emd(self) -> float:
        return float(np.abs(self.fa - self.fb).sum())


def cdf_pair(ha: np.ndarray, hb: np.ndarray) -> CdfPair:
    """The CDFs of two count rows [B], with the same arithmetic as `distances.emd_rows`."""
    ha, hb = np.asarray(ha), np.asarray(hb)
    na, nb = ha.sum(dtype=np.float64), hb.sum(dtype=np.float64)
    if na == 0 or nb == 0:
        raise VdnaError("a histogram has no counts: nothing to plot")
    fa = np.cumsum(ha, dtype=np.int64) / na
    fb = np.cumsum(hb, dtype=np.int64) / nb
    used = np.flatnonzero((ha > 0) | (hb > 0))
    return CdfPair(np.arange(ha.shape[0]) + 0.5, fa, fb, int(used[0]), int(used[-1]))


def neuron_picks(comparison, top: int = 5) -> list[tuple[str, int, float, str]]:
    """(layer, neuron, distance, why shown): the `top` neurons with the largest distance and a
    median one (rank n // 2 + 1 of n by distance), each said with its rank."""
    rows = comparison.top_neurons(sum(len(v) for v in comparison.per_neuron.values()))
    n = len(rows)
    picks = [(l, i, d, f"#{r + 1} of {n:,}") for r, (l, i, d) in enumerate(rows[:top])]
    if n > top:
        l, i, d = rows[n // 2]
        picks.append((l, i, d, f"median: #{n // 2 + 1} of {n:,}"))
    return picks


def bin_axis(ranges, binning: str, layer: str, neuron: int, bins: int) -> tuple[float, float] | None:
    """(activation at bin edge 0, activation per bin) of one neuron, from the ranges the DNA
    keeps and its binning rule; None when the DNA keeps no ranges. Activations outside the
    range were counted in the first or last bin."""
    if ranges is None:
        return None
    if binning == "vdna-0.1.1":
        mean, std = ranges.upstream_norm(layer)
        lo, hi = mean[neuron] - std[neuron], mean[neuron] + std[neuron]
    else:
        lo_all, hi_all = ranges.interval(layer)
        lo, hi = lo_all[neuron], hi_all[neuron]
    return float(lo), float(hi - lo) / bins


def _density(h: np.ndarray, lo: int, hi: int, bars: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(left edges, fraction per bin) of bins lo..hi grouped into about `bars` bars."""
    h = np.asarray(h, dtype=np.float64)
    step = max(1, math.ceil((hi - lo + 1) / bars))
    starts = np.arange(lo, hi + 1, step)
    sums = np.add.reduceat(h[lo:hi + 1], starts - lo)
    widths = np.minimum(starts + step, hi + 1) - starts
    return starts.astype(np.float64), sums / h.sum() / widths


def _hist_panel(ax_cdf, ax_den, a_dna, b_dna, layer: str, neuron: int, ranges, binning: str) -> float:
    ha, hb = a_dna.hist[layer][neuron], b_dna.hist[layer][neuron]
    bins = ha.shape[0]
    p = cdf_pair(ha, hb)
    ax_cdf.step(p.x, p.fa, where="post", color=A_COLOUR, lw=1.4)
    ax_cdf.step(p.x, p.fb, where="post", color=B_COLOUR, lw=1.4)
    upper = np.maximum(p.fa, p.fb)
    # shaded: where A's CDF is above (A has more mass below x) in A's colour, else B's; each
    # polygon lies between max(Fa, Fb) and the lower curve, so the two areas add up to the EMD
    ax_cdf.fill_between(p.x, p.fb, upper, step="post", color=A_COLOUR, alpha=0.35, lw=0)
    ax_cdf.fill_between(p.x, p.fa, upper, step="post", color=B_COLOUR, alpha=0.35, lw=0)
    pad = max(1.0, 0.04 * (p.hi - p.lo + 1))
    left, right = max(0.0, p.lo + 0.5 - pad), min(float(bins), p.hi + 0.5 + pad)
    ax_cdf.set_xlim(left, right)
    ax_cdf.set_ylim(-0.02, 1.02)
    ax_cdf.tick_params(labelbottom=False)
    ax_cdf.grid(alpha=0.25)
    for h, colour in ((ha, A_COLOUR), (hb, B_COLOUR)):
        edges, dens = _density(h, p.lo, p.hi)
        shown = np.where(dens > 0, dens, np.nan)
        ax_den.step(np.append(edges, p.hi + 1), np.append(shown, shown[-1]), where="post", color=colour, lw=1.0)
    ax_den.set_yscale("log")
    ax_den.set_xlim(left, right)
    ax_den.set_xlabel(f"bin (of {bins:,})", fontsize=8)
    ax_den.grid(alpha=0.25)
    axis = bin_axis(ranges, binning, layer, neuron, bins)
    if axis is not None:
        lo, per_bin = axis
        sec = ax_cdf.secondary_xaxis("top", functions=(lambda x: lo + x * per_bin, lambda a: (a - lo) / per_bin))
        sec.set_xlabel("activation", fontsize=8)
        sec.tick_params(labelsize=7)
    for ax in (ax_cdf, ax_den):
        ax.tick_params(labelsize=7)
    return p.emd


def _gauss_of(dna, layer: str, neuron: int) -> tuple[float, float]:
    if dna.gauss is not None and layer in dna.gauss:
        g = dna.gauss[layer]
        return float(g.mean[neuron]), float(g.var[neuron])
    g = dna.layer_gauss[layer]
    return float(g.mean[neuron]), float(np.diagonal(g.cov)[neuron])


def _gauss_panel(ax, a_dna, b_dna, layer: str, neuron: int) -> None:
    (ma, va), (mb, vb) = _gauss_of(a_dna, layer, neuron), _gauss_of(b_dna, layer, neuron)
    sa, sb = math.sqrt(max(va, 1e-12)), math.sqrt(max(vb, 1e-12))
    x = np.linspace(min(ma - 4 * sa, mb - 4 * sb), max(ma + 4 * sa, mb + 4 * sb), 400)
    for m, s, colour in ((ma, sa, A_COLOUR), (mb, sb, B_COLOUR)):
        y = np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        ax.plot(x, y, color=colour, lw=1.4)
        ax.fill_between(x, y, color=colour, alpha=0.2, lw=0)
    ax.set_xlabel("activation", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)


def compare_figure(comparison, a_dna, b_dna, out: Path, top: int = 5, ranges=None) -> Path:
    """`draw_compare`, written to `out` (PNG)."""
    _check_png(out)
    return _save(draw_compare(comparison, a_dna, b_dna, top, ranges), out)


def draw_compare(comparison, a_dna, b_dna, top: int = 5, ranges=None):
    """The per-layer mean distance, then the `top` neurons with the largest distance and a
    median one. EMD: per neuron, the two CDFs (area between them shaded: that area is the
    neuron's EMD in bins; top axis: activation from the DNA's kept ranges) over the two
    densities on a log scale. NFD/FD: the two neurons' Gaussians."""
    plt = _plt()
    from matplotlib.patches import Patch

    c = comparison
    unit = UNITS.get(c.metric, c.metric)
    hist = c.metric == "emd"
    ranges = ranges if ranges is not None else getattr(a_dna, "ranges", None)
    binning = a_dna.meta.get("binning") or "float32"
    picks = neuron_picks(c, top)
    ncols = 3
    nrows = max(1, math.ceil(len(picks) / ncols))
    n_neurons = sum(len(v) for v in c.per_neuron.values())
    fig = plt.figure(figsize=(13, 3.2 + 4.1 * nrows), layout="constrained")
    grid = fig.add_gridspec(1 + nrows, ncols, height_ratios=[2.2] + [4.1] * nrows)
    ax = fig.add_subplot(grid[0, :])
    layers = list(c.per_layer)
    ax.bar(range(len(layers)), [c.per_layer[l] for l in layers], color="#8c8c8c")
    ax.set_xlim(-0.6, max(len(layers), 4) - 0.4)  # one layer: a bar, not a wall
    ax.set_xticks(range(len(layers)), [f"{l}\n({len(c.per_neuron[l]):,} n.)" for l in layers], fontsize=8)
    ax.set_ylabel("FD" if c.metric == "fd" else f"mean {unit}", fontsize=9)
    ax.set_xlabel("layer (neurons compared)", fontsize=8)
    ax.set_title(f"per layer: {'FD' if c.metric == 'fd' else 'mean ' + unit + ' over its neurons'}", fontsize=9)
    plain = float(np.mean(np.concatenate([np.ravel(v) for v in c.per_neuron.values()])))
    weighted = c.metric != "fd" and not math.isclose(plain, c.distance, rel_tol=1e-9, abs_tol=1e-12)
    over = f"{'weighted mean' if weighted else 'mean'} over {_count(n_neurons, 'neuron')}"
    what = {"emd": f"EMD {c.distance:.4g} bins ({over})",
            "nfd": f"NFD {c.distance:.4g} ({over})",
            "fd": f"FD {c.distance:.4g} (mean over {_count(len(layers), 'layer')})"}.get(c.metric, f"{c.distance:.4g}")
    fig.suptitle(f"{c.a} ({_count(a_dna.num_images, 'image')}) vs {c.b} ({_count(b_dna.num_images, 'image')}): {what}",
                 fontsize=12)
    shown = (f"Neurons shown: the {min(top, n_neurons)} with the largest {unit.split(' ')[0]}"
             f"{' and a median one' if n_neurons > top else ''}, of {n_neurons:,}.")
    if hist:
        shown += ("  Each: the two CDFs over bins (top axis: the activation); the shaded area between them is the "
                  "neuron's EMD in bins,\ncoloured by the side whose CDF is higher (more of its mass to the left); "
                  f"the EMD above is the {'weighted ' if weighted else ''}mean of these areas. "
                  "Below each: the two densities (log scale).")
    else:
        shown += "  Each: the two neurons' Gaussians."
    for k, (layer, idx, d, why) in enumerate(picks):
        cell = grid[1 + k // ncols, k % ncols]
        if hist:
            sub = cell.subgridspec(2, 1, height_ratios=[3, 1.3], hspace=0.05)
            ax_cdf, ax_den = fig.add_subplot(sub[0]), fig.add_subplot(sub[1])
            ax_den.sharex(ax_cdf)
            _hist_panel(ax_cdf, ax_den, a_dna, b_dna, layer, idx, ranges, binning)
            ax_cdf.set_title(f"{layer}[{idx}]: EMD {d:.4g} bins ({why})", fontsize=9)
            if k % ncols == 0:
                ax_cdf.set_ylabel("cumulative fraction", fontsize=8)
                ax_den.set_ylabel("fraction per bin", fontsize=8)
        else:
            ax_g = fig.add_subplot(cell)
            _gauss_panel(ax_g, a_dna, b_dna, layer, idx)
            ax_g.set_title(f"{layer}[{idx}]: {unit} {d:.4g} ({why})", fontsize=9)
            if k % ncols == 0:
                ax_g.set_ylabel("density", fontsize=8)
    handles = [Patch(color=A_COLOUR, label=f"{c.a} ({_count(a_dna.num_images, 'image')})"),
               Patch(color=B_COLOUR, label=f"{c.b} ({_count(b_dna.num_images, 'image')})")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False, title=shown,
               title_fontsize=9)
    return fig


# -- matrix ------------------------------------------------------------------------------------
def short_label(name: str, width: int = 28) -> str:
    """`name` cut to `width` characters by an ellipsis in the middle (the start and the end of
    a name are what tell entries apart)."""
    if len(name) <= width:
        return name
    tail = (width - 1) // 3
    return name[:width - 1 - tail] + "…" + name[len(name) - tail:]


@dataclass(frozen=True)
class MatrixLayout:
    cell: float  # inches per row/column
    font: float  # label size (points)
    dpi: int
    annotate: bool  # values written in the cells


def matrix_layout(n: int) -> MatrixLayout:
    """Sizes that keep labels legible from 2 to ~200 entries: cells shrink as n grows (down to
    0.1 in), labels with them (down to 5 pt) and the resolution goes up past 60 entries."""
    cell = min(0.55, max(0.1, 10.0 / max(n, 1)))
    font = min(10.0, max(5.0, cell * 72 * 0.72))
    return MatrixLayout(cell, font, 110 if n <= 60 else 140, n <= 20)


def matrix_figure(names: Sequence[str], m: np.ndarray, metric: str, out: Path) -> Path:
    """`draw_matrix`, written to `out` (PNG)."""
    _check_png(out)
    return _save(draw_matrix(names, m, metric), out, matrix_layout(len(names)).dpi)


def draw_matrix(names: Sequence[str], m: np.ndarray, metric: str):
    """The pairwise matrix in clustered order (`clustering.cluster`: scipy's average linkage
    with optimal leaf order), its dendrogram above, a labelled colour bar."""
    plt = _plt()
    from vdnacli.clustering import cluster

    n = len(names)
    cl = cluster(m)
    order = cl.order
    mm = np.asarray(m, dtype=np.float64)[np.ix_(order, order)]
    labels = [short_label(str(names[i])) for i in order]
    lay = matrix_layout(n)
    side = max(2.5, lay.cell * n)
    dendro_in = min(1.2, 0.25 * side) if cl.linkage is not None else 0.05
    # labels lie outside the grid: savefig's tight bounding box takes them in
    fig = plt.figure(figsize=(side + 0.4, side + dendro_in))
    grid = fig.add_gridspec(2, 2, width_ratios=[side, 0.22], height_ratios=[dendro_in, side], wspace=0.03,
                            hspace=0.01, left=0, right=1, bottom=0, top=1)
    ax = fig.add_subplot(grid[1, 0])
    im = ax.imshow(mm, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=lay.font)
    ax.set_yticks(range(n), labels, fontsize=lay.font)
    ax.tick_params(length=2, pad=1)
    if lay.annotate:
        top = np.nanmax(mm) if mm.size else 0.0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{mm[i, j]:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if mm[i, j] < top / 2 else "black")
    cax = fig.add_subplot(grid[1, 1])
    fig.colorbar(im, cax=cax).set_label(MATRIX_LABEL.get(metric, metric), fontsize=max(lay.font, 8))
    head = fig.add_subplot(grid[0, 0])
    head.axis("off")
    if cl.linkage is not None:
        from scipy.cluster.hierarchy import dendrogram

        dendrogram(cl.linkage, ax=head, no_labels=True, color_threshold=0, above_threshold_color="#555555",
                   link_color_func=lambda _: "#555555")
        head.set_xlim(0, 10 * n)
        head.axis("off")
    head.set_title(f"pairwise {UNITS.get(metric, metric).split(' ')[0]} of {n:,} {'entry' if n == 1 else 'entries'}; "
                   f"order: {cl.method}", fontsize=max(lay.font + 1, 9))
    return fig


def sheet_figure(scores: Sequence[tuple[str, float]], load_image, out: Path, per_group: int = 6, title: str = "") -> Path:
    """`load_image(name) -> PIL.Image` for the ranked names."""
    plt = _plt()
    n = len(scores)
    k = min(per_group, max(1, n // 3)) if n >= 3 else n
    mid = max(0, n // 2 - k // 2)
    groups = [("best", scores[:k], 0), ("middle", scores[mid:mid + k], mid), ("worst", scores[n - k:], n - k)] if n >= 3 else [("all", scores, 0)]
    fig, axes = plt.subplots(len(groups), k, figsize=(1.9 * k, 2.2 * len(groups)), squeeze=False)
    for r, (label, rows, start) in enumerate(groups):
        for c in range(k):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(rows):
                name, d = rows[c]
                try:
                    ax.imshow(load_image(name))
                except Exception:  # an image that fails now is shown as missing
                    pass
                ax.set_title(f"#{start + c + 1} {d:.2f}\n{Path(name).name[:18]}", fontsize=7)
        axes[r][0].text(-0.1, 0.5, label, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


# -- show --------------------------------------------------------------------------------------
def dna_figure(dna, out: Path) -> Path:
    """`draw_dna`, written to `out` (PNG)."""
    _check_png(out)
    return _save(draw_dna(dna), out)


def draw_dna(dna):
    """Per layer, every neuron's histogram as one row (neurons sorted by mean bin), on one
    logarithmic colour scale with its colour bar; Gaussian-only DNAs: mean +- std per neuron."""
    plt = _plt()
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import MaxNLocator

    layers = list(dna.layers)
    fig, axes = plt.subplots(len(layers), 1, figsize=(10, 1.5 * len(layers) + 1.0), squeeze=False,
                             layout="constrained", sharex=dna.hist is not None)
    im = None
    if dna.hist is not None:
        fracs = {l: dna.hist[l].astype(np.float64) / np.maximum(dna.hist[l].sum(axis=1, keepdims=True), 1) for l in layers}
        smallest = min((f[f > 0].min() for f in fracs.values() if (f > 0).any()), default=1e-6)
        largest = max(float(f.max()) for f in fracs.values())
        norm = LogNorm(vmin=max(smallest, 1e-7), vmax=max(largest, smallest * 10))
        cmap = plt.get_cmap("magma").with_extremes(bad="black", under="black")
        bins = next(iter(fracs.values())).shape[1]
    for ax, layer in zip(axes[:, 0], layers):
        if dna.hist is not None:
            h = fracs[layer]
            order = np.argsort((h * np.arange(h.shape[1])).sum(axis=1), kind="stable")
            im = ax.imshow(np.ma.masked_equal(h[order], 0.0), aspect="auto", cmap=cmap, norm=norm,
                           extent=(0, bins, len(order), 0), interpolation="nearest")
            ax.set_ylabel(f"{layer}\n{len(order):,} neurons", fontsize=8)
            ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        elif dna.gauss is not None:
            g = dna.gauss[layer]
            ax.errorbar(np.arange(len(g.mean)), g.mean, yerr=np.sqrt(g.var), fmt=".", ms=2, lw=0.5)
            ax.set_ylabel(f"{layer}\nactivation", fontsize=8)
        ax.tick_params(labelsize=7)
    if im is not None:
        axes[-1, 0].set_xlabel(f"bin (each neuron's kept activation range in {bins:,} bins); rows: neurons sorted "
                               f"by mean bin", fontsize=9)
        fig.colorbar(im, ax=axes[:, 0], shrink=0.6, extend="min").set_label(
            "fraction of the neuron's activations in the bin (log scale; black: none)", fontsize=9)
    else:
        axes[-1, 0].set_xlabel("neuron (mean ± std of its activation)", fontsize=9)
    fig.suptitle(f"DNA {dna.meta.get('name', '')}: {dna.meta.get('extractor')}, {_count(dna.num_images, 'image')}")
    return fig
