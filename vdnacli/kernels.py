"""Counting kernels: activations -> per-neuron histogram counts, all neurons at once.

Reference definition of a bin (the DNA's contract, see `reference_counts`): with the
per-neuron interval [lo, hi] of the activation ranges (margin included),
    scale = float32(B / (hi - lo))        (computed in float64, stored in float32)
    k     = floor((float32(a) - lo) * scale), clamped into [0, B-1]
This is Eq. 9-11 (a_norm = (a - mu) / sigma on [-1, 1], B uniform bins) written so
that every implementation performs the same two float32 operations. Values below the
range land in bin 0, above it in bin B-1; NaN activations are an error.
"""
from __future__ import annotations

import numpy as np
import torch

from vdnacli.errors import VdnaError


def bin_params(lo: np.ndarray, hi: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(lo, scale) as float32, the only numbers the counting kernels see."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    scale = bins / (hi - lo)
    return lo.astype(np.float32), scale.astype(np.float32)


def reference_counts(acts: np.ndarray, lo: np.ndarray, scale: np.ndarray, bins: int) -> np.ndarray:
    """Plain NumPy counts for activations [batch, neurons, positions]; the test oracle."""
    a = np.asarray(acts, dtype=np.float32)
    n = a.shape[1]
    t = (a - lo.astype(np.float32)[None, :, None]) * scale.astype(np.float32)[None, :, None]
    k = np.clip(np.floor(t), 0, bins - 1).astype(np.int64)
    out = np.zeros((n, bins), dtype=np.int64)
    for c in range(n):
        out[c] = np.bincount(k[:, c, :].ravel(), minlength=bins)
    return out


def histogram_counts(acts: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, bins: int) -> torch.Tensor:
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions].

    One vectorised pass: normalise, bin, offset each neuron's bins, one bincount. The
    offset is added in float32 while every index is exactly representable (< 2^24), so the
    indices stay int32 and the work stays in a single reused buffer.
    """
    b, n, s = acts.shape
    if torch.isnan(acts).any():
        raise VdnaError("the extractor produced NaN activations; check the input images and precision")
    t = torch.sub(acts.float(), lo.view(1, n, 1))
    t.mul_(scale.view(1, n, 1)).floor_().clamp_(0, bins - 1)
    if n * bins < 2**24:
        t.add_((torch.arange(n, device=acts.device, dtype=torch.float32) * bins).view(1, n, 1))
        k = t.to(torch.int32)
    else:
        k = t.to(torch.int64)
        k += (torch.arange(n, device=acts.device, dtype=torch.int64) * bins).view(1, n, 1)
    return torch.bincount(k.view(-1), minlength=n * bins).view(n, bins).to(torch.int64)
