"""Fused counting kernel for CPUs (Numba): normalise, bin and count a layer in one pass.

Same arithmetic as `vdnacli.kernels.reference_counts` (two float32 operations, clamp,
truncation), compiled by Numba for the host CPU, with neither fast-math nor FMA
contraction, so counts are identical to the reference.

Why not torch ops: the torch path (`kernels.histogram_counts`) makes five elementwise
passes over the activations plus `torch.bincount`, whose serial loop also re-reads the
indices twice (min and max). Here each row of activations is binned into a small index
buffer (a vectorised loop, in L1) and scattered at once into the neuron's histogram, which
stays in L1/L2; neurons are split over threads (no shared counters, no atomics).

The zero spike: ReLU outputs put 35-90 % of a neuron's values on 0.0, so consecutive
increments would hit one counter, each waiting for the previous store. Exact zeros (and
-0.0) go instead to SPREAD extra slots in turn; at the end their sum is added to the bin
that 0.0 falls in, computed by the same rule (`_bin_index`) as every other value, so the
trick holds whatever rule maps a value to a bin (a second rule only needs its own index
function; vdna 0.1.1's rule is the second one here). Measured alternatives are in
docs/performance.md.

Compiled on first use (about 3-5 s per input type and rule), then cached on disk: under
$NUMBA_CACHE_DIR when set, else under $XDG_CACHE_HOME/vdna/numba (~/.cache/vdna/numba);
with no writable cache directory it compiles in every process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange
from numba.core import config as _numba_config
from numba.extending import overload

SPREAD = 4  # extra histogram slots per neuron that exact zeros rotate over (a power of two)


def _cache_dir() -> Path | None:
    """Where compiled kernels are kept: never inside the installed package."""
    if _numba_config.CACHE_DIR:  # NUMBA_CACHE_DIR, set by the user
        return Path(_numba_config.CACHE_DIR)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "vdna" / "numba"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _widen(row, buf):  # placeholder, implemented per input type by the overload below
    raise NotImplementedError


@overload(_widen, inline="always")
def _widen_impl(row, buf):
    """float32 rows are read as they are; bfloat16 rows (viewed as uint16) are widened into
    `buf` exactly (a bfloat16 is the top half of a float32)."""
    if row.dtype == numba.float32:
        return lambda row, buf: row
    if row.dtype == numba.uint16:
        def widen(row, buf):
            for j in range(row.shape[0]):
                buf[j] = np.uint32(row[j]) << np.uint32(16)
            return buf.view(np.float32)[: row.shape[0]]
        return widen
    return None


def _bin_index(x, p0, p1, bins):  # placeholder, implemented per rule by the overload below
    raise NotImplementedError


@overload(_bin_index)
def _bin_index_impl(x, p0, p1, bins):
    """The bin of value x for one neuron, by the rule its parameters' type names (chosen
    when the kernel is compiled):
      float32 (lo, scale): the DNA's rule, floor((x - lo) * scale) clamped into [0, B-1]
          in float32 (vdnacli.kernels.reference_counts);
      float64 (mean, std): vdna 0.1.1's, t = (float64(x) - mean) / std clamped into
          [-1, 1], bin int((t + 1) * B / 2) with t = 1 in the last bin (vdnacli.binning).
    NaN maps to some bin here; the kernel counts NaNs separately."""
    if p0 == numba.float32:
        def affine(x, p0, p1, bins):  # p0 = lo, p1 = scale
            top = np.float32(bins - 1)
            t = (x - p0) * p1
            t = t if t > np.float32(0.0) else np.float32(0.0)
            t = t if t < top else top
            return np.int32(t)  # truncation == floor on [0, B-1]
        return affine
    if p0 == numba.float64:
        def vdna011(x, p0, p1, bins):  # p0 = mean, p1 = std
            t = (np.float64(x) - p0) / p1
            t = t if t > -1.0 else -1.0
            t = t if t < 1.0 else 1.0
            k = np.int32((t + 1.0) * np.float64(bins) / 2.0)  # t + 1 >= 0: truncation == floor
            return k if k < bins - 1 else np.int32(bins - 1)
        return vdna011
    return None


@njit(parallel=True, nogil=True)
def _count(acts, p0, p1, bins, out, group):
    """acts [batch, neurons, positions] (float32 or uint16-viewed bfloat16, rows contiguous);
    p0, p1 [neurons]: the rule's parameters (see `_bin_index`); out [neurons, bins] int64,
    added to. Returns the number of NaN activations (not counted).

    Threads take groups of `group` neurons (a group of short rows reads one contiguous
    stretch per image); each neuron has a private int32 histogram with SPREAD extra slots
    that take its exact zeros in turn (value j -> slot bins + j % SPREAD), so the zero spike
    forms no chain of increments to one counter; their sum is added at the end to the bin
    that 0.0 falls in, computed by the same rule (`_bin_index`)."""
    b, n, s = acts.shape
    zero = np.float32(0.0)
    groups = (n + group - 1) // group
    nan = 0
    for g in prange(groups):
        c0 = g * group
        c1 = min(n, c0 + group)
        h = np.zeros((c1 - c0, bins + SPREAD), np.int32)
        idx = np.empty(s, np.int32)
        uidx = idx.view(np.uint32)  # the scatter reads indices unsigned: no negative-index wraparound code
        buf = np.empty(s, np.uint32)
        bad = 0
        for i in range(b):
            for c in range(c0, c1):
                row = _widen(acts[i, c], buf)
                q0 = p0[c]
                q1 = p1[c]
                for j in range(s):  # vectorised: binning only
                    x = row[j]
                    bad += x != x
                    k = _bin_index(x, q0, q1, bins)
                    idx[j] = (bins + (j & (SPREAD - 1))) if x == zero else k  # -0.0 == 0.0 too
                hc = h[c - c0]
                j = 0
                while j + 4 <= s:  # scatter, unrolled
                    hc[uidx[j]] += 1
                    hc[uidx[j + 1]] += 1
                    hc[uidx[j + 2]] += 1
                    hc[uidx[j + 3]] += 1
                    j += 4
                while j < s:
                    hc[uidx[j]] += 1
                    j += 1
        for c in range(c0, c1):
            hc = h[c - c0]
            zeros = 0
            for k in range(bins, bins + SPREAD):
                zeros += hc[k]
            hc[_bin_index(zero, p0[c], p1[c], bins)] += zeros
            for k in range(bins):
                out[c, k] += hc[k]
        nan += bad
    return nan


_CACHED = False


def _enable_cache() -> None:
    global _CACHED
    if not _CACHED:
        path = _cache_dir()
        if path is not None:
            _numba_config.CACHE_DIR = str(path)
            _count.enable_caching()
        _CACHED = True


def neuron_group(positions: int) -> int:
    """Neurons per thread task: short rows (ResNet's 7x7 maps, ViT's 197 tokens) are grouped
    so that a task reads ~1,000 contiguous values per image (measured best: 4-16 neurons of
    49 or 196 values); long rows go one by one."""
    return int(max(1, min(8, 1024 // max(1, positions))))


def count_into(acts: np.ndarray, p0: np.ndarray, p1: np.ndarray, bins: int, out: np.ndarray) -> int:
    """Adds the counts of acts [batch, neurons, positions] (float32, or bfloat16 as uint16)
    to out [neurons, bins] (int64, C-contiguous); returns how many NaN activations were seen
    (not counted). (p0, p1) [neurons]: float32 (lo, scale) for the DNA's rule, float64
    (mean, std) for vdna 0.1.1's."""
    if p0.dtype != p1.dtype or p0.dtype not in (np.float32, np.float64):
        raise TypeError("rule parameters must be both float32 (lo, scale) or both float64 (mean, std)")
    _enable_cache()
    return int(_count(acts, p0, p1, bins, out, neuron_group(acts.shape[2])))
