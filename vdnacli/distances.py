"""Neuron-wise distances between DNAs (paper sec. 3.3).

EMD is in bin units (Eq. 3-4: sum over bins of |CDF1 - CDF2|), the convention of the
paper's tables; multiply by 2/B for the Wasserstein-1 distance in normalised
activation units. EMD_avg is Eq. 5 with W = 1/|N| over the selected neurons.
"fd" is the Fréchet distance between full-covariance layer Gaussians (FID's formula), per
layer, averaged over the selected layers as upstream vdna does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from vdnacli.dna import DNA, Gaussian, LayerGaussian, check_compatible
from vdnacli.errors import ConfigError, IncompatibleDNAError, NotFoundError, not_found

METRICS = {"emd": "hist", "nfd": "gauss", "fd": "layer-gauss"}


def emd_rows(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """EMD (bin units) between matching rows of two count matrices [N, B]."""
    h1 = np.asarray(h1)
    h2 = np.asarray(h2)
    if h1.shape != h2.shape:
        raise IncompatibleDNAError(f"histogram shapes differ: {h1.shape} vs {h2.shape}")
    n1 = h1.sum(axis=-1, keepdims=True, dtype=np.float64)
    n2 = h2.sum(axis=-1, keepdims=True, dtype=np.float64)
    if (n1 == 0).any() or (n2 == 0).any():
        raise IncompatibleDNAError("a histogram has no counts: its EMD is undefined")
    # cumulative counts are exact integers (< 2^53): summed in int64, which numpy does far
    # faster than a float64 cumsum, they give the same float64 CDF
    cdf = np.cumsum(h1, axis=-1, dtype=np.int64) / n1
    cdf -= np.cumsum(h2, axis=-1, dtype=np.int64) / n2
    return np.abs(cdf, out=cdf).sum(axis=-1)


def frechet_1d(g1: Gaussian, g2: Gaussian) -> np.ndarray:
    """Neuron-wise Fréchet distance between univariate Gaussians (dna-fd), never negative."""
    v1, v2 = g1.var, g2.var
    d = (g1.mean - g2.mean) ** 2 + v1 + v2 - 2.0 * np.sqrt(v1 * v2)
    return np.maximum(d, 0.0)


def sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^1/2) computed as tr((S1^1/2 S2 S1^1/2)^1/2): the inner matrix is symmetric PSD, so
    its eigenvalues are real and >= 0 (up to rounding, clipped) and no complex square root is needed."""
    r = sqrtm_psd(s1)
    m = r @ s2 @ r
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_layer(g1: LayerGaussian, g2: LayerGaussian) -> float:
    """Fréchet distance between two multivariate Gaussians (FID's formula), never negative."""
    c1, c2 = g1.cov, g2.cov
    diff = g1.mean - g2.mean
    d = float(diff @ diff) + float(np.trace(c1)) + float(np.trace(c2)) - 2.0 * trace_sqrt_product(c1, c2)
    return max(d, 0.0)


def _marginals(g: LayerGaussian, idx) -> Gaussian:
    """Each neuron's own Gaussian, read off the layer Gaussian's diagonal."""
    g = g.select(idx)
    return Gaussian(g.count, g.sum, np.diagonal(g.outer).copy())


Selection = Mapping[str, np.ndarray | None]  # layer -> neuron indices (None = all)


def unknown_layer(layer: str, layers) -> NotFoundError:
    """'no layer X (did you mean ...?)', or the layers to choose from when none is close."""
    return not_found("layer", layer, list(layers), limit=64)


def make_selection(layers: Mapping[str, int], only_layers=None, neurons=None) -> dict[str, np.ndarray | None]:
    """Validate a selection by layer names and/or {layer: indices}."""
    chosen: dict[str, np.ndarray | None] = {}
    names = list(only_layers) if only_layers else []
    if neurons:
        names += [l for l in neurons if l not in names]
    if not names:
        names = list(layers)
    for layer in names:
        if layer not in layers:
            raise unknown_layer(layer, layers)
        idx = None
        if neurons and layer in neurons and neurons[layer] is not None:
            idx = np.unique(np.asarray(neurons[layer], dtype=np.int64))
            if idx.size == 0 or idx.min() < 0 or idx.max() >= layers[layer]:
                raise ConfigError(f"neuron index out of range for layer '{layer}' (0..{layers[layer] - 1})")
        chosen[layer] = idx
    return chosen


def parse_neuron_specs(specs: list[str] | None) -> dict[str, list[int]] | None:
    """Parse 'LAYER:3,5,10-19' strings into {layer: [indices]}."""
    if not specs:
        return None
    out: dict[str, list[int]] = {}
    for spec in specs:
        layer, sep, rest = spec.rpartition(":")
        if not sep or not layer or not rest:
            raise ConfigError(f"--neuron expects LAYER:INDICES (e.g. head:0,5,10-19), got {spec!r}")
        idx = out.setdefault(layer, [])
        for part in rest.split(","):
            try:
                if "-" in part:
                    lo, hi = part.split("-", 1)
                    idx.extend(range(int(lo), int(hi) + 1))
                else:
                    idx.append(int(part))
            except ValueError:
                raise ConfigError(f"bad neuron index {part!r} in {spec!r}") from None
    return out


def neuron_distances(a: DNA, b: DNA, metric: str = "emd", selection: Selection | None = None) -> dict[str, np.ndarray]:
    """Per-layer arrays of per-neuron distances over the selected neurons.

    For "fd" (a per-layer distance) these are each neuron's marginal 1-D Fréchet distances,
    read from the layer Gaussians' diagonals: they show which neurons drive the layer's FD.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    kind = METRICS[metric]
    check_compatible(a, b, kind)
    selection = selection if selection is not None else make_selection(a.layers)
    out = {}
    for layer, idx in selection.items():
        if metric == "emd":
            h1, h2 = a.hist[layer], b.hist[layer]
            if idx is not None:
                h1, h2 = h1[idx], h2[idx]
            out[layer] = emd_rows(h1, h2)
        elif metric == "fd":
            out[layer] = frechet_1d(_marginals(a.layer_gauss[layer], idx), _marginals(b.layer_gauss[layer], idx))
        else:
            g1, g2 = a.gauss[layer], b.gauss[layer]
            if idx is not None:
                g1 = Gaussian(g1.count, g1.sum[idx], g1.sumsq[idx])
                g2 = Gaussian(g2.count, g2.sum[idx], g2.sumsq[idx])
            out[layer] = frechet_1d(g1, g2)
    return out


def weighted(per_neuron: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray] | None = None) -> float:
    """EMD_W (Eq. 5); with no weights, the average over all selected neurons (EMD_avg)."""
    d = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in per_neuron.values()])
    if d.size == 0:
        raise ConfigError("no neurons selected")
    if weights is None:
        return float(d.mean())
    w = np.concatenate([np.asarray(weights[l], dtype=np.float64).ravel() for l in per_neuron])
    if w.shape != d.shape:
        raise ConfigError("weights do not match the selected neurons")
    return float((w * d).sum())


@dataclass
class Comparison:
    a: str
    b: str
    metric: str
    distance: float
    per_layer: dict[str, float]
    per_neuron: dict[str, np.ndarray]
    warnings: list[str]
    selection: dict[str, np.ndarray | None]

    def top_neurons(self, k: int = 10) -> list[tuple[str, int, float]]:
        """The (layer, neuron index, distance) rows that drive the distance most."""
        rows = []
        for l, arr in self.per_neuron.items():
            idx = self.selection.get(l)
            rows += [(l, int(idx[i]) if idx is not None else i, float(v)) for i, v in enumerate(arr)]
        rows.sort(key=lambda r: -r[2])
        return rows[:k]


def compare(a: DNA, b: DNA, metric: str = "emd", selection: Selection | None = None,
            weights: Mapping[str, np.ndarray] | None = None) -> Comparison:
    kind = METRICS.get(metric)
    if kind is None:
        raise ConfigError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}")
    warnings = check_compatible(a, b, kind)
    selection = selection if selection is not None else make_selection(a.layers)
    per_neuron = neuron_distances(a, b, metric, selection)
    if metric == "fd":
        if weights is not None:
            raise ConfigError("fd is a per-layer distance: neuron weights and masks do not apply to it; "
                              "select neurons with --layer/--neuron, or use emd or nfd")
        per_layer = {l: frechet_layer(a.layer_gauss[l].select(idx), b.layer_gauss[l].select(idx))
                     for l, idx in selection.items()}
        distance = float(np.mean(list(per_layer.values())))
    else:
        per_layer = {l: float(v.mean()) for l, v in per_neuron.items()}
        distance = weighted(per_neuron, weights)
    return Comparison(
        a=a.meta.get("name", "A"),
        b=b.meta.get("name", "B"),
        metric=metric,
        distance=distance,
        per_layer=per_layer,
        per_neuron=per_neuron,
        warnings=warnings,
        selection=dict(selection),
    )
