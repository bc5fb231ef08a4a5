"""The CPU counting kernels (torch ops; fused Numba) against the NumPy reference and Eq. 9-11.

Every test that takes `count` runs once per CPU counter: "torch" (`histogram_counts`, the
fallback) and "numba" (`histogram_counts_cpu`, what `vdna add` runs on a CPU with Numba).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vdnacli.errors import VdnaError
from vdnacli.kernels import Workspace, bin_params, counter_for, histogram_counts, histogram_counts_cpu, reference_counts

try:
    import numba  # noqa: F401
except ImportError:
    HAVE_NUMBA = False
else:
    HAVE_NUMBA = True

COUNTERS = [pytest.param(histogram_counts, id="torch"),
            pytest.param(histogram_counts_cpu, id="numba",
                         marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (extra: fast)"))]

_COUNT = [histogram_counts]


@pytest.fixture(params=COUNTERS)
def count(request):
    """The counter under test; `run_kernel` and `check` use it too."""
    _COUNT[0] = request.param
    yield request.param
    _COUNT[0] = histogram_counts


def run_kernel(acts: np.ndarray, lo: np.ndarray, scale: np.ndarray, bins: int) -> np.ndarray:
    out = _COUNT[0](torch.from_numpy(np.ascontiguousarray(acts)), torch.from_numpy(lo), torch.from_numpy(scale), bins)
    assert out.dtype == torch.int64
    assert tuple(out.shape) == (acts.shape[1], bins)
    return out.numpy()


def ranges(n: int, seed: int):
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-5, 0, size=n)
    hi = lo + rng.uniform(0.01, 8, size=n)
    return lo, hi


def check(acts, lo, scale, bins):
    got = run_kernel(acts, lo, scale, bins)
    ref = reference_counts(acts, lo, scale, bins)
    np.testing.assert_array_equal(got, ref)
    b, n, s = acts.shape
    np.testing.assert_array_equal(got.sum(axis=1), np.full(n, b * s))
    return got


@pytest.mark.parametrize("bins", [1, 4, 100, 1000])
def test_random_normal_activations_match_reference(bins, count):
    rng = np.random.default_rng(bins)
    n = 13
    lo64, hi64 = ranges(n, bins)
    lo, scale = bin_params(lo64, hi64, bins)
    centre = ((lo64 + hi64) / 2)[None, :, None]
    width = ((hi64 - lo64) / 2)[None, :, None]
    acts = (centre + width * rng.normal(size=(5, n, 49))).astype(np.float32)
    got = check(acts, lo, scale, bins)
    if bins > 1:
        assert (got[:, 1:-1].sum() > 0) and (got[:, 0].sum() > 0) and (got[:, -1].sum() > 0)


@pytest.mark.parametrize("bins", [4, 10, 1000])
def test_values_on_bin_edges_match_reference(bins, count):
    n = 7
    lo64, hi64 = ranges(n, 100 + bins)
    lo, scale = bin_params(lo64, hi64, bins)
    k = np.arange(bins + 1, dtype=np.float32)
    # every edge lo + k / scale, computed in float32, plus its float32 neighbours
    edges = lo[:, None] + k[None, :] / scale[:, None]  # [n, bins + 1] float32
    assert edges.dtype == np.float32
    vals = np.concatenate(
        [edges, np.nextafter(edges, np.float32(-np.inf)), np.nextafter(edges, np.float32(np.inf))], axis=1
    )
    acts = vals[None, :, :].astype(np.float32)
    check(acts, lo, scale, bins)
    # each float32 edge lands within one bin of its nominal index (k, clamped to B-1)
    t = (edges - lo[:, None]) * scale[:, None]
    kk = np.clip(np.floor(t), 0, bins - 1)
    assert np.abs(kk - np.minimum(k, bins - 1)[None, :]).max() <= 1


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_out_of_range_values_are_clamped_into_first_and_last_bins(count):
    bins = 10
    lo, scale = bin_params(np.array([-1.0, 0.0]), np.array([1.0, 0.5]), bins)
    below = np.array([[-1.5, -100.0, -1e30, -np.inf, np.nextafter(np.float32(-1), np.float32(-2))],
                      [-0.1, -1e-6, -np.inf, -3e38, -1.0]], dtype=np.float32)
    above = np.array([[1.0, 1.5, 1e30, np.inf, 3e38],
                      [0.5, 0.75, np.inf, 1e10, 2.0]], dtype=np.float32)
    acts = np.concatenate([below, above], axis=1)[None]  # [1, 2, 10]
    got = check(acts, lo, scale, bins)
    expected = np.zeros((2, bins), dtype=np.int64)
    expected[:, 0] = 5
    expected[:, -1] = 5
    np.testing.assert_array_equal(got, expected)


def test_infinities_match_reference_in_batches(count):
    rng = np.random.default_rng(3)
    bins = 50
    n = 6
    lo64, hi64 = ranges(n, 3)
    lo, scale = bin_params(lo64, hi64, bins)
    acts = rng.normal(size=(3, n, 20)).astype(np.float32)
    acts[0, :, 0] = np.inf
    acts[1, :, 5] = -np.inf
    acts[2, 2, :] = np.inf
    got = check(acts, lo, scale, bins)
    assert got[2, -1] >= 20 + 1


def test_hand_computed_tiny_example(count):
    lo, scale = bin_params(np.array([-1.0]), np.array([1.0]), 4)
    assert lo.tolist() == [-1.0] and scale.tolist() == [2.0]
    acts = np.array([[[-1.0, -0.5, 0.0, 0.49, 1.0, 5.0]]], dtype=np.float32)
    got = run_kernel(acts, lo, scale, 4)
    #  -1 -> 0, -0.5 -> 1, 0 -> 2, 0.49 -> 2 (2.98), 1 -> 4 clamped 3, 5 -> 12 clamped 3
    np.testing.assert_array_equal(got, [[1, 1, 2, 2]])
    np.testing.assert_array_equal(reference_counts(acts, lo, scale, 4), [[1, 1, 2, 2]])


def test_neurons_use_their_own_ranges(count):
    # the same value lands in different bins for neurons with different ranges
    lo, scale = bin_params(np.array([0.0, -2.0, 0.5]), np.array([1.0, 2.0, 4.5]), 4)
    acts = np.full((2, 3, 1), 0.6, dtype=np.float32)
    got = run_kernel(acts, lo, scale, 4)
    # neuron 0: 0.6*4=2.4 -> 2; neuron 1: 2.6*1=2.6 -> 2; neuron 2: 0.1*1=0.1 -> 0
    np.testing.assert_array_equal(got, [[0, 0, 2, 0], [0, 0, 2, 0], [2, 0, 0, 0]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_input_dtypes_are_binned_as_float32(dtype, count):
    rng = np.random.default_rng(9)
    bins = 64
    lo, scale = bin_params(np.full(4, -3.0), np.full(4, 3.0), bins)
    t = torch.from_numpy(rng.normal(size=(2, 4, 30))).to(dtype)
    got = count(t, torch.from_numpy(lo), torch.from_numpy(scale), bins).numpy()
    ref = reference_counts(t.float().numpy(), lo, scale, bins)
    np.testing.assert_array_equal(got, ref)


def test_float64_activations_are_rounded_to_float32_before_binning(count):
    """Values a hair below bin edges: binned in float64 some land one bin lower than the
    float32 definition puts them; the kernel must follow the definition."""
    bins = 1000
    lo, scale = bin_params(np.array([-0.37]), np.array([1.91]), bins)
    edges = (lo[0] + np.arange(1, bins, dtype=np.float32) / scale[0]).astype(np.float32).astype(np.float64)
    vals = np.concatenate([edges - 3e-9, np.nextafter(edges, -np.inf), edges + 3e-9])
    in_float64 = np.floor(((vals - np.float64(lo[0])) * np.float64(scale[0])).astype(np.float32))
    in_float32 = np.floor((vals.astype(np.float32) - lo[0]) * scale[0])
    assert (in_float64 != in_float32).any()  # the case exists
    t = torch.from_numpy(vals).view(1, 1, -1)
    got = count(t, torch.from_numpy(lo), torch.from_numpy(scale), bins).numpy()
    np.testing.assert_array_equal(got, reference_counts(t.float().numpy(), lo, scale, bins))


def test_large_batches_split_over_threads_match_reference(count):
    """Enough values per bin that the CPU bincount runs in two threads (odd batch too)."""
    rng = np.random.default_rng(4)
    lo64, hi64 = ranges(6, 4)
    lo, scale = bin_params(lo64, hi64, 50)
    for b in (2, 7):
        acts = (lo64 + (hi64 - lo64) * rng.uniform(-0.1, 1.1, (b, 1000, 6))).transpose(0, 2, 1).astype(np.float32)
        check(acts, lo, scale, 50)


def test_workspace_reuse_keeps_no_state_between_batches(count):
    rng = np.random.default_rng(6)
    lo, scale = bin_params(np.full(3, -2.0), np.full(3, 2.0), 16)
    ws = Workspace()
    for shape in [(4, 3, 40), (4, 3, 40), (2, 3, 7), (3, 3, 40), (5, 3, 40), (1, 3, 40)]:
        acts = rng.normal(size=shape).astype(np.float32)
        got = count(torch.from_numpy(acts), torch.from_numpy(lo), torch.from_numpy(scale), 16, ws).numpy()
        np.testing.assert_array_equal(got, reference_counts(acts, lo, scale, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_raises_whatever_else_the_batch_holds(dtype, count):
    lo, scale = bin_params(np.zeros(2), np.ones(2), 8)
    acts = torch.zeros((3, 2, 50), dtype=dtype)
    acts[0, 0, :5] = float("inf")
    acts[1, 0, :5] = float("-inf")
    acts[2, 1, 49] = float("nan")
    with pytest.raises(VdnaError, match="NaN"):
        count(acts, torch.from_numpy(lo), torch.from_numpy(scale), 8)


def test_nan_raises(count):
    lo, scale = bin_params(np.zeros(2), np.ones(2), 8)
    acts = np.zeros((1, 2, 3), dtype=np.float32)
    acts[0, 1, 2] = np.nan
    with pytest.raises(VdnaError, match="NaN"):
        run_kernel(acts, lo, scale, 8)


def test_zero_spike_and_signed_zeros_land_in_the_bin_of_zero(count):
    """ReLU outputs: most values exactly 0.0 (here half of them -0.0), wherever 0.0 falls for
    the neuron: inside the range, exactly on a bin edge, below it (bin 0), above it (bin B-1);
    a second spike at 6.0 (ReLU6)."""
    rng = np.random.default_rng(11)
    bins = 4
    lo64 = np.array([-0.3, -0.25, 0.5, -3.0, -1.0])
    hi64 = np.array([2.0, 0.75, 2.0, -1.0, 7.0])
    lo, scale = bin_params(lo64, hi64, bins)
    assert (0 - lo[1]) * scale[1] == 1.0  # neuron 1: 0.0 is exactly the edge of bin 1
    acts = rng.uniform(-4, 8, size=(3, 5, 203)).astype(np.float32)
    spike = rng.uniform(size=acts.shape) < 0.8
    acts[spike] = 0.0
    acts[spike & (rng.uniform(size=acts.shape) < 0.5)] = -0.0
    acts[:, 4, ::3] = 6.0
    assert np.signbit(acts[acts == 0]).any() and (~np.signbit(acts[acts == 0])).any()
    got = check(acts, lo, scale, bins)
    zeros = (acts == 0).sum(axis=(0, 2))
    assert got[0, 0] >= zeros[0] and got[1, 1] >= zeros[1] and got[2, 0] >= zeros[2] and got[3, -1] >= zeros[3]
    check(np.where(acts == 0, np.float32(0), acts), lo, scale, 1000)


def test_denormals_are_binned_as_they_are(count):
    """Subnormal activations (and a subnormal range) are not flushed to zero: with a range of
    +-4e-39, +-1e-40 and +-1e-45 land on either side of the middle edge."""
    lo, scale = bin_params(np.array([-4e-39, -1.0]), np.array([4e-39, 1.0]), 2)
    tiny = np.finfo(np.float32).smallest_subnormal
    vals = np.array([1e-40, -1e-40, tiny, -tiny, 0.0, -0.0, 1e-39, -1e-39], dtype=np.float32)
    acts = np.stack([vals, vals])[None]  # [1, 2, 8]
    got = check(acts, lo, scale, 2)
    np.testing.assert_array_equal(got, [[5, 3], [0, 8]])  # flushed to zero, all 8 would share one bin


@pytest.mark.parametrize("shape", [(1, 7, 3), (1, 1, 1), (2, 37, 49), (3, 5, 1), (1, 3, 3137)])
def test_strided_inputs_single_images_and_ragged_rows(count, shape):
    """Transposed (non-contiguous) activations, batches of one, rows not a multiple of the
    scatter's unrolling, neuron counts not a multiple of the fused kernel's groups."""
    rng = np.random.default_rng(sum(shape))
    b, n, s = shape
    lo64, hi64 = ranges(n, s)
    lo, scale = bin_params(lo64, hi64, 100)
    x = np.maximum(rng.normal(size=(b, s, n)), 0).astype(np.float32)  # [b, s, n], ReLU'd
    strided = torch.from_numpy(x).transpose(1, 2)  # [b, n, s], not contiguous
    assert not strided.is_contiguous() or min(n, s) == 1
    got = count(strided, torch.from_numpy(lo), torch.from_numpy(scale), 100).numpy()
    np.testing.assert_array_equal(got, reference_counts(x.transpose(0, 2, 1), lo, scale, 100))


def test_counts_are_added_to_out(count):
    rng = np.random.default_rng(12)
    lo, scale = bin_params(np.full(3, -2.0), np.full(3, 2.0), 16)
    running = torch.full((3, 16), 5, dtype=torch.int64)
    total = np.full((3, 16), 5, dtype=np.int64)
    for b in (4, 1, 3):
        acts = rng.normal(size=(b, 3, 30)).astype(np.float32)
        back = count(torch.from_numpy(acts), torch.from_numpy(lo), torch.from_numpy(scale), 16, None, out=running)
        assert back is running
        total += reference_counts(acts, lo, scale, 16)
    np.testing.assert_array_equal(running.numpy(), total)
    with pytest.raises(ValueError, match="out must be"):
        count(torch.zeros((1, 3, 4)), torch.from_numpy(lo), torch.from_numpy(scale), 16, None,
              out=torch.zeros((3, 16), dtype=torch.int32))


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (extra: fast)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernel_under_vdna_0_1_1_rule_equals_the_torch_emulation(dtype):
    """The second binning rule (vdnacli.binning, float64 normalisation + histc bins) through
    the same fused kernel and zero-spike trick: the same counts as `upstream_counts`."""
    from vdnacli.binning import upstream_counts, upstream_norm
    from vdnacli.kernels import upstream_counts_cpu

    rng = np.random.default_rng(13)
    n, bins = 6, 1000
    mins = np.array([-1.0, 0.0, 0.0, 0.5, -3.0, -1e-3])
    maxs = np.array([4.0, 2.0, 1e-3, 2.0, -1.0, 1e-3])
    mean, std = upstream_norm(mins, maxs)
    acts = rng.normal(1, 2, size=(3, n, 257))
    acts[rng.uniform(size=acts.shape) < 0.6] = 0.0  # the spike (0.0 inside, at the edge of, outside the ranges)
    acts[0, :, :5] = [np.inf, -np.inf, 1e30, -1e30, -0.0]
    t = torch.from_numpy(acts).to(dtype)
    m, sd = torch.from_numpy(mean), torch.from_numpy(std)
    ref = upstream_counts(t, m, sd, bins)
    got = upstream_counts_cpu(t, m, sd, bins)
    np.testing.assert_array_equal(got.numpy(), ref.numpy())
    # values exactly on histc's float64 edges, and the float32 values next to them
    edges = (mean[:, None] + std[:, None] * (np.arange(bins + 1)[None, :] * 2.0 / bins - 1.0)).astype(np.float32)
    e = torch.from_numpy(np.concatenate([edges, np.nextafter(edges, np.float32(np.inf)),
                                         np.nextafter(edges, np.float32(-np.inf))], axis=1)[None])
    np.testing.assert_array_equal(upstream_counts_cpu(e, m, sd, bins).numpy(), upstream_counts(e, m, sd, bins).numpy())
    bad = t.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(VdnaError, match="NaN"):
        upstream_counts_cpu(bad, m, sd, bins)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (extra: fast)")
def test_fused_kernel_leaves_torch_thread_count_alone():
    """Numba's OpenMP pool, started by the first call, can share torch's libgomp and reset its
    thread count; the forward passes after it must run as configured (fresh process: the
    pool starts once per process)."""
    import subprocess
    import sys

    code = ("import numpy as np, torch\n"
            "from vdnacli.kernels import bin_params, histogram_counts_cpu\n"
            "lo, sc = bin_params(np.zeros(3), np.ones(3), 10)\n"
            "histogram_counts_cpu(torch.rand(2, 3, 50), torch.from_numpy(lo), torch.from_numpy(sc), 10)\n"
            "print(torch.get_num_threads())\n")
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "1"


def test_cpu_counter_is_the_fused_kernel_when_numba_is_installed():
    fn, name = counter_for(torch.device("cpu"))
    assert (fn, name) == ((histogram_counts_cpu, "numba") if HAVE_NUMBA else (histogram_counts, "bincount"))


# -- Eq. 9-11 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", [10, 256, 1000])
def test_bin_params_implement_eq_9_to_11(bins, count):
    rng = np.random.default_rng(bins)
    n = 9
    lo64, hi64 = ranges(n, 7 * bins)
    lo, scale = bin_params(lo64, hi64, bins)
    assert lo.dtype == np.float32 and scale.dtype == np.float32
    np.testing.assert_allclose(scale, bins / (hi64 - lo64), rtol=1e-7)
    mu = (hi64 + lo64) / 2
    sigma = (hi64 - lo64) / 2
    a = rng.uniform(lo64, hi64, size=(2000, n)).astype(np.float32).astype(np.float64)
    a_norm = (a - mu) / sigma  # Eq. 9: on [-1, 1]
    t = (a_norm + 1) / 2 * bins  # Eq. 10-11: B uniform bins on [-1, 1]
    expected = np.floor(t).astype(np.int64)
    # generic values: keep those clearly away from a bin edge
    ok = np.abs(t - np.round(t)) > 1e-3
    assert ok.mean() > 0.9
    acts = a.T[None].astype(np.float32)  # [1, n, 2000]
    k = np.floor((acts - lo[None, :, None]) * scale[None, :, None]).astype(np.int64)[0].T
    np.testing.assert_array_equal(k[ok], expected[ok])
    # and the counts of those generic values agree with Eq. 9-11
    for c in range(n):
        exp_counts = np.bincount(expected[ok[:, c], c], minlength=bins)
        got = run_kernel(a[ok[:, c], c][None, None, :].astype(np.float32), lo[c : c + 1], scale[c : c + 1], bins)
        np.testing.assert_array_equal(got[0], exp_counts)
