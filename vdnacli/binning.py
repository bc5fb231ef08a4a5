"""Binning rules: which bin an activation falls in, per neuron, as a DNA records it.

"float32" (ours, `vdnacli.kernels`): k = floor((float32(a) - lo) * scale), clamped into
    [0, B-1], with lo and scale float32 from the ranges' interval; two float32 operations
    that every implementation (NumPy, bincount, Triton) performs identically.
"vdna-0.1.1" (the paper's code): lo, hi = the ranges' min and max x 1.2 in float64,
    mean = (lo + hi) / 2, std = (hi - lo) / 2 + 1e-8, t = (float64(a) - mean) / std clamped
    into [-1, 1], then counted as torch.histc(t, B, -1, 1) counts on a CPU: bin
    int64(((t - (-1)) * B) / 2) in float64, t = 1 in the last bin (histc takes no correction
    against its linspace edges). Emulated here in vectorised form, count for count (tests
    check it against vdna 0.1.1).
"""
from __future__ import annotations

import numpy as np

from vdnacli.errors import ConfigError, VdnaError

RULES = ("float32", "vdna-0.1.1")
_CHUNK = 1 << 23  # activations per float64 pass (~64 MB per temporary)


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ConfigError(f"unknown binning rule '{rule}'; choose from {', '.join(RULES)}")
    return rule


def upstream_norm(mins: np.ndarray, maxs: np.ndarray, scale: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """vdna 0.1.1's per-neuron (mean, std) in float64 from raw minima and maxima."""
    lo = np.asarray(mins, dtype=np.float64) * scale
    hi = np.asarray(maxs, dtype=np.float64) * scale
    return (lo + hi) / 2, (hi - lo) / 2 + 1e-8


def upstream_bin_index(t, bins: int):
    """int64 bin of each float64 value already clamped into [-1, 1], as torch.histc(t, bins,
    -1, 1) places it on a CPU: ((t - (-1)) * bins) / (1 - (-1)), truncated; 1 goes to the last bin."""
    import torch

    return ((t + 1.0) * bins / 2.0).to(torch.int64).clamp_(max=bins - 1)  # t + 1 >= 0: truncation = floor


def upstream_counts(acts, mean, std, bins: int):
    """Counts [neurons, bins] (int64) of activations [batch, neurons, positions] under the
    vdna-0.1.1 rule; `mean`/`std` float64 [neurons] on the activations' device.
    NaN activations raise (vdna 0.1.1 drops them silently)."""
    import torch

    from vdnacli.kernels import _bincount

    b, n, s = acts.shape
    out = torch.zeros(n * bins, dtype=torch.int64, device=acts.device)
    if acts.numel() == 0:
        return out.view(n, bins)
    offsets = (torch.arange(n, device=acts.device, dtype=torch.int64) * bins).view(1, n, 1)
    step = max(1, _CHUNK // max(1, n * s))
    for start in range(0, b, step):
        a = acts[start:start + step].to(torch.float64, memory_format=torch.contiguous_format)
        t = a.sub_(mean.view(1, n, 1)).div_(std.view(1, n, 1))
        if torch.isnan(t).any():
            raise VdnaError("the extractor produced NaN activations; check the input images and precision")
        t.clamp_(-1.0, 1.0)
        k = upstream_bin_index(t, bins).add_(offsets)
        out += _bincount(k, n * bins)
    return out.view(n, bins)
