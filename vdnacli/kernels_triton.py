"""Fused histogram kernel for CUDA (Triton): normalise, bin and count every neuron of a
layer in one pass over its activations, with the per-block histogram held on chip.

Same arithmetic as `vdnacli.kernels.reference_counts` (two float32 operations, floor,
clamp), so counts are identical to the reference. Grid: (neuron, block of positions);
each program builds a local histogram with `tl.histogram` and adds it to the neuron's
row with one vector of atomics, and adds its count of NaN lanes to one counter. Runs under TRITON_INTERPRET=1 on a CPU (tests).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _hist_kernel(x_ptr, lo_ptr, scale_ptr, out_ptr, nan_ptr, S, total, stride_b, stride_c, stride_s, bins,
                 NB: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0)
    chunk = tl.program_id(1)
    lo = tl.load(lo_ptr + c)
    sc = tl.load(scale_ptr + c)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    valid = offs < total
    b = offs // S
    s = offs % S
    x = tl.load(x_ptr + b * stride_b + c * stride_c + s * stride_s, mask=valid, other=0.0).to(tl.float32)
    t = (x - lo) * sc
    nan = (t != t) & valid
    k = tl.floor(tl.where(nan, 0.0, t))
    k = tl.minimum(tl.maximum(k, 0.0), bins - 1.0).to(tl.int32)
    k = tl.where(valid & (nan == 0), k, NB - 1)  # padding and NaN lanes land past `bins`, never stored
    tl.atomic_add(nan_ptr, tl.sum(nan.to(tl.int32), axis=0))
    h = tl.histogram(k, NB)
    cols = tl.arange(0, NB)
    tl.atomic_add(out_ptr + c * bins + cols, h, mask=cols < bins)


def histogram_counts_triton(acts, lo, scale, bins: int, workspace=None, block: int = 4096):
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions] on CUDA.

    NaN activations are not counted; they are tallied on the device in
    `workspace.nan_count` (checked once per run by the caller: no sync per batch), or,
    without a workspace, raise at once.
    """
    import torch

    from vdnacli.errors import VdnaError

    b, n, s = acts.shape
    total = b * s
    nb = triton.next_power_of_2(bins + 1)
    out = torch.zeros((n, bins), dtype=torch.int32, device=acts.device)
    if total == 0:
        return out.to(torch.int64)
    nan = workspace.nan_counter(acts.device) if workspace is not None else torch.zeros(1, dtype=torch.int32,
                                                                                      device=acts.device)
    grid = (n, triton.cdiv(total, block))
    _hist_kernel[grid](acts, lo, scale, out, nan, s, total, acts.stride(0), acts.stride(1), acts.stride(2), bins,
                       NB=nb, BLOCK=block)
    if workspace is None and nan.item():
        raise VdnaError("the extractor produced NaN activations; check the input images and precision")
    return out.to(torch.int64)
