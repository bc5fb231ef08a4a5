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
function). Measured alternatives are in docs/performance.md.

Compiled on first use (about 3-5 s per input type), then cached on disk: under
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


@njit(inline="always")
def _bin_index(x, lo, scale, top):
    """The DNA's bin rule: floor((x - lo) * scale) clamped into [0, B-1], in float32.
    NaN maps to 0 here; callers count NaNs separately."""
    t = (x - lo) * scale
    t = t if t > np.float32(0.0) else np.float32(0.0)
    t = t if t < top else top
    return np.int32(t)  # truncation == floor on [0, B-1]


@njit(parallel=True, nogil=True)
def _count_affine(acts, lo, scale, bins, out, group):
    """acts [batch, neurons, positions] (float32 or uint16-viewed bfloat16, rows contiguous);
    out [neurons, bins] int64, added to. Returns the number of NaN activations (not counted).

    Threads take groups of `group` neurons (a group of short rows reads one contiguous
    stretch per image); each neuron has a private int32 histogram with SPREAD extra slots
    that take its exact zeros in turn (value j -> slot bins + j % SPREAD), so the zero spike
    forms no chain of increments to one counter; their sum is added at the end to the bin
    that 0.0 falls in, computed by the same rule (`_bin_index`)."""
    b, n, s = acts.shape
    top = np.float32(bins - 1)
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
                lc = lo[c]
                sc = scale[c]
                for j in range(s):  # vectorised: binning only
                    x = row[j]
                    bad += x != x
                    k = _bin_index(x, lc, sc, top)
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
            hc[_bin_index(zero, lo[c], scale[c], top)] += zeros
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
            _count_affine.enable_caching()
        _CACHED = True


def neuron_group(positions: int) -> int:
    """Neurons per thread task: short rows (ResNet's 7x7 maps, ViT's 197 tokens) are grouped
    so that a task reads ~1,000 contiguous values per image (measured best: 4-16 neurons of 49 or 196 values); long rows go one by one."""
    return int(max(1, min(8, 1024 // max(1, positions))))


def count_into(acts: np.ndarray, lo: np.ndarray, scale: np.ndarray, bins: int, out: np.ndarray) -> int:
    """Adds the counts of acts [batch, neurons, positions] (float32, or bfloat16 as uint16)
    to out [neurons, bins] (int64, C-contiguous); returns how many NaN activations were seen
    (not counted). lo, scale: float32 [neurons]."""
    _enable_cache()
    return int(_count_affine(acts, lo, scale, bins, out, neuron_group(acts.shape[2])))
