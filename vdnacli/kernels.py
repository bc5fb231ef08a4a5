"""Counting kernels: activations -> per-neuron histogram counts, all neurons at once.

Reference definition of a bin (the DNA's contract, see `reference_counts`): with the
per-neuron interval [lo, hi] of the activation ranges (margin included),
    scale = float32(B / (hi - lo))        (computed in float64, stored in float32)
    k     = floor((float32(a) - lo) * scale), clamped into [0, B-1]
This is Eq. 9-11 (a_norm = (a - mu) / sigma on [-1, 1], B uniform bins) written so
that every implementation performs the same two float32 operations. Values below the
range land in bin 0, above it in bin B-1; NaN activations are an error.

Implementations, all bit-identical to `reference_counts` (`counter_for` picks one):
  histogram_counts      torch ops + one bincount; any device (the fallback)
  histogram_counts_cpu  fused Numba kernel, one pass (vdnacli/kernels_cpu.py; extra `fast`);
                        upstream_counts_cpu: the same kernel under vdna 0.1.1's rule
  histogram_counts_triton  fused Triton kernels on CUDA (vdnacli/kernels_triton.py)
Each takes (acts, lo, scale, bins, workspace=None, out=None); with `out` the counts are
added to a running int64 tensor in place. Design and measurements: docs/performance.md.
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
        return torch.bincount(k.reshape(-1), minlength=size)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, thread_name_prefix="vdna-bincount")
    first = _POOL.submit(torch.bincount, k[: b // 2].reshape(-1), minlength=size)
    second = torch.bincount(k[b // 2 :].reshape(-1), minlength=size)
    return first.result().add_(second)


def _check_out(out: torch.Tensor | None, n: int, bins: int, device: torch.device) -> None:
    if out is not None and (out.dtype != torch.int64 or tuple(out.shape) != (n, bins) or out.device != device
                            or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous int64 tensor of shape ({n}, {bins}) on {device}")


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
                     workspace: Workspace | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions]: one bincount
    of `bin_keys`, with torch ops only (any device; the CPU fallback when Numba is not
    installed). With `out`, the counts are added to it and it is returned."""
    b, n, s = acts.shape
    _check_out(out, n, bins, acts.device)
    counts = _bincount(bin_keys(acts, lo, scale, bins, workspace), n * bins).view(n, bins)
    return counts.to(torch.int64) if out is None else out.add_(counts)


def histogram_counts_cpu(acts: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, bins: int,
                         workspace: Workspace | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """`histogram_counts` on a CPU with the fused Numba kernel (vdnacli.kernels_cpu): one pass
    over the activations, same counts. bfloat16 is read as it is, float16 and float64 are
    rounded to float32 first (as the reference does). NaN activations raise."""
    return _fused_cpu(acts, lo.to(torch.float32), scale.to(torch.float32), bins, out)


def upstream_counts_cpu(acts: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, bins: int,
                        workspace: Workspace | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """vdna 0.1.1's binning rule (`vdnacli.binning.upstream_counts`: float64 (a - mean) / std,
    clamped into [-1, 1], histc's bins) with the same fused Numba kernel and zero-spike
    handling: same counts, one pass. mean, std: float64 [neurons]."""
    return _fused_cpu(acts, mean.to(torch.float64), std.to(torch.float64), bins, out)


def _fused_cpu(acts, p0, p1, bins, out):
    import numba

    from vdnacli.kernels_cpu import count_into

    b, n, s = acts.shape
    _check_out(out, n, bins, acts.device)
    if out is None:
        out = torch.zeros((n, bins), dtype=torch.int64)
    if acts.numel() == 0:
        return out
    if acts.dtype == torch.bfloat16:
        a = acts.contiguous().view(torch.int16).numpy().view(np.uint16)
    else:
        a = acts.to(torch.float32).contiguous().numpy()
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        nan = count_into(a, np.ascontiguousarray(p0.numpy()), np.ascontiguousarray(p1.numpy()), bins, out.numpy())
    finally:
        # Numba's OpenMP layer can share torch's libgomp (same soname) and reset its thread count
        # when it starts: restore it, or the next forward pass runs (and rounds) differently.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    if nan:
        raise VdnaError("the extractor produced NaN activations; check the input images and precision")
    return out


def _numba_available() -> bool:
    """Whether Numba is installed, without importing it (0.5 s): the import and the kernel's
    load from the on-disk cache happen at the first batch."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def upstream_counter_for(device: torch.device):
    """(counting function, its name) under vdna 0.1.1's rule (vdnacli.binning): the fused
    Numba kernel on a CPU when Numba is installed, else the vectorised torch path (any device).
    Same signature as the float32 counters, with (mean, std) float64 in place of (lo, scale)."""
    if device.type == "cuda":
        try:
            from vdnacli.kernels_triton import upstream_counts_triton
        except ImportError:
            pass
        else:
            return upstream_counts_triton, "triton"
    if device.type == "cpu" and _numba_available():
        return upstream_counts_cpu, "numba"
    from vdnacli.binning import upstream_counts

    def count(acts, mean, std, bins, workspace=None, out=None):
        counts = upstream_counts(acts, mean, std, bins)
        return counts if out is None else out.add_(counts)

    return count, "torch-float64"


def counter_for(device: torch.device):
    """(counting function, its name): the fused Triton kernel on CUDA when Triton is
    installed; on a CPU the fused Numba kernel when Numba is installed (extra `fast`);
    else the vectorised bincount path. Every counter takes (acts, lo, scale, bins,
    workspace=None, out=None) and returns int64 counts [neurons, bins] (added to `out`)."""
    if device.type == "cuda":
        try:
            from vdnacli.kernels_triton import histogram_counts_triton
        except ImportError:
            pass
        else:
            return histogram_counts_triton, "triton"
    if device.type == "cpu" and _numba_available():
        return histogram_counts_cpu, "numba"
    return histogram_counts, "bincount"
