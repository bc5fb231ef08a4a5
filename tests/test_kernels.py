"""The counting kernel (torch, CPU) against the NumPy reference and against Eq. 9-11."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vdnacli.errors import VdnaError
from vdnacli.kernels import Workspace, bin_params, histogram_counts, reference_counts


def run_kernel(acts: np.ndarray, lo: np.ndarray, scale: np.ndarray, bins: int) -> np.ndarray:
    out = histogram_counts(torch.from_numpy(np.ascontiguousarray(acts)), torch.from_numpy(lo), torch.from_numpy(scale), bins)
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
def test_random_normal_activations_match_reference(bins):
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
def test_values_on_bin_edges_match_reference(bins):
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
def test_out_of_range_values_are_clamped_into_first_and_last_bins():
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


def test_infinities_match_reference_in_batches():
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


def test_hand_computed_tiny_example():
    lo, scale = bin_params(np.array([-1.0]), np.array([1.0]), 4)
    assert lo.tolist() == [-1.0] and scale.tolist() == [2.0]
    acts = np.array([[[-1.0, -0.5, 0.0, 0.49, 1.0, 5.0]]], dtype=np.float32)
    got = run_kernel(acts, lo, scale, 4)
    #  -1 -> 0, -0.5 -> 1, 0 -> 2, 0.49 -> 2 (2.98), 1 -> 4 clamped 3, 5 -> 12 clamped 3
    np.testing.assert_array_equal(got, [[1, 1, 2, 2]])
    np.testing.assert_array_equal(reference_counts(acts, lo, scale, 4), [[1, 1, 2, 2]])


def test_neurons_use_their_own_ranges():
    # the same value lands in different bins for neurons with different ranges
    lo, scale = bin_params(np.array([0.0, -2.0, 0.5]), np.array([1.0, 2.0, 4.5]), 4)
    acts = np.full((2, 3, 1), 0.6, dtype=np.float32)
    got = run_kernel(acts, lo, scale, 4)
    # neuron 0: 0.6*4=2.4 -> 2; neuron 1: 2.6*1=2.6 -> 2; neuron 2: 0.1*1=0.1 -> 0
    np.testing.assert_array_equal(got, [[0, 0, 2, 0], [0, 0, 2, 0], [2, 0, 0, 0]])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_input_dtypes_are_binned_as_float32(dtype):
    rng = np.random.default_rng(9)
    bins = 64
    lo, scale = bin_params(np.full(4, -3.0), np.full(4, 3.0), bins)
    t = torch.from_numpy(rng.normal(size=(2, 4, 30))).to(dtype)
    got = histogram_counts(t, torch.from_numpy(lo), torch.from_numpy(scale), bins).numpy()
    ref = reference_counts(t.float().numpy(), lo, scale, bins)
    np.testing.assert_array_equal(got, ref)


def test_float64_activations_are_rounded_to_float32_before_binning():
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
    got = histogram_counts(t, torch.from_numpy(lo), torch.from_numpy(scale), bins).numpy()
    np.testing.assert_array_equal(got, reference_counts(t.float().numpy(), lo, scale, bins))


def test_large_batches_split_over_threads_match_reference():
    """Enough values per bin that the CPU bincount runs in two threads (odd batch too)."""
    rng = np.random.default_rng(4)
    lo64, hi64 = ranges(6, 4)
    lo, scale = bin_params(lo64, hi64, 50)
    for b in (2, 7):
        acts = (lo64 + (hi64 - lo64) * rng.uniform(-0.1, 1.1, (b, 1000, 6))).transpose(0, 2, 1).astype(np.float32)
        check(acts, lo, scale, 50)


def test_workspace_reuse_keeps_no_state_between_batches():
    rng = np.random.default_rng(6)
    lo, scale = bin_params(np.full(3, -2.0), np.full(3, 2.0), 16)
    ws = Workspace()
    for shape in [(4, 3, 40), (4, 3, 40), (2, 3, 7), (3, 3, 40), (5, 3, 40), (1, 3, 40)]:
        acts = rng.normal(size=shape).astype(np.float32)
        got = histogram_counts(torch.from_numpy(acts), torch.from_numpy(lo), torch.from_numpy(scale), 16, ws).numpy()
        np.testing.assert_array_equal(got, reference_counts(acts, lo, scale, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_raises_whatever_else_the_batch_holds(dtype):
    lo, scale = bin_params(np.zeros(2), np.ones(2), 8)
    acts = torch.zeros((3, 2, 50), dtype=dtype)
    acts[0, 0, :5] = float("inf")
    acts[1, 0, :5] = float("-inf")
    acts[2, 1, 49] = float("nan")
    with pytest.raises(VdnaError, match="NaN"):
        histogram_counts(acts, torch.from_numpy(lo), torch.from_numpy(scale), 8)


def test_nan_raises():
    lo, scale = bin_params(np.zeros(2), np.ones(2), 8)
    acts = np.zeros((1, 2, 3), dtype=np.float32)
    acts[0, 1, 2] = np.nan
    with pytest.raises(VdnaError, match="NaN"):
        run_kernel(acts, lo, scale, 8)


# -- Eq. 9-11 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", [10, 256, 1000])
def test_bin_params_implement_eq_9_to_11(bins):
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
