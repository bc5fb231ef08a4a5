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

from concurrent.futures import ThreadPoolExecutor

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


class Workspace:
    """Buffers reused from batch to batch: a fresh 800 MB float tensor per layer and batch
    costs more in page faults than the arithmetic done in it (measured: 45 ms vs 8 ms)."""

    def __init__(self):
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._nan: torch.Tensor | None = None

    def nan_counter(self, device: torch.device) -> torch.Tensor:
        """NaN activations seen so far by kernels that count them on the device."""
        if self._nan is None:
            self._nan = torch.zeros(1, dtype=torch.int32, device=device)
        return self._nan

    def check_nan(self) -> None:
        if self._nan is not None and int(self._nan.item()):
            raise VdnaError("the extractor produced NaN activations; check the input images and precision")

    def get(self, shape: torch.Size, device: torch.device, index_dtype: torch.dtype):
        """(float32, index) buffers of `shape` [batch, neurons, positions]; one pair per layer
        shape, sized for the largest batch seen (a short last batch uses a leading slice)."""
        b = shape[0]
        key = (tuple(shape[1:]), str(device), index_dtype)
        held = self._buffers.get(key)
        if held is None or held[0].shape[0] < b:
            held = self._buffers[key] = (torch.empty(shape, dtype=torch.float32, device=device),
                                         torch.empty(shape, dtype=index_dtype, device=device))
        return held[0][:b], held[1][:b]


_POOL: ThreadPoolExecutor | None = None


def _bincount(k: torch.Tensor, size: int) -> torch.Tensor:
    """torch.bincount, on CPU split over two threads by images when the values far outnumber
    the bins (torch's CPU bincount is one serial loop; each half releases the GIL)."""
    global _POOL
    b = k.shape[0]
    if k.device.type != "cpu" or b < 2 or torch.get_num_threads() < 2 or k.numel() < 4 * size:
        return torch.bincount(k.view(-1), minlength=size)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="vdna-bincount")
    first = _POOL.submit(torch.bincount, k[: b // 2].reshape(-1), minlength=size)
    second = torch.bincount(k[b // 2 :].reshape(-1), minlength=size)
    return first.result().add_(second)


def bin_keys(acts: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, bins: int,
             workspace: Workspace | None = None) -> torch.Tensor:
    """The flat bin of every activation [batch, neurons, positions]: neuron * bins + bin, in a
    reused int32 (int64 past 2^31 bins) buffer. `histogram_counts` is their bincount.

    Five elementwise passes into reused buffers: t = (a - lo) * scale in float32 (bf16/fp16
    activations are promoted first, as in the reference), clamped into [0, B-1]; converting a
    clamped value to an integer truncates, which equals floor on [0, B-1]; each neuron's bins
    are then offset so that one bincount counts them all. Clamping maps +-inf to the edge bins
    and keeps NaN, so one sum of the clamped values (finite unless a NaN is present) detects
    NaN activations without a separate pass.
    """
    b, n, s = acts.shape
    if acts.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        acts = acts.float()  # round to float32 first, as the reference does (exact for the 16-bit types)
    index_dtype = torch.int32 if n * bins < 2**31 else torch.int64
    t, k = (workspace or Workspace()).get(acts.shape, acts.device, index_dtype)
    if acts.dtype == torch.float32:
        torch.sub(acts, lo.view(1, n, 1), out=t)
    else:  # widen first: a mixed-dtype sub takes torch's slow casting path (measured 5x slower)
        t.copy_(acts).sub_(lo.view(1, n, 1))
    t.mul_(scale.view(1, n, 1)).clamp_(0, bins - 1)
    if acts.numel() and not torch.isfinite(t.sum()):
        raise VdnaError("the extractor produced NaN activations; check the input images and precision")
    k.copy_(t)
    k.add_((torch.arange(n, device=acts.device, dtype=index_dtype) * bins).view(1, n, 1))
    return k


def histogram_counts(acts: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, bins: int,
                     workspace: Workspace | None = None) -> torch.Tensor:
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions]: one bincount
    of `bin_keys`."""
    b, n, s = acts.shape
    return _bincount(bin_keys(acts, lo, scale, bins, workspace), n * bins).view(n, bins).to(torch.int64)


def counter_for(device: torch.device):
    """(counting function, its name): the fused Triton kernel on CUDA when Triton is
    installed, else the vectorised bincount path (CPU, or CUDA without Triton)."""
    if device.type == "cuda":
        try:
            from vdnacli.kernels_triton import histogram_counts_triton
        except ImportError:
            pass
        else:
            return histogram_counts_triton, "triton"
    return histogram_counts, "bincount"
