"""Fused histogram kernel for CUDA (Triton): normalise, bin and count every neuron of a
layer in one pass over its activations, with the per-block histogram held on chip.

Same arithmetic as `vdnacli.kernels.reference_counts` (two float32 operations, floor,
clamp), so counts are identical to the reference. Grid: (neuron, block of positions);
each program builds a local histogram with `tl.histogram` and adds it to the neuron's
row with one vector of atomics. Runs under TRITON_INTERPRET=1 on a CPU (tests).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _hist_kernel(x_ptr, lo_ptr, scale_ptr, out_ptr, S, total, stride_b, stride_c, stride_s, bins,
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
    k = tl.floor(t)
    k = tl.minimum(tl.maximum(k, 0.0), bins - 1.0).to(tl.int32)
    k = tl.where(valid, k, NB - 1)  # padding lanes land in a bin past `bins`, never stored
    h = tl.histogram(k, NB)
    cols = tl.arange(0, NB)
    tl.atomic_add(out_ptr + c * bins + cols, h, mask=cols < bins)


def histogram_counts_triton(acts, lo, scale, bins: int, block: int = 4096):
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions] on CUDA."""
    import torch

    b, n, s = acts.shape
    total = b * s
    nb = triton.next_power_of_2(bins + 1)
    out = torch.zeros((n, bins), dtype=torch.int32, device=acts.device)
    if total == 0:
        return out.to(torch.int64)
    grid = (n, triton.cdiv(total, block))
    _hist_kernel[grid](acts, lo, scale, out, s, total, acts.stride(0), acts.stride(1), acts.stride(2), bins,
                       NB=nb, BLOCK=block)
    return out.to(torch.int64)
