"""The Triton histogram kernels (the CUDA path) equal the reference counts.

Run through Triton's interpreter (TRITON_INTERPRET=1) on the CPU, in a subprocess so
the variable is set before Triton is imported; on a CUDA machine the same script checks
the compiled kernels (bench/gpu_check.sh runs it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np, torch
    from vdnacli.kernels import reference_counts, bin_params
    from vdnacli.kernels_triton import METHODS, histogram_counts_triton, tile_shape
    dev = torch.device(sys.argv[1])
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    rng = np.random.default_rng(0)
    # tiles: every plane is covered exactly once, whatever its shape
    for b, s in [(1, 1), (2, 49), (128, 3136), (128, 196), (3, 5000), (1, 40000)]:
        bb, bs = tile_shape(b, s, 4096)
        assert bb * bs == 4096 and bs >= 16 and bs & (bs - 1) == 0, (b, s, bb, bs)
    # shapes: batch of 1, one position, several tiles per program, long rows, ragged tails
    cases = [(2, 3, 50, 10), (3, 5, 37, 1000), (1, 2, 3000, 64), (2, 4, 1, 128), (1, 3, 49, 1000)]
    checked = 0
    for B, C, S, bins in cases:
        lo = rng.normal(0, 1, C); hi = lo + rng.uniform(0.5, 3, C)
        lo[0], hi[0] = -0.2, 5.0  # neuron 0: ReLU-like, 0.0 inside the range
        lo[-1], hi[-1] = 0.5, 2.0  # last neuron: 0.0 below the range (clamped into bin 0)
        l32, s32 = bin_params(lo, hi, bins)
        x = rng.normal(0, 2, (B, C, S)).astype(np.float32)
        x[x < 0.3] = 0.0  # the zero spike, and -0.0 in it
        x[..., ::7] *= -1
        # exact bin edges and their float32 neighbours, below and above the range, infinities
        e = (l32[:, None] + (np.arange(S) % (bins + 3) - 1)[None, :] / s32[:, None]).astype(np.float32)
        x[0] = np.where(np.arange(S) % 3 == 0, e, np.where(np.arange(S) % 3 == 1, np.nextafter(e, -np.inf), x[0]))
        x[-1, :, :1] = np.inf
        if S > 1:
            x[-1, :, 1:2] = -np.inf
        if S > 2:
            x[0, :, 2] = np.float32(1e-40)  # a denormal
        ref = reference_counts(x, l32, s32, bins)
        for method in METHODS:
            for t in (T(x), T(x.transpose(0, 2, 1)).transpose(1, 2)):  # contiguous and strided
                got = histogram_counts_triton(t, T(l32), T(s32), bins, block=128, method=method)
                assert got.dtype == torch.int64
                assert (got.cpu().numpy() == ref).all(), (method, B, C, S, bins)
                checked += 1
            # accumulation into running counts, int64 and int32
            for dt in (torch.int64, torch.int32):
                run = torch.full((C, bins), 7, dtype=dt, device=dev)
                back = histogram_counts_triton(T(x), T(l32), T(s32), bins, out=run, block=256, method=method)
                assert back is run and (run.cpu().numpy() == ref + 7).all(), (method, dt)
    # bfloat16 activations are read as they are (exactly widened)
    lo, scale = bin_params(np.full(4, -3.0), np.full(4, 3.0), 64)
    xb = torch.from_numpy(rng.normal(size=(2, 4, 300)).astype(np.float32)).to(torch.bfloat16)
    xb[xb.abs() < 0.5] = 0
    refb = reference_counts(xb.float().numpy(), lo, scale, 64)
    for method in METHODS:
        got = histogram_counts_triton(xb.to(dev), T(lo), T(scale), 64, block=128, method=method)
        assert (got.cpu().numpy() == refb).all(), method
    # the default method (timed on CUDA, fixed under the interpreter) counts the same
    got = histogram_counts_triton(T(x), T(l32), T(s32), bins)
    assert (got.cpu().numpy() == ref).all()
    # NaN lanes are never counted: tallied in the workspace (one check per run), or raised at once
    from vdnacli.errors import VdnaError
    from vdnacli.kernels import Workspace
    lo, hi = np.zeros(3), np.ones(3)
    l32, s32 = bin_params(lo, hi, 16)
    x = rng.uniform(-0.5, 1.5, (2, 3, 40)).astype(np.float32)
    x[1, 2, 7] = np.nan
    x[0, 0, 3] = np.nan
    clean = np.where(np.isnan(x), np.float32(0.5), x)
    ref = reference_counts(clean, l32, s32, 16)
    ref[0, 8] -= 1
    ref[2, 8] -= 1  # the two NaNs, replaced by 0.5 (bin 8) in the reference, are not counted
    for method in METHODS:
        ws = Workspace()
        got = histogram_counts_triton(T(x), T(l32), T(s32), 16, ws, block=32, method=method)
        assert (got.cpu().numpy() == ref).all()
        assert int(ws.nan_counter(dev).item()) == 2
        try:
            ws.check_nan()
        except VdnaError:
            pass
        else:
            raise AssertionError("check_nan did not raise")
        try:
            histogram_counts_triton(T(x), T(l32), T(s32), 16, block=32, method=method)
        except VdnaError:
            pass
        else:
            raise AssertionError("NaN without a workspace did not raise")
    # vdna 0.1.1's rule (float64 (a - mean) / std, histc's bins) gives binning.upstream_counts' counts
    from vdnacli.binning import upstream_counts, upstream_norm
    from vdnacli.kernels_triton import upstream_counts_triton
    for C, S, bins in [(4, 300, 1000), (3, 77, 37)]:
        mins = rng.normal(-1, 0.5, C); maxs = mins + rng.gamma(2.0, 1.0, C)
        mins[0] = maxs[0] = 0.0  # a dead neuron: std = 1e-8
        mean, std = upstream_norm(mins, maxs)
        x = rng.uniform(mins * 1.5 - 1, maxs * 1.5 + 1, (S, C)).T[None].astype(np.float32)
        x[x < 0] = 0.0
        edges = np.linspace(-1, 1, bins + 1)
        on = (mean[:, None] + edges[None, :S] * std[:, None]).astype(np.float32)
        x[0, :, : on.shape[1]] = np.where(np.arange(on.shape[1]) % 2 == 0, on, np.nextafter(on, np.inf))
        x = np.concatenate([x, x[:, :, ::-1]])
        want = upstream_counts(torch.from_numpy(x), torch.from_numpy(mean), torch.from_numpy(std), bins).numpy()
        for method in METHODS:
            got = upstream_counts_triton(T(x), T(mean), T(std), bins, block=128, method=method)
            assert (got.cpu().numpy() == want).all(), ("vdna-0.1.1", method, C, S, bins)
    print("ok", checked)
''')

EXPECTED = "ok 20"


def test_triton_kernel_matches_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT, "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == EXPECTED


def test_compiled_kernel_on_cuda_matches_reference():
    """The compiled kernels (the ones `vdna add` runs on a GPU); skipped without CUDA."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, "cuda"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == EXPECTED
