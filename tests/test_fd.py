"""Layer Gaussians and the Fréchet distance (fd): against an independent FID formula, exact merging,
stability on singular covariances, and the one-pass `--kind hist,gauss,layer-gauss` on real images."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from vdnacli.distances import compare, frechet_layer, make_selection, neuron_distances
from vdnacli.dna import DNA, LayerGaussian, from_arrays, merge, new_meta, to_arrays

PRE = {"crop": "center", "resize": "pil-bicubic-antialias", "size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}


def sums(x: np.ndarray) -> LayerGaussian:
    """Layer Gaussian of per-image features x [n, C] as the pipeline keeps it."""
    return LayerGaussian(len(x), x.sum(0), x.T @ x)


def fid_scipy(x1: np.ndarray, x2: np.ndarray) -> float:
    """The usual FID recipe (pytorch-fid / clean-fid): np.cov + scipy.linalg.sqrtm of S1 S2."""
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def features(seed: int, n: int, c: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Correlated, non-isotropic features: random mixing of heavy-ish tailed sources."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(c, c)) / np.sqrt(c)
    z = rng.standard_t(df=6, size=(n, c)) * scale
    return z @ mix + shift + rng.normal(size=c) * 0.1


@pytest.mark.parametrize("n,c,shift,scale", [(600, 32, 0.5, 1.0), (400, 64, 0.0, 2.0), (3000, 128, 3.0, 0.3)])
def test_fd_equals_scipy_fid(n, c, shift, scale):
    x1 = features(1, n, c)
    x2 = features(2, n + 37, c, shift, scale)
    ours = frechet_layer(sums(x1), sums(x2))
    ref = fid_scipy(x1, x2)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > 0.01


def test_fd_of_a_set_with_itself_is_zero_and_symmetric():
    x1, x2 = features(3, 500, 48), features(4, 500, 48, 1.0)
    g1, g2 = sums(x1), sums(x2)
    scale = np.trace(g1.cov)
    assert 0.0 <= frechet_layer(g1, g1) < 1e-9 * scale
    assert frechet_layer(g1, g2) == pytest.approx(frechet_layer(g2, g1), rel=1e-9)


def test_fd_is_finite_and_non_negative_on_singular_covariances():
    # fewer images than neurons: rank-deficient covariances, where sqrtm(S1 S2) goes complex
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 64))
    g = sums(x)
    for other in (sums(x + 1e-9 * rng.normal(size=x.shape)), sums(rng.normal(size=(12, 64))), g):
        d = frechet_layer(g, other)
        assert np.isfinite(d) and d >= 0.0 and isinstance(d, float)
    # a single image: zero covariance, FD = squared distance of the means
    one, two = sums(x[:1]), sums(x[1:2])
    assert frechet_layer(one, two) == pytest.approx(float(((x[0] - x[1]) ** 2).sum()), rel=1e-12)


def test_layer_gaussian_merges_exactly_and_matches_numpy_cov():
    x = features(6, 301, 16)
    parts = [sums(x[:100]), sums(x[100:250]), sums(x[250:])]
    whole = parts[0] + parts[1] + parts[2]
    assert whole.count == 301
    np.testing.assert_allclose(whole.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whole.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    sub = whole.select(np.array([1, 5, 7]))
    np.testing.assert_allclose(sub.cov, np.cov(x[:, [1, 5, 7]], rowvar=False), rtol=1e-9, atol=1e-12)


def _dna(x_by_layer: dict[str, np.ndarray], name: str) -> DNA:
    layers = {l: v.shape[1] for l, v in x_by_layer.items()}
    meta = new_meta(extractor="synthetic", weights_sha256="w" * 64, ranges_sha256=None, layers=layers, bins=0,
                    preprocessing=PRE, kinds=("layer-gauss",))
    meta["num_images"] = len(next(iter(x_by_layer.values())))
    meta["name"] = name
    return DNA(meta=meta, layer_gauss={l: sums(v) for l, v in x_by_layer.items()})


def test_fd_metric_is_the_mean_of_layer_fds_and_round_trips():
    a = _dna({"l1": features(7, 300, 8), "l2": features(8, 300, 24)}, "a")
    b = _dna({"l1": features(9, 320, 8, 1.0), "l2": features(10, 320, 24, 0.0, 1.5)}, "b")
    c = compare(a, b, "fd")
    expect = {l: fid_scipy(*(features(s, n, k, *extra) for s, n, k, extra in spec))
              for l, spec in {"l1": [(7, 300, 8, ()), (9, 320, 8, (1.0,))],
                              "l2": [(8, 300, 24, ()), (10, 320, 24, (0.0, 1.5))]}.items()}
    for l in expect:
        assert c.per_layer[l] == pytest.approx(expect[l], rel=1e-6)
    assert c.distance == pytest.approx(np.mean(list(expect.values())), rel=1e-6)
    # per-neuron rows: each neuron's marginal 1-D Fréchet distance
    assert c.per_neuron["l1"].shape == (8,) and (c.per_neuron["l1"] >= 0).all()
    # a neuron selection is the FD of the marginal Gaussian of those neurons
    sel = make_selection(a.layers, neurons={"l2": [0, 3, 4]})
    x_a, x_b = features(8, 300, 24)[:, [0, 3, 4]], features(10, 320, 24, 0.0, 1.5)[:, [0, 3, 4]]
    assert compare(a, b, "fd", sel).distance == pytest.approx(fid_scipy(x_a, x_b), rel=1e-6)
    # storage round trip and merge keep the sums exactly
    back = from_arrays(a.meta, to_arrays(a))
    np.testing.assert_array_equal(back.layer_gauss["l2"].outer, a.layer_gauss["l2"].outer)
    xa = {"l1": features(7, 300, 8), "l2": features(8, 300, 24)}
    halves = merge([_dna({l: v[:120] for l, v in xa.items()}, "h1"), _dna({l: v[120:] for l, v in xa.items()}, "h2")])
    assert halves.layer_gauss["l1"].count == 300
    assert compare(halves, a, "fd").distance < 1e-9 * np.trace(a.layer_gauss["l2"].cov)
    with pytest.raises(Exception, match="per-layer"):
        compare(a, b, "fd", weights={"l1": np.ones(8), "l2": np.ones(24)})
    assert set(neuron_distances(a, b, "fd")) == {"l1", "l2"}


def test_one_pass_produces_three_consistent_kinds(sample_dirs, lite0):
    """Real images, real network: hist, gauss and layer-gauss from one pass agree with each other."""
    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings

    def _lite0(kinds):
        return ComputeSettings.for_extractor("efficientnet-lite0", kinds=kinds)
    from vdnacli.sources import list_images

    faces_a, _ = compute_dna(list_images(sample_dirs["faces-a"]), lite0, _lite0(("hist", "gauss", "layer-gauss")),
                             Run(batch_size=20))
    assert faces_a.kinds == ["hist", "gauss", "layer-gauss"]
    for layer, g in faces_a.gauss.items():
        lg = faces_a.layer_gauss[layer]
        assert lg.count == g.count == 40
        np.testing.assert_allclose(lg.mean, g.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.diagonal(lg.cov), g.var, rtol=1e-7, atol=1e-12)
    faces_b, _ = compute_dna(list_images(sample_dirs["faces-b"])[:20], lite0, _lite0(("layer-gauss",)), Run(batch_size=20))
    digits, _ = compute_dna(list_images(sample_dirs["digits-a"])[:20], lite0, _lite0(("layer-gauss",)), Run(batch_size=20))
    sel = make_selection(faces_a.layers, ["head"])
    twin = compare(faces_a, faces_b, "fd", sel).distance
    other = compare(faces_a, digits, "fd", sel).distance
    assert 0 < twin < other / 2
