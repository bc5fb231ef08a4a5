"""PNG figures (matplotlib is an optional extra: pip install 'vdnacli[plot]').

compare_figure:  per-layer distance bars + the top-N neurons' normalised histograms overlaid
matrix_figure:   clustered, labelled heatmap of pairwise distances
sheet_figure:    contact sheet of the best, middle and worst ranked images with distances
dna_figure:      overview of a DNA: per layer, the distribution of every neuron (a heatmap)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vdnacli.errors import VdnaError


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VdnaError("plots need matplotlib: pip install 'vdnacli[plot]'") from None
    return plt


def _save(fig, out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise VdnaError(f"plots are written as PNG: use a .png file name (got {out.name})")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return out


def compare_figure(comparison, a_dna, b_dna, out: Path, top: int = 6) -> Path:
    plt = _plt()
    rows = comparison.top_neurons(top)
    ncols = 3
    nrows = 1 + (len(rows) + ncols - 1) // ncols
    fig = plt.figure(figsize=(12, 3.2 * nrows))
    ax = fig.add_subplot(nrows, 1, 1)
    layers = list(comparison.per_layer)
    ax.bar(range(len(layers)), [comparison.per_layer[l] for l in layers], color="#4c72b0")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel(f"mean {comparison.metric}")
    ax.set_title(f"{comparison.a} vs {comparison.b}: {comparison.metric} = {comparison.distance:.3f}")
    for k, (layer, idx, d) in enumerate(rows):
        ax = fig.add_subplot(nrows, ncols, ncols + k + 1)
        if a_dna.hist is not None and b_dna.hist is not None:
            bins = a_dna.hist[layer].shape[1]
            x = np.linspace(-1, 1, bins, endpoint=False) + 1.0 / bins
            for dna, name, colour in ((a_dna, comparison.a, "#dd8452"), (b_dna, comparison.b, "#4c72b0")):
                h = dna.hist[layer][idx].astype(np.float64)
                ax.fill_between(x, h / max(h.sum(), 1), step="mid", alpha=0.45, color=colour, label=name)
            ax.set_xlabel("normalised activation")
        ax.set_title(f"{layer}[{idx}]  {comparison.metric} {d:.2f}", fontsize=9)
        ax.set_yticks([])
        if k == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def cluster_order(m: np.ndarray) -> list[int]:
    """Leaf order of average-linkage agglomerative clustering (small n)."""
    clusters = {i: [i] for i in range(len(m))}
    while len(clusters) > 1:
        keys = list(clusters)
        best = None
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                d = m[np.ix_(clusters[a], clusters[b])].mean()
                if best is None or d < best[0]:
                    best = (d, a, b)
        _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)
    return next(iter(clusters.values())) if clusters else []


def matrix_figure(names: Sequence[str], m: np.ndarray, metric: str, out: Path) -> Path:
    plt = _plt()
    order = cluster_order(m)
    mm = m[np.ix_(order, order)]
    labels = [names[i] for i in order]
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1 + 0.55 * n))
    im = ax.imshow(mm, cmap="viridis")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{mm[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if mm[i, j] < mm.max() / 2 else "black")
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(f"pairwise {metric} (clustered)")
    fig.tight_layout()
    return _save(fig, out)


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


def dna_figure(dna, out: Path) -> Path:
    plt = _plt()
    layers = list(dna.layers)
    fig, axes = plt.subplots(len(layers), 1, figsize=(10, 1.5 * len(layers) + 0.8), squeeze=False)
    for ax, layer in zip(axes[:, 0], layers):
        if dna.hist is not None:
            h = dna.hist[layer].astype(np.float64)
            h = h / np.maximum(h.sum(axis=1, keepdims=True), 1)
            order = np.argsort((h * np.arange(h.shape[1])).sum(axis=1))
            ax.imshow(np.log10(h[order] + 1e-6), aspect="auto", cmap="magma", extent=(-1, 1, len(order), 0))
            ax.set_ylabel(f"{layer}\n{len(order)} n.", fontsize=8)
        elif dna.gauss is not None:
            g = dna.gauss[layer]
            ax.errorbar(np.arange(len(g.mean)), g.mean, yerr=np.sqrt(g.var), fmt=".", ms=2, lw=0.5)
            ax.set_ylabel(layer, fontsize=8)
    axes[-1, 0].set_xlabel("normalised activation (neurons sorted by mean; colour: log10 frequency)")
    fig.suptitle(f"DNA {dna.meta.get('name', '')}: {dna.meta.get('extractor')}, {dna.num_images} images")
    fig.tight_layout()
    return _save(fig, out)
