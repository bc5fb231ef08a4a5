"""The Triton histogram kernel (the CUDA path) equals the reference counts.

Run through Triton's interpreter (TRITON_INTERPRET=1) on the CPU, in a subprocess so
the variable is set before Triton is imported; on a CUDA machine the GPU script in
bench/ checks the compiled kernel.
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
    dev = torch.device(sys.argv[1])
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    from vdnacli.kernels_triton import histogram_counts_triton
    rng = np.random.default_rng(0)
    cases = [(2, 3, 50, 10), (3, 5, 37, 1000), (1, 2, 3000, 64), (2, 4, 1, 128)]
    for B, C, S, bins in cases:
        lo = rng.normal(0, 1, C); hi = lo + rng.uniform(0.5, 3, C)
        l32, s32 = bin_params(lo, hi, bins)
        x = rng.normal(0, 2, (B, C, S)).astype(np.float32)
        # exact bin edges, values below and above the range, and infinities
        x[0] = (l32[:, None] + (np.arange(S) % (bins + 3) - 1)[None, :] / s32[:, None]).astype(np.float32)
        x[-1, :, :1] = np.inf
        if S > 1:
            x[-1, :, 1:2] = -np.inf
        ref = reference_counts(x, l32, s32, bins)
        for t in (T(x), T(x.transpose(0, 2, 1)).transpose(1, 2)):
            got = histogram_counts_triton(t, T(l32), T(s32), bins, block=128)
            assert got.dtype == torch.int64
            assert (got.cpu().numpy() == ref).all(), (B, C, S, bins)
            assert got.sum().item() == B * C * S
    # NaN lanes are never counted: tallied in the workspace (one check per run), or raised at once
    from vdnacli.errors import VdnaError
    from vdnacli.kernels import Workspace
    lo, hi = np.zeros(3), np.ones(3)
    l32, s32 = bin_params(lo, hi, 16)
    x = rng.uniform(-0.5, 1.5, (2, 3, 40)).astype(np.float32)
    x[1, 2, 7] = np.nan
    x[0, 0, 3] = np.nan
    ws = Workspace()
    got = histogram_counts_triton(T(x), T(l32), T(s32), 16, ws, block=32)
    clean = np.where(np.isnan(x), np.float32(0.5), x)
    ref = reference_counts(clean, l32, s32, 16)
    ref[0, 8] -= 1
    ref[2, 8] -= 1  # the two NaNs, replaced by 0.5 (bin 8) in the reference, are not counted
    assert (got.cpu().numpy() == ref).all()
    assert int(ws.nan_counter(dev).item()) == 2
    try:
        ws.check_nan()
    except VdnaError:
        pass
    else:
        raise AssertionError("check_nan did not raise")
    try:
        histogram_counts_triton(T(x), T(l32), T(s32), 16, block=32)
    except VdnaError:
        pass
    else:
        raise AssertionError("NaN without a workspace did not raise")
    print("ok", len(cases))
''')


def test_triton_kernel_matches_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT, "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok 4"


def test_compiled_kernel_on_cuda_matches_reference():
    """The compiled kernel (the one `vdna add` runs on a GPU); skipped without CUDA."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, "cuda"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok 4"
