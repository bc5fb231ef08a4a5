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

A coarser sketch, for the first scan over a large catalog, sums the means over groups of
at most GROUP consecutive neurons of one layer:
  groups:    S_g = sum of the means of group g (float32)
For weights w_i >= 0, sum_i w_i |d_i| >= sum_g (min_{i in g} w_i) |sum_{i in g} d_i| (within a
group, sum |d_i| >= |sum d_i|), so sum_g m_g |S1_g - S2_g| <= EMD_W: a group with an
unselected (zero-weight) neuron contributes nothing, a fully selected one its minimum weight.
"""
from __future__ import annotations

import numpy as np

QUANTILES = 32
GROUP = 32  # neurons per group of the coarse sketch (at most; groups never cross layers)


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


def group_starts(layer_sizes, size: int = GROUP) -> np.ndarray:
    """Offsets (in the concatenated neuron order) where each group starts: every layer of k
    neurons is cut into ceil(k / size) runs of near-equal length. A pure function of the
    layer sizes, so every entry with the same layers has the same groups."""
    starts, offset = [], 0
    for k in layer_sizes:
        k = int(k)
        n = -(-k // size)
        starts.append(offset + (np.arange(n, dtype=np.int64) * k) // max(n, 1))
        offset += k
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def group_sums(mean: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """[..., G] float32 sums of the (float32) neuron means over each group, added in float64."""
    if starts.size == 0:
        return np.zeros((*mean.shape[:-1], 0), dtype=np.float32)
    return np.add.reduceat(np.asarray(mean, dtype=np.float64), starts, axis=-1).astype(np.float32)


def group_weights(w_all: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each group's smallest neuron weight (w_all: every neuron's weight, 0 where unselected)."""
    if starts.size == 0:
        return np.zeros(0)
    return np.minimum.reduceat(np.asarray(w_all, dtype=np.float64), starts)


def _gap(q: np.ndarray, rows: np.ndarray, rel: float) -> np.ndarray:
    """|q - row| in float32, lowered so that it never exceeds the gap between the exact values
    that q and rows round: each operand is within |value| * rel of its exact value, |row|
    <= |q| + d, and the float32 operations here add a few 2^-24 more; the slack
    (2|q| + d) * 4 rel covers all of it."""
    q = np.asarray(q, dtype=np.float32)
    d = np.subtract(np.asarray(rows, dtype=np.float32), q)
    np.abs(d, out=d)
    d *= np.float32(1 - 4 * rel)
    d -= np.abs(q) * np.float32(8 * rel) + np.float32(1e-9)
    return np.maximum(d, np.float32(0), out=d)


def group_bound(qgroups: np.ndarray, groups: np.ndarray, mg: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per-entry lower bound of EMD_W from the group sums [E, G] (mg: group_weights).

    A stored group sum is within rel = 2^-23 of its sum of exact means (the float32 rounding
    of each mean and of the sum; the float64 additions are negligible). Per group, the exact
    gap is at least |S1 - S2| (1 - 4 rel) - |S1| 8 rel (see `_gap`); summed with weights
    m_g >= 0, and without clipping each group's term at 0 (a smaller sum, so still a lower
    bound), the bound is (1 - 4 rel) (|S - Sq| @ m) - (|Sq| 8 rel) @ m: one subtraction, one
    absolute value and one matrix product per block, the cheapest scan there is."""
    rel = 2.0**-23
    m = np.asarray(mg, dtype=np.float64)
    keep = np.flatnonzero(m > 0)
    whole = keep.size == m.size
    q32 = np.asarray(qgroups, dtype=np.float32)[keep]
    m32 = m[keep].astype(np.float32) * np.float32(_sum_slack(0))  # rounded weights never above the exact ones
    offset = float((np.abs(q32.astype(np.float64)) * 8 * rel + 1e-9) @ m[keep]) * (1 + 1e-9)
    scale = (1 - 4 * rel) * _sum_slack(keep.size + 1)  # the float32 subtraction's rounding, and the sum's
    out = np.empty(groups.shape[0])
    buf = None
    for start in range(0, groups.shape[0], chunk):
        block = groups[start : start + chunk]
        block = block if whole else block[:, keep]
        if buf is None or buf.shape[0] != block.shape[0]:
            buf = np.empty(block.shape, dtype=np.float32)
        np.subtract(block, q32, out=buf)
        np.abs(buf, out=buf)
        out[start : start + chunk] = _dot(buf, m32)
    return np.maximum(out * scale - offset, 0.0)


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


def _dot(rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """rows @ w without BLAS: a threaded sgemv on a small block costs more in thread hand-offs
    than the arithmetic (0.3 s instead of 0.04 s for a 100,000 x 320 scan on a busy 2-core
    machine); einsum's own loop is single-threaded. Any summation order is covered by
    `_sum_slack`."""
    return np.einsum("ij,j->i", rows, w)


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
        out[start : start + chunk] = _dot(_mean_gap(qmean, block), w32)
    return out * _sum_slack(n)


def quantile_bound_neurons(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Per-neuron lower bound between quantile sketches qa [N, q+1] and qb [..., N, q+1].

    Integer arithmetic (exact), one candidate at a time: its [N, q] temporaries stay in cache
    where a whole chunk's would not (32 candidates x 10^4 neurons: 40 MB per temporary)."""
    a = qa.astype(np.int32)
    lo_a, hi_a = a[..., :-1], a[..., 1:]
    q = qa.shape[-1] - 1
    flat = qb.reshape(-1, *qb.shape[-2:])
    out = np.empty(flat.shape[:-1], dtype=np.int64)
    g = np.empty(lo_a.shape, dtype=np.int32)
    g2 = np.empty(lo_a.shape, dtype=np.int32)
    for e in range(flat.shape[0]):
        b = flat[e].astype(np.int32)
        np.subtract(lo_a, b[..., 1:], out=g)  # the query's slice lies above the candidate's
        np.subtract(b[..., :-1], hi_a, out=g2)  # or below it
        np.maximum(g, g2, out=g)
        np.maximum(g, 0, out=g)
        g.sum(axis=-1, out=out[e])
    return out.reshape(qb.shape[:-1]) / q


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
