"""Compact per-neuron sketches of histogram DNAs that bound the exact EMD from below.

The 1-D EMD in bin units equals the L1 distance between quantile functions,
EMD = ∫₀¹ |Q₁(p) − Q₂(p)| dp. A sketch keeps, per neuron,
  mean:      the mean bin index (float32)            -> |μ₁ − μ₂| ≤ EMD
  quantiles: Q(j/Q) for j = 0..Q (uint16 bin indices) -> on (p_j, p_j+1] each quantile
             function lies in [Q(p_j), Q(p_j+1)], so the gap between the two intervals,
             times 1/Q, is a lower bound of that slice of the integral.
Both bounds are exact (integer quantiles computed from integer cumulative counts), so a
search that re-ranks by exact EMD until the bound exceeds the K-th best distance returns
exactly the brute-force top K.
"""
from __future__ import annotations

import numpy as np

QUANTILES = 32


def sketch_counts(h: np.ndarray, q: int = QUANTILES) -> tuple[np.ndarray, np.ndarray]:
    """(mean [N] float32, quantiles [N, q+1] uint16) of count rows [N, B]."""
    h = np.asarray(h, dtype=np.int64)
    n, bins = h.shape
    if bins > 65535:
        raise ValueError("sketches support at most 65535 bins")
    cum = np.cumsum(h, axis=1)
    total = cum[:, -1:]
    mean = (h @ np.arange(bins, dtype=np.float64)) / np.maximum(total[:, 0], 1)
    quant = np.empty((n, q + 1), dtype=np.uint16)
    quant[:, 0] = np.argmax(h > 0, axis=1)
    scaled = cum * q  # Q(p_j) = min k with cum[k] / total >= j / q  <=>  cum[k] * q >= j * total
    for j in range(1, q + 1):
        quant[:, j] = np.argmax(scaled >= j * total, axis=1)
    return mean.astype(np.float32), quant


def sketch_dna_hist(hist: dict[str, np.ndarray], q: int = QUANTILES) -> tuple[np.ndarray, np.ndarray]:
    parts = [sketch_counts(h, q) for h in hist.values()]
    return np.concatenate([m for m, _ in parts]), np.concatenate([x for _, x in parts])


def _mean_gap(qmean: np.ndarray, means: np.ndarray) -> np.ndarray:
    """|mu1 - mu2| in float32, lowered by more than every rounding it carries, so it never
    exceeds the true gap: each stored mean is within |mu| 2^-24 of its exact value and the
    float32 difference within d 2^-24 of the stored one; with |m| <= |q| + d, the slack
    (2|q| + d) 2^-21 covers all of it (and the two float32 operations that apply it)."""
    q = np.asarray(qmean, dtype=np.float32)
    d = np.subtract(np.asarray(means, dtype=np.float32), q)
    np.abs(d, out=d)
    d *= np.float32(1 - 2.0**-21)
    d -= np.abs(q) * np.float32(2.0**-20) + np.float32(1e-9)
    return np.maximum(d, np.float32(0), out=d)


def _sum_slack(n: int) -> float:
    """Relative factor that makes a float32 weighted sum of n non-negative terms a lower
    bound of the exact sum, whatever order BLAS adds them in (n u / (1 - n u), u = 2^-24,
    per product and per addition; doubled)."""
    return max(0.0, 1.0 - (n + 2) * 2.0**-22)


def mean_bound(qmean: np.ndarray, means: np.ndarray, w: np.ndarray | None = None,
               cols: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
    """Per-entry lower bound of EMD_W (Eq. 5, weights w >= 0 over the selected neurons)
    from the neuron means [E, N]; w = 1/N gives EMD_avg. float32 throughout (the first
    stage of a search scans every entry), in row chunks so memory stays a small multiple
    of one chunk."""
    if cols is not None:
        qmean = qmean[cols]
    n = qmean.shape[0]
    w = np.full(n, 1.0 / n) if w is None else np.asarray(w, dtype=np.float64)
    w32 = w.astype(np.float32)
    w32 *= np.float32(_sum_slack(0))  # w rounded to float32 may exceed w by 2^-24: lower it
    out = np.empty(means.shape[0])
    for start in range(0, means.shape[0], chunk):
        block = means[start : start + chunk]
        if cols is not None:
            block = block[:, cols]
        out[start : start + chunk] = _mean_gap(qmean, block) @ w32
    return out * _sum_slack(n)


def quantile_bound_neurons(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Per-neuron lower bound between quantile sketches qa [N, q+1] and qb [..., N, q+1]."""
    a = qa.astype(np.int32)
    b = qb.astype(np.int32)
    gap = np.maximum(a[..., :-1] - b[..., 1:], b[..., :-1] - a[..., 1:])
    q = qa.shape[-1] - 1
    return np.maximum(gap, 0).sum(axis=-1) / q


def combined_bound_neurons(qmean, qquant, means, quants, cols=None) -> np.ndarray:
    """Per entry and selected neuron [E, n]: the larger of the mean and quantile bounds."""
    if cols is not None:
        qmean, qquant, means, quants = qmean[cols], qquant[cols], means[:, cols], quants[:, cols]
    return np.maximum(quantile_bound_neurons(qquant, quants), _mean_gap(qmean, means))


def combined_bound(qmean, qquant, means, quants, w=None, cols=None) -> np.ndarray:
    """Per-entry lower bound: per neuron the larger of the mean and quantile bounds, weighted by w."""
    per_neuron = combined_bound_neurons(qmean, qquant, means, quants, cols)
    w = np.full(per_neuron.shape[-1], 1.0 / per_neuron.shape[-1]) if w is None else w
    return per_neuron @ w
