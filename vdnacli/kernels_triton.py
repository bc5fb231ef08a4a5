"""Fused histogram kernels for CUDA (Triton): normalise, bin and count every neuron of a
layer in one pass over its activations.

Same arithmetic as `vdnacli.kernels.reference_counts` (two float32 operations, floor,
clamp), so counts are identical to the reference. Grid: (neuron, P programs per neuron),
P sized so that the whole grid is a few programs per SM; each program walks every P-th
tile of its neuron's [batch, positions] plane (2-D tiles of 2**k positions: shifts, no
integer division per value; layer shapes are runtime arguments, so one compiled kernel per
input dtype serves every layer).

The zero spike: ReLU outputs put 35-90 % of a neuron's values on 0.0. Exact zeros (and
-0.0) are left out of the per-value counting and tallied by a reduction instead; at the
end the program adds that tally to the bin that 0.0 falls in, computed by the same bin
function (`_bin_of`) as every other value, so the trick holds for any binning rule.

Two ways to count the other values, same counts (`METHODS`):
  "histogram"  `tl.histogram` per tile, accumulated in registers; one vector of atomics per
               program at the end (Triton <= 3.6 lowers it with warp ballots and one popc per
               bin a lane owns: ~32 popc per value at 1,024 bins; later Triton uses shared-
               memory atomics);
  "atomic"     one global atomic add per value straight into the output row (L2 atomics; no
               per-tile histogram to build, zero spike not among them).
`histogram_counts_triton` times both once per layer shape (CUDA events, first call) and
keeps the faster. NaN lanes are never counted; they are tallied in one device counter.
Runs under TRITON_INTERPRET=1 on a CPU (tests).
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

METHODS = ("histogram", "atomic")
PROGRAMS_PER_SM = 8  # programs in flight per SM the grid aims at (both kernels use 4 warps)
BLOCK = 4096  # values per tile


@triton.jit
def _bin_of(x, lo, sc, bins, RULE: tl.constexpr):
    """The bin rule. RULE 0 ("float32"): floor((x - lo) * scale) clamped into [0, B-1], in
    float32. RULE 1 ("vdna-0.1.1", lo = mean and sc = std in float64): t = (x - mean) / std
    in float64 clamped into [-1, 1], bin ((t + 1) * B) / 2 truncated, 1 in the last bin
    (torch.histc's arithmetic, vdnacli.binning)."""
    if RULE == 0:
        t = (x - lo) * sc
        k = tl.minimum(tl.maximum(tl.floor(t), 0.0), bins - 1.0).to(tl.int32)
    else:
        t = (x.to(tl.float64) - lo) / sc
        t = tl.minimum(tl.maximum(t, -1.0), 1.0)
        k = tl.minimum(((t + 1.0) * bins / 2.0).to(tl.int32), bins - 1)
    return k


@triton.jit
def _tile(x_ptr, c, tile, B, S, stride_b, stride_c, stride_s, lo, sc, bins, log_bs, tiles_s, BLOCK: tl.constexpr,
          RULE: tl.constexpr):
    """One tile of neuron c, BLOCK >> log_bs images x 2**log_bs positions: (bin, mask of the
    values counted one by one, zero mask, NaN mask). Shifts, no division per value."""
    bs = 1 << log_bs
    offs = tl.arange(0, BLOCK)
    ib = (tile // tiles_s) * (BLOCK >> log_bs) + (offs >> log_bs)
    js = (tile % tiles_s) * bs + (offs & (bs - 1))
    valid = (ib < B) & (js < S)
    ptr = x_ptr + c.to(tl.int64) * stride_c + ib.to(tl.int64) * stride_b + js.to(tl.int64) * stride_s
    x = tl.load(ptr, mask=valid, other=1.0).to(tl.float32)
    nan = valid & (x != x)
    zero = valid & (x == 0.0)  # -0.0 too; it lands where 0.0 does
    k = _bin_of(tl.where(nan, 0.0, x), lo, sc, bins, RULE)
    return k, valid & (x == x) & (x != 0.0), zero, nan


@triton.jit
def _finish(out_ptr, nan_ptr, c, zeros, nans, lo, sc, bins, RULE: tl.constexpr):
    """Adds the zero tally to the bin of 0.0 (same rule) and the NaN tally to the counter."""
    k0 = _bin_of(tl.full([1], 0.0, tl.float32), lo, sc, bins, RULE)
    k0 = tl.sum(k0, axis=0)
    nz = tl.sum(zeros.to(tl.int32), axis=0)
    tl.atomic_add(out_ptr + c.to(tl.int64) * bins + k0, nz.to(out_ptr.dtype.element_ty), mask=nz > 0, sem="relaxed")
    nn = tl.sum(nans.to(tl.int32), axis=0)
    tl.atomic_add(nan_ptr, nn, mask=nn > 0, sem="relaxed")


# runtime arguments, not specialised on: no recompilation per layer shape
_RUNTIME = ["B", "S", "stride_b", "stride_c", "bins", "log_bs", "tiles_s", "tiles", "programs"]


@triton.jit(do_not_specialize=_RUNTIME)
def _hist_kernel(x_ptr, lo_ptr, scale_ptr, out_ptr, nan_ptr, B, S, stride_b, stride_c, stride_s, bins, log_bs, tiles_s,
                 tiles, programs, NB: tl.constexpr, BLOCK: tl.constexpr, RULE: tl.constexpr):
    c = tl.program_id(0)
    p = tl.program_id(1)
    lo = tl.load(lo_ptr + c)
    sc = tl.load(scale_ptr + c)
    acc = tl.zeros([NB], dtype=tl.int32)
    zeros = tl.zeros([BLOCK], dtype=tl.int32)
    nans = tl.zeros([BLOCK], dtype=tl.int32)
    tile = p
    while tile < tiles:  # a while loop: Triton's interpreter rejects range() over runtime bounds
        k, counted, zero, nan = _tile(x_ptr, c, tile, B, S, stride_b, stride_c, stride_s, lo, sc, bins, log_bs, tiles_s,
                                      BLOCK, RULE)
        acc += tl.histogram(k, NB, mask=counted)
        zeros += zero.to(tl.int32)
        nans += nan.to(tl.int32)
        tile += programs
    cols = tl.arange(0, NB)
    tl.atomic_add(out_ptr + c.to(tl.int64) * bins + cols, acc.to(out_ptr.dtype.element_ty),
                  mask=(cols < bins) & (acc != 0), sem="relaxed")
    _finish(out_ptr, nan_ptr, c, zeros, nans, lo, sc, bins, RULE)


@triton.jit(do_not_specialize=_RUNTIME)
def _atomic_kernel(x_ptr, lo_ptr, scale_ptr, out_ptr, nan_ptr, B, S, stride_b, stride_c, stride_s, bins, log_bs,
                   tiles_s, tiles, programs, BLOCK: tl.constexpr, RULE: tl.constexpr):
    c = tl.program_id(0)
    p = tl.program_id(1)
    lo = tl.load(lo_ptr + c)
    sc = tl.load(scale_ptr + c)
    row = out_ptr + c.to(tl.int64) * bins
    one = tl.full([BLOCK], 1, dtype=out_ptr.dtype.element_ty)
    zeros = tl.zeros([BLOCK], dtype=tl.int32)
    nans = tl.zeros([BLOCK], dtype=tl.int32)
    tile = p
    while tile < tiles:  # a while loop: Triton's interpreter rejects range() over runtime bounds
        k, counted, zero, nan = _tile(x_ptr, c, tile, B, S, stride_b, stride_c, stride_s, lo, sc, bins, log_bs, tiles_s,
                                      BLOCK, RULE)
        tl.atomic_add(row + k, one, mask=counted, sem="relaxed")
        zeros += zero.to(tl.int32)
        nans += nan.to(tl.int32)
        tile += programs
    _finish(out_ptr, nan_ptr, c, zeros, nans, lo, sc, bins, RULE)


def tile_shape(b: int, s: int, block: int = BLOCK) -> tuple[int, int]:
    """(BB, BS), BB * BS == block, BS a power of two >= 16: the shape that pads the
    [b, s] plane least (ties: longer rows, for coalescing)."""
    best = None
    bs = 16
    while bs <= block:
        bb = block // bs
        padded = triton.cdiv(b, bb) * bb * triton.cdiv(s, bs) * bs
        if best is None or padded <= best[0]:
            best = (padded, bb, bs)
        if bs >= s:
            break
        bs *= 2
    return best[1], best[2]


_SMS: dict = {}


def _programs_per_neuron(n: int, tiles: int, device) -> int:
    """Enough programs for PROGRAMS_PER_SM per SM over the whole grid, each looping over its
    share of tiles (one flush per program, not per tile)."""
    key = str(device)
    if key not in _SMS:
        import torch

        interpreted = os.environ.get("TRITON_INTERPRET") == "1" or device.type != "cuda"
        _SMS[key] = 2 if interpreted else torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(tiles, triton.cdiv(PROGRAMS_PER_SM * _SMS[key], n)))


def _launch(method: str, acts, lo, scale, bins: int, out, nan, block: int, rule: int = 0) -> None:
    b, n, s = acts.shape
    bb, bs = tile_shape(b, s, block)
    tiles = triton.cdiv(b, bb) * triton.cdiv(s, bs)
    programs = _programs_per_neuron(n, tiles, acts.device)
    grid = (n, programs)
    args = (acts, lo, scale, out, nan, b, s, acts.stride(0), acts.stride(1), acts.stride(2), bins, bs.bit_length() - 1,
            triton.cdiv(s, bs), tiles, programs)
    if method == "histogram":
        _hist_kernel[grid](*args, NB=max(32, triton.next_power_of_2(bins)), BLOCK=block, RULE=rule)
    elif method == "atomic":
        _atomic_kernel[grid](*args, BLOCK=block, RULE=rule)
    else:
        raise ValueError(f"unknown counting method {method!r}; expected one of {METHODS}")


_CHOSEN: dict = {}


def _calibrate(acts, lo, scale, bins: int, block: int, rule: int = 0) -> str:
    """The faster method for this layer shape, timed once on this batch (into scratch
    buffers; the counts are the same either way)."""
    import torch

    scratch = torch.zeros((acts.shape[1], bins), dtype=torch.int64, device=acts.device)
    nan = torch.zeros(1, dtype=torch.int32, device=acts.device)
    best = None
    for method in METHODS:
        _launch(method, acts, lo, scale, bins, scratch, nan, block, rule)  # compile, warm up
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(3):
            _launch(method, acts, lo, scale, bins, scratch, nan, block, rule)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end)
        if best is None or ms < best[0]:
            best = (ms, method)
    return best[1]


def chosen_methods() -> dict:
    """{(shape, dtype, bins): method} picked so far in this process (for the GPU bench)."""
    return dict(_CHOSEN)


def histogram_counts_triton(acts, lo, scale, bins: int, workspace=None, out=None, method: str | None = None,
                            block: int = BLOCK, rule: int = 0):
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions] on CUDA.

    With `out` (int64 or int32 [neurons, bins], contiguous, on the device) the counts are
    added to it in place and it is returned: no allocation or conversion per batch. NaN
    activations are not counted; they are tallied on the device in `workspace.nan_counter`
    (checked once per run by the caller: no sync per batch), or, without a workspace, raise
    at once. `method`: one of METHODS; default: the faster one for this layer shape.
    """
    import torch

    from vdnacli.errors import VdnaError

    b, n, s = acts.shape
    if out is None:
        out = torch.zeros((n, bins), dtype=torch.int64, device=acts.device)
    elif out.dtype not in (torch.int64, torch.int32) or tuple(out.shape) != (n, bins) or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous int64/int32 tensor of shape ({n}, {bins})")
    if acts.numel() == 0:
        return out
    nan = workspace.nan_counter(acts.device) if workspace is not None else torch.zeros(1, dtype=torch.int32,
                                                                                      device=acts.device)
    if method is None:
        if os.environ.get("TRITON_INTERPRET") == "1":
            method = "histogram"
        else:
            key = (tuple(acts.shape), str(acts.dtype), bins, str(acts.device), rule)
            if key not in _CHOSEN:
                _CHOSEN[key] = _calibrate(acts, lo, scale, bins, block, rule)
            method = _CHOSEN[key]
    _launch(method, acts, lo, scale, bins, out, nan, block, rule)
    if workspace is None and nan.item():
        raise VdnaError("the extractor produced NaN activations; check the input images and precision")
    return out


def upstream_counts_triton(acts, mean, std, bins: int, workspace=None, out=None, method: str | None = None,
                           block: int = BLOCK):
    """`histogram_counts_triton` under vdna 0.1.1's rule (float64 (a - mean) / std, histc's
    bins; vdnacli.binning): mean, std float64 [neurons] on the device. Same counts as
    binning.upstream_counts."""
    return histogram_counts_triton(acts, mean, std, bins, workspace, out, method, block, rule=1)
