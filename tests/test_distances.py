"""Neuron-wise distances (paper sec. 3.3): EMD in bin units, Eq. 5 weighting, 1-D Fréchet,
selections, compatibility checks and exact merging of DNAs. Synthetic DNAs only."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from vdnacli.distances import (
    Comparison,
    compare,
    emd_rows,
    frechet_1d,
    make_selection,
    neuron_distances,
    parse_neuron_specs,
    weighted,
)
from vdnacli.dna import DNA, Gaussian, merge, new_meta
from vdnacli.errors import ConfigError, IncompatibleDNAError, NotFoundError

LAYERS = {"stage1": 6, "head": 10}
PRE = {"crop": "center", "resize": "pil-bicubic-antialias", "size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}


def make_meta(layers=LAYERS, bins=32, kinds=("hist", "gauss"), num_images=10, **over):
    kw = dict(extractor="efficientnet-lite0", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=layers,
              bins=bins, preprocessing=PRE, kinds=kinds)
    kw.update({k: v for k, v in over.items() if k in kw})
    meta = new_meta(**kw)
    meta["num_images"] = num_images
    for k, v in over.items():
        if k not in kw:
            meta[k] = v
    return meta


def gauss_from(samples: np.ndarray) -> Gaussian:
    """Gaussian sufficient statistics of per-image activations [images, neurons]."""
    s = np.asarray(samples, dtype=np.float64)
    return Gaussian(s.shape[0], s.sum(axis=0), (s * s).sum(axis=0))


def random_dna(seed, layers=LAYERS, bins=32, images=10, name=None, **meta_over):
    rng = np.random.default_rng(seed)
    hist = {l: rng.integers(0, 50, size=(n, bins)).astype(np.int64) + 1 for l, n in layers.items()}
    samples = {l: rng.normal(rng.normal(size=n), rng.uniform(0.5, 2, size=n), size=(images, n)) for l, n in layers.items()}
    meta = make_meta(layers=layers, bins=bins, num_images=images, **meta_over)
    if name:
        meta["name"] = name
    return DNA(meta=meta, hist=hist, gauss={l: gauss_from(s) for l, s in samples.items()}), samples


# -- EMD ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bins", [10, 100, 1000])
@pytest.mark.parametrize("density", ["dense", "sparse"])
def test_emd_matches_scipy_wasserstein(bins, density):
    rng = np.random.default_rng(bins + (0 if density == "dense" else 7))
    n = 8
    if density == "dense":
        h1 = rng.integers(0, 1000, size=(n, bins))
        h2 = rng.integers(0, 1000, size=(n, bins))
    else:
        h1 = np.zeros((n, bins), dtype=np.int64)
        h2 = np.zeros((n, bins), dtype=np.int64)
        for row in range(n):
            for h in (h1, h2):
                k = rng.integers(1, 4)
                h[row, rng.choice(bins, size=k, replace=False)] = rng.integers(1, 10_000, size=k)
    got = emd_rows(h1, h2)
    assert got.shape == (n,)
    centres = -1 + (2 * np.arange(bins) + 1) / bins
    for row in range(n):
        ref = wasserstein_distance(centres, centres, u_weights=h1[row], v_weights=h2[row])
        assert got[row] * (2 / bins) == pytest.approx(ref, rel=1e-9, abs=1e-15)
        assert ref > 0


def test_emd_identical_is_exactly_zero_and_symmetric():
    rng = np.random.default_rng(1)
    h1 = rng.integers(0, 300, size=(20, 100))
    h2 = rng.integers(0, 300, size=(20, 100))
    h1[:, 0] += 1
    h2[:, 0] += 1
    assert (emd_rows(h1, h1.copy()) == 0).all()
    np.testing.assert_array_equal(emd_rows(h1, h2), emd_rows(h2, h1))
    assert (emd_rows(h1, h2) > 0).all()


@pytest.mark.parametrize("k", [1, 2, 7, 99])
def test_emd_of_delta_shifted_by_k_bins_is_k(k):
    bins = 100
    h1 = np.zeros((3, bins), dtype=np.int64)
    h2 = np.zeros((3, bins), dtype=np.int64)
    starts = [0, (bins - k) // 2, bins - 1 - k]
    for row, s in enumerate(starts):
        h1[row, s] = 5 + row
        h2[row, s + k] = 1000 * (row + 1)
    np.testing.assert_array_equal(emd_rows(h1, h2), np.full(3, float(k)))


def test_emd_is_invariant_to_count_scaling():
    rng = np.random.default_rng(2)
    h1 = rng.integers(1, 500, size=(10, 64))
    h2 = rng.integers(1, 500, size=(10, 64))
    base = emd_rows(h1, h2)
    # powers of two rescale exactly in floating point
    np.testing.assert_array_equal(emd_rows(4 * h1, h2), base)
    np.testing.assert_allclose(emd_rows(7 * h1, 3 * h2), base, rtol=1e-12)
    np.testing.assert_allclose(emd_rows(h1.astype(np.int32), h2.astype(np.uint16)), base, rtol=1e-12)


def test_emd_rejects_empty_histogram_and_shape_mismatch():
    h = np.ones((2, 5), dtype=np.int64)
    empty = h.copy()
    empty[1] = 0
    with pytest.raises(IncompatibleDNAError, match="no counts"):
        emd_rows(h, empty)
    with pytest.raises(IncompatibleDNAError, match="shapes differ"):
        emd_rows(h, np.ones((2, 6), dtype=np.int64))


# -- Eq. 5 -------------------------------------------------------------------------------------
def test_weighted_without_weights_is_mean_over_all_neurons_not_layers():
    per = {"a": np.array([1.0, 2.0, 3.0, 6.0]), "b": np.array([10.0])}
    # mean over the 5 neurons (22/5), not the mean of the layer means ((3 + 10) / 2)
    assert weighted(per) == pytest.approx(22 / 5, rel=1e-15)


def test_weighted_with_weights_is_sum_of_w_times_emd():
    rng = np.random.default_rng(3)
    per = {"a": rng.uniform(0, 5, 4), "b": rng.uniform(0, 5, 3)}
    w = {"a": rng.uniform(0, 1, 4), "b": rng.uniform(0, 1, 3)}
    expected = float((w["a"] * per["a"]).sum() + (w["b"] * per["b"]).sum())
    assert weighted(per, w) == pytest.approx(expected, rel=1e-12)
    # uniform 1/|N| weights reproduce EMD_avg
    uni = {l: np.full(len(v), 1 / 7) for l, v in per.items()}
    assert weighted(per, uni) == pytest.approx(weighted(per), rel=1e-12)
    with pytest.raises(ConfigError):
        weighted(per, {"a": np.ones(4), "b": np.ones(2)})
    with pytest.raises(ConfigError):
        weighted({"a": np.array([])})


def test_compare_distance_with_weights_and_default():
    a, _ = random_dna(10)
    b, _ = random_dna(11)
    c = compare(a, b)
    per = {l: emd_rows(a.hist[l], b.hist[l]) for l in LAYERS}
    allv = np.concatenate(list(per.values()))
    assert c.distance == pytest.approx(allv.mean(), rel=1e-12)
    for l in LAYERS:
        np.testing.assert_array_equal(c.per_neuron[l], per[l])
        assert c.per_layer[l] == pytest.approx(per[l].mean(), rel=1e-12)
    w = {l: np.linspace(0, 1, n) for l, n in LAYERS.items()}
    cw = compare(a, b, weights=w)
    assert cw.distance == pytest.approx(sum((w[l] * per[l]).sum() for l in LAYERS), rel=1e-12)


# -- selections ---------------------------------------------------------------------------------
def test_make_selection_layers_and_neurons():
    sel = make_selection(LAYERS)
    assert list(sel) == ["stage1", "head"] and all(v is None for v in sel.values())
    sel = make_selection(LAYERS, only_layers=["head"])
    assert list(sel) == ["head"] and sel["head"] is None
    sel = make_selection(LAYERS, neurons={"head": [9, 0, 5, 5]})
    assert list(sel) == ["head"]
    np.testing.assert_array_equal(sel["head"], [0, 5, 9])
    sel = make_selection(LAYERS, only_layers=["stage1"], neurons={"head": [1]})
    assert list(sel) == ["stage1", "head"]
    assert sel["stage1"] is None
    np.testing.assert_array_equal(sel["head"], [1])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"only_layers": ["nope"]}, NotFoundError),  # a layer name that matches nothing (exit 3)
        ({"neurons": {"nope": [0]}}, NotFoundError),
        ({"neurons": {"head": [10]}}, ConfigError),  # head has 10 neurons: 0..9
        ({"neurons": {"head": [-1]}}, ConfigError),
        ({"neurons": {"stage1": []}}, ConfigError),
    ],
)
def test_make_selection_errors(kwargs, error):
    with pytest.raises(error):
        make_selection(LAYERS, **kwargs)


def test_make_selection_accepts_last_index():
    np.testing.assert_array_equal(make_selection(LAYERS, neurons={"head": [9]})["head"], [9])


def test_parse_neuron_specs():
    assert parse_neuron_specs(None) is None
    assert parse_neuron_specs([]) is None
    assert parse_neuron_specs(["head:0,5,10-12"]) == {"head": [0, 5, 10, 11, 12]}
    assert parse_neuron_specs(["head:1", "stage1:2-3", "head:4"]) == {"head": [1, 4], "stage1": [2, 3]}
    assert parse_neuron_specs(["a:b:7"]) == {"a:b": [7]}
    for bad in ["head", ":1", "head:", "head:x", "head:1-y", "head:1,,2"]:
        with pytest.raises(ConfigError):
            parse_neuron_specs([bad])


# -- Fréchet -------------------------------------------------------------------------------------
def test_frechet_1d_is_squared_mean_and_std_difference():
    rng = np.random.default_rng(4)
    x = rng.normal(rng.normal(size=50), rng.uniform(0.1, 3, 50), size=(200, 50))
    y = rng.normal(rng.normal(size=50), rng.uniform(0.1, 3, 50), size=(150, 50))
    d = frechet_1d(gauss_from(x), gauss_from(y))
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = x.std(0, ddof=1), y.std(0, ddof=1)
    np.testing.assert_allclose(d, (m1 - m2) ** 2 + (s1 - s2) ** 2, rtol=1e-9, atol=1e-12)
    assert (d >= 0).all()


def test_frechet_1d_never_negative():
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 1e-3, size=(1000, 500))
    g = gauss_from(x)
    d = frechet_1d(g, Gaussian(g.count, g.sum.copy(), g.sumsq.copy()))
    assert (d >= 0).all()
    assert d.max() <= 1e-12
    # near-equal variances, where v1 + v2 - 2 sqrt(v1 v2) cancels
    d2 = frechet_1d(g, gauss_from(x * (1 + 1e-12)))
    assert (d2 >= 0).all()
    # a single image: variance 0, distance = squared mean difference
    one = gauss_from(np.array([[1.0, -2.0]]))
    two = gauss_from(np.array([[4.0, -2.0]]))
    np.testing.assert_array_equal(frechet_1d(one, two), [9.0, 0.0])


def test_nfd_metric_uses_gaussians():
    a, sa = random_dna(20)
    b, sb = random_dna(21)
    c = compare(a, b, metric="nfd")
    for l in LAYERS:
        exp = (sa[l].mean(0) - sb[l].mean(0)) ** 2 + (sa[l].std(0, ddof=1) - sb[l].std(0, ddof=1)) ** 2
        np.testing.assert_allclose(c.per_neuron[l], exp, rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigError):
        compare(a, b, metric="l2")
    with pytest.raises(ConfigError):
        neuron_distances(a, b, metric="l2")


# -- compatibility ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value",
    [("extractor", "vgg16"), ("ranges_sha256", "x" * 64), ("weights_sha256", "y" * 64)],
)
def test_compare_refuses_different_provenance(field, value):
    a, _ = random_dna(30)
    b, _ = random_dna(31)
    b.meta[field] = value
    with pytest.raises(IncompatibleDNAError):
        compare(a, b)
    with pytest.raises(IncompatibleDNAError):
        compare(b, a)


def test_compare_refuses_different_bins():
    a, _ = random_dna(32, bins=32)
    b, _ = random_dna(33, bins=64)
    with pytest.raises(IncompatibleDNAError, match="bins"):
        compare(a, b)
    # the Gaussians do not depend on bins
    assert compare(a, b, metric="nfd").distance > 0


def test_compare_refuses_different_layers_and_missing_kind():
    a, _ = random_dna(34)
    b, _ = random_dna(35, layers={"stage1": 6, "head": 11})
    with pytest.raises(IncompatibleDNAError):
        compare(a, b)
    c, _ = random_dna(36)
    c.hist = None
    with pytest.raises(IncompatibleDNAError, match="no hist"):
        compare(a, c)


def test_compare_warns_on_different_preprocessing_and_unknown_hashes():
    a, _ = random_dna(40)
    b, _ = random_dna(41)
    assert compare(a, b).warnings == []
    b.meta["preprocessing"] = dict(PRE, crop="none")
    c = compare(a, b)
    assert c.distance > 0
    assert len(c.warnings) == 1 and "preprocessing" in c.warnings[0]
    d, _ = random_dna(42)
    d.meta["ranges_sha256"] = None
    w = compare(a, d).warnings
    assert any("ranges_sha256" in x for x in w)


def test_top_neurons_reports_original_indices_under_selection():
    a, _ = random_dna(50)
    b = DNA(meta=dict(a.meta), hist={l: h.copy() for l, h in a.hist.items()})
    # make neuron 7 of head by far the most different, neuron 3 second
    b.hist["head"][7] = 0
    b.hist["head"][7, -1] = 100
    b.hist["head"][3] = 0
    b.hist["head"][3, a.meta["bins"] // 2] = 100
    sel = make_selection(a.layers, neurons={"head": [2, 3, 7, 9]})
    c = compare(a, b, selection=sel)
    assert isinstance(c, Comparison)
    top = c.top_neurons(2)
    assert [(l, i) for l, i, _ in top] == [("head", 7), ("head", 3)]
    assert top[0][2] == pytest.approx(emd_rows(a.hist["head"][7:8], b.hist["head"][7:8])[0])
    allrows = c.top_neurons(100)
    assert len(allrows) == 4
    assert sorted(i for _, i, _ in allrows) == [2, 3, 7, 9]
    assert {i: d for _, i, d in allrows}[2] == 0.0
    # without a selection the index is the position in the layer
    full = compare(a, b).top_neurons(1)
    assert full[0][:2] == ("head", 7)


# -- merge ----------------------------------------------------------------------------------------
def test_merge_sums_histograms_and_gaussians_exactly():
    parts = [random_dna(60 + i, images=5 + 3 * i, name=f"p{i}") for i in range(3)]
    dnas = [d for d, _ in parts]
    m = merge(dnas, name="all")
    assert m.meta["name"] == "all"
    assert m.num_images == sum(d.num_images for d in dnas)
    assert sorted(m.kinds) == ["gauss", "hist"]
    for l in LAYERS:
        np.testing.assert_array_equal(m.hist[l], sum(d.hist[l] for d in dnas))
        assert m.hist[l].dtype == np.int64
        allx = np.concatenate([s[l] for _, s in parts])
        assert m.gauss[l].count == allx.shape[0]
        np.testing.assert_allclose(m.gauss[l].mean, allx.mean(0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(m.gauss[l].var, allx.var(0, ddof=1), rtol=1e-9, atol=1e-12)
    # the inputs are untouched
    np.testing.assert_array_equal(dnas[0].hist["head"], random_dna(60, images=5)[0].hist["head"])
    # __add__ is merge
    np.testing.assert_array_equal((dnas[0] + dnas[1]).hist["stage1"], dnas[0].hist["stage1"] + dnas[1].hist["stage1"])


def test_merge_image_hashes_are_deduplicated():
    a, _ = random_dna(70)
    b, _ = random_dna(71)
    ha = np.arange(32, dtype=np.uint8).reshape(2, 16)
    hb = np.concatenate([ha[1:], np.full((1, 16), 200, np.uint8)])
    a.image_hashes, b.image_hashes = ha, hb
    m = merge([a, b])
    assert m.image_hashes.shape == (3, 16)
    assert m.meta["images_sha256"] is not None


def test_merge_refuses_incompatible_and_empty():
    a, _ = random_dna(80)
    b, _ = random_dna(81, extractor="vgg16")
    with pytest.raises(IncompatibleDNAError):
        merge([a, b])
    with pytest.raises(IncompatibleDNAError):
        merge([])
    g_only = DNA(meta=make_meta(kinds=("gauss",)), gauss=a.gauss)
    h_only = DNA(meta=make_meta(kinds=("hist",)), hist=a.hist)
    with pytest.raises(IncompatibleDNAError):
        merge([g_only, h_only])
