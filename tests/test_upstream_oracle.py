"""Agreement with the paper's own code, vdna 0.1.1 (PyPI), used as the oracle.

Its resizer, its normalisation and histogram arithmetic, its loader, its distances and its
whole `make_vdna` run on CPU against ours on the same real images, weights and ranges.
Only what cannot run here is patched, only in these tests: its Hub downloads (they return
files the test wrote) and `.cuda()` (a no-op on CPU tensors). Its arithmetic is never touched.
The networks themselves are compared layer by layer in tests/test_upstream_networks.py.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

vdna = pytest.importorskip("vdna", reason="the oracle: pip install vdna==0.1.1 (the test extra)")
if getattr(vdna, "__version__", None) != "0.1.1":
    pytest.skip("the oracle is vdna 0.1.1", allow_module_level=True)

from vdna.utils import im as up_im  # noqa: E402
from vdna.utils import stats as up_stats  # noqa: E402
from vdna.networks.feature_extraction_model import get_pre_hist_norm_params_from_min_max  # noqa: E402

from vdnacli.binning import upstream_counts  # noqa: E402
from vdnacli.preprocess import ImageRecipe, normalise  # noqa: E402
from vdnacli.ranges import from_upstream  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- real images of many sizes and aspect ratios, JPEG and PNG -------------------------------------
def _photos():
    import skimage.data as d

    rgb = [d.astronaut(), d.coffee(), d.chelsea(), d.rocket(), d.hubble_deep_field(), d.colorwheel()]
    grey = [d.camera(), d.coins(), d.page(), d.text(), d.clock(), d.microaneurysms()]
    return rgb, grey


SIZES = [(224, 224), (333, 517), (1000, 97), (150, 150), (640, 427), (225, 223), (1201, 211), (64, 300)]


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """24 files: real photos resized to odd sizes and aspect ratios (up- and downsampling),
    RGB and greyscale, saved as JPEG (q 90) and PNG."""
    rgb, grey = _photos()
    folder = tmp_path_factory.mktemp("odd")
    k = 0
    for i, arr in enumerate(rgb + grey):
        w, h = SIZES[i % len(SIZES)]
        img = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
        img.save(folder / f"{k:02d}.jpg", quality=90)
        k += 1
        w2, h2 = SIZES[(i + 3) % len(SIZES)]
        Image.fromarray(arr).resize((w2, h2), Image.Resampling.LANCZOS).save(folder / f"{k:02d}.png")
        k += 1
    return folder


# -- preprocessing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("crop", ["none", "center"])
@pytest.mark.parametrize("resize", ["clean", "legacy_pytorch"])
def test_preprocessing_is_vdna_011s_to_the_bit(odd_images, crop, resize):
    files = sorted(odd_images.iterdir())
    theirs = up_im.ResizeDataset(file_paths=[str(p) for p in files], resize_mode=resize, crop_to_square_pre_resize=crop,
                                 size=(224, 224), norm_mean=list(MEAN), norm_std=list(STD))
    recipe = ImageRecipe(size=224, decode_mode="plain", crop=crop, resize=resize)
    for i, p in enumerate(files):
        ours = normalise(torch.from_numpy(recipe.prepare(p.read_bytes()))[None], MEAN, STD)[0]
        want = theirs[i]
        assert ours.dtype == want.dtype and ours.shape == want.shape
        assert torch.equal(ours, want), f"{p.name}: max diff {float((ours - want).abs().max())}"


# -- normalisation and histogram arithmetic ------------------------------------------------------------
def _ranges_json(mins: np.ndarray, maxs: np.ndarray) -> dict:
    return {"mins_per_neuron": {"l": {str(i): float(v) for i, v in enumerate(mins)}},
            "maxs_per_neuron": {"l": {str(i): float(v) for i, v in enumerate(maxs)}}}


def _their_counts(acts: torch.Tensor, ranges: dict, bins: int) -> torch.Tensor:
    """vdna 0.1.1's histogram of activations [B, C, H, W]: its normalisation, then its counting."""
    means, stds = get_pre_hist_norm_params_from_min_max(ranges, 1.2, device="cpu")
    normed = (acts - means["l"]) / stds["l"]
    return up_stats.histogram_per_channel(normed, hist_nb_bins=bins, hist_range=[-1.0, 1.0])


def _our_counts(acts: torch.Tensor, ranges: dict, bins: int) -> torch.Tensor:
    r = from_upstream(ranges, extractor="test")
    mean, std = r.upstream_norm("l")
    return upstream_counts(acts.flatten(2), torch.from_numpy(mean), torch.from_numpy(std), bins)


@pytest.mark.parametrize("bins", [1000, 37, 2])
def test_binning_is_vdna_011s_count_for_count(bins):
    rng = np.random.default_rng(bins)
    c = 48
    mins = rng.normal(-1, 0.5, c)
    maxs = mins + rng.gamma(2.0, 1.0, c)
    mins[:4], maxs[:4] = 0.0, 0.0  # dead neurons: std = 1e-8
    ranges = _ranges_json(mins, maxs)
    lo, hi = mins * 1.2, maxs * 1.2
    # activations spread over and beyond each range (out-of-range values clamp to the edge bins),
    # exact zeros (ReLU), and values placed on (and one float32 ulp around) every bin edge
    a = rng.uniform(lo - 0.3 * (hi - lo + 1), hi + 0.3 * (hi - lo + 1), size=(3, 40, c)).astype(np.float32)
    a[0, :10] = 0.0
    mean, std = (lo + hi) / 2, (hi - lo) / 2 + 1e-8
    edges = np.linspace(-1, 1, bins + 1)
    on_edge = (mean[None, :] + edges[:, None] * std[None, :]).astype(np.float32)  # [bins+1, c]
    near = np.concatenate([on_edge, np.nextafter(on_edge, np.float32(np.inf)), np.nextafter(on_edge, np.float32(-np.inf))])
    a = np.concatenate([a.reshape(-1, c), near]).T[None, :, :, None]  # [1, C, N, 1]
    # vdna 0.1.1 counts with torch.histc once a batch holds B*C*H*W*bins >= 2e6 values (always, for
    # its extractors at 1000 bins); below that it compares against float32 edges, counting a value on
    # an edge twice, a branch we do not follow (README: Interoperating with vdna 0.1.1)
    repeats = max(2, int(np.ceil(2e6 / (a.size * bins))))
    acts = torch.from_numpy(np.ascontiguousarray(np.repeat(a, repeats, axis=0)))  # [r, C, N, 1]
    assert acts.numel() * bins >= 2e6
    theirs = _their_counts(acts, ranges, bins)
    ours = _our_counts(acts, ranges, bins)
    assert torch.equal(ours, theirs.to(torch.int64)), int((ours != theirs).sum())
    assert int(ours.sum()) == acts.numel()


def test_binning_of_real_activations_matches(lite0, sample_dirs):
    """Real network activations (Lite0 on real faces), ranges as vdna 0.1.1 files hold them."""
    from vdnacli.sources import list_images

    refs = list_images(sample_dirs["faces-a"])[:6]
    x = torch.stack([torch.from_numpy(ImageRecipe(224).prepare(r.read_bytes())) for r in refs])
    with torch.inference_mode():
        feats = lite0(normalise(x, lite0.spec.mean, lite0.spec.std))
    for layer in ("stage2", "head"):
        acts = feats[layer]  # [B, C, S]
        flat = acts.transpose(0, 1).reshape(acts.shape[1], -1)
        ranges = _ranges_json(flat.amin(1).double().numpy() * 0.9, flat.amax(1).double().numpy() * 0.9)
        theirs = _their_counts(acts[..., None], ranges, 1000)
        ours = _our_counts(acts[..., None], ranges, 1000)
        assert torch.equal(ours, theirs.to(torch.int64)), layer


def test_ranges_keep_the_json_values_in_float64():
    ranges = _ranges_json(np.array([0.1234567890123, -3.3]), np.array([7.00000000001, 2.5]))
    mean, std = from_upstream(ranges, extractor="t").upstream_norm("l")
    their_mean, their_std = get_pre_hist_norm_params_from_min_max(ranges, 1.2)
    assert np.array_equal(mean, their_mean["l"].flatten().numpy())
    assert np.array_equal(std, their_std["l"].flatten().numpy())
    json.dumps(ranges)


# -- the whole computation: vdna 0.1.1's make_vdna against ours, with its random ResNet-50 ----------------
@contextlib.contextmanager
def _upstream_files(weights: Path, ranges_json: Path):
    """Patches for vdna 0.1.1's downloads (they return the test's files) and `.cuda()`."""
    import vdna.networks.random_resnet50 as up_rr

    def fake_download(repo_id=None, filename=None, **_):
        return {"Random/rand_resnet50/weights.pth": str(weights),
                "Random/rand_resnet50/activation_ranges.json": str(ranges_json)}[filename]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(up_rr, "hf_hub_download", fake_download)
        mp.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # its forward moves batches with .cuda()
        yield


@pytest.fixture(scope="module")
def rand_resnet50_pair(odd_images, tmp_path_factory):
    """(vdna 0.1.1's DNAs, ours) of the same 24 odd-sized images: its random ResNet-50 with one
    weights file, activation ranges measured on the images, hist + gauss + layer-gauss."""
    import torchvision

    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import Run, calibrate, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.sources import list_images

    work = tmp_path_factory.mktemp("rr50")
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    weights = work / "weights.pth"
    torch.save({"model_state_dict": state}, weights)  # vdna 0.1.1's layout of Random/rand_resnet50/weights.pth
    ext = load_extractor("rand-resnet50", "cpu", weights=weights)
    settings = ComputeSettings.for_extractor(ext.spec.name, kinds=("hist", "gauss", "layer-gauss"))
    assert settings.recipe_name() == "vdna-0.1.1"
    refs = list_images(odd_images)
    measured, _ = calibrate([("odd", refs)], ext, settings, run=Run(batch_size=8))
    ranges_json = work / "activation_ranges.json"
    ranges_json.write_text(json.dumps({
        "mins_per_neuron": {l: {str(i): float(v) for i, v in enumerate(m)} for l, m in measured.mins.items()},
        "maxs_per_neuron": {l: {str(i): float(v) for i, v in enumerate(m)} for l, m in measured.maxs.items()}}))
    ours, _ = compute_dna(refs, ext, settings.replace(ranges=ranges_json), Run(batch_size=8))

    from vdna import VDNAProcessor

    theirs = {}
    with _upstream_files(weights, ranges_json):
        for dist in ("histogram-1000", "gaussian", "layer-gaussian"):
            theirs[dist] = VDNAProcessor().make_vdna(
                source=str(odd_images), feat_extractor_name="rand_resnet50", distribution_name=dist, device="cpu",
                batch_size=8, num_workers=0, verbose=False, crop_to_square_pre_resize="none")
    return theirs, ours, work


def test_make_vdna_histograms_agree_bit_for_bit(rand_resnet50_pair):
    from vdnacli.distances import emd_rows

    theirs, ours, _ = rand_resnet50_pair
    up = theirs["histogram-1000"]
    assert up.num_images == ours.num_images == 24
    same = total = 0
    emds = []
    for layer, h in ours.hist.items():
        t = up.data[layer].numpy()
        same += int((t == h).sum())
        total += h.size
        emds.append(emd_rows(h, t))
    emd = float(np.concatenate(emds).mean())
    assert same == total, f"{total - same} of {total} bins differ; mean EMD {emd:.2e} bins"


def test_make_vdna_gaussians_agree_to_float32_rounding(rand_resnet50_pair):
    theirs, ours, _ = rand_resnet50_pair
    g, lg = theirs["gaussian"], theirs["layer-gaussian"]
    for layer in ours.layers:
        np.testing.assert_allclose(ours.gauss[layer].mean, g.data[layer]["mu"].double().numpy(), rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(ours.gauss[layer].var, g.data[layer]["var"].double().numpy(), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(ours.layer_gauss[layer].mean, lg.data[layer]["mu"].numpy(), rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(ours.layer_gauss[layer].cov, lg.data[layer]["sigma"].numpy(), rtol=2e-4, atol=1e-6)


def _other(dna):
    """A second, different DNA of the same shape: neurons rolled within each layer (hist), every
    activation scaled by 1.1 (Gaussians) — what the distance round trips compare against."""
    from vdnacli.dna import DNA, Gaussian, LayerGaussian

    return DNA(meta=dict(dna.meta, name="other"),
               hist={l: np.roll(h, 1, axis=0) for l, h in dna.hist.items()},
               gauss={l: Gaussian(g.count, g.sum * 1.1, g.sumsq * 1.21) for l, g in dna.gauss.items()},
               layer_gauss={l: LayerGaussian(g.count, g.sum * 1.1, g.outer * 1.21) for l, g in dna.layer_gauss.items()})


def test_their_files_import_and_ours_load_in_their_loader(rand_resnet50_pair, tmp_path):
    """Files vdna 0.1.1 saved (with its 0-d object members) import; ours load in its loader, and its
    distance functions on them give our distances to 1e-9 relative."""
    from vdna import load_vdna_from_files
    from vdna.utils.stats import earth_movers_distance, frechet_distance_1d, frechet_distance_multidim

    from vdnacli.distances import compare, make_selection
    from vdnacli.interop import export_upstream, import_upstream

    theirs, ours, _ = rand_resnet50_pair
    other = _other(ours)
    for dist, kind in (("histogram-1000", "hist"), ("gaussian", "gauss"), ("layer-gaussian", "layer-gauss")):
        theirs[dist].save(tmp_path / f"their-{kind}")
        back = import_upstream(tmp_path / f"their-{kind}")
        assert back.kinds == [kind] and back.meta["extractor"] == "rand-resnet50" and back.num_images == 24
        assert back.meta["preprocessing"]["resize"] == "clean" and back.meta["preprocessing"]["decode"] == "plain"
        assert back.meta["binning"] == "vdna-0.1.1"
        for name, dna in (("a", ours), ("b", other)):
            export_upstream(dna, tmp_path / f"{name}-{kind}", kind=kind)
            assert load_vdna_from_files(tmp_path / f"{name}-{kind}").feature_extractor_name == "rand_resnet50"
    np.testing.assert_array_equal(import_upstream(tmp_path / "their-hist").hist["layer1_0"], ours.hist["layer1_0"])

    def both(kind):
        return load_vdna_from_files(tmp_path / f"a-{kind}"), load_vdna_from_files(tmp_path / f"b-{kind}")

    def ours_(kind, metric, layers=None):
        a, b = import_upstream(tmp_path / f"a-{kind}"), import_upstream(tmp_path / f"b-{kind}")
        return compare(a, b, metric, make_selection(a.layers, layers)).distance

    a, b = both("hist")
    emd = float(torch.cat([earth_movers_distance(a.data[l], b.data[l]) for l in ours.layers]).mean())
    assert emd > 1 and abs(emd - ours_("hist", "emd")) <= 1e-9 * emd
    a, b = both("gauss")
    nfd = float(torch.cat([frechet_distance_1d(a.data[l]["mu"].double(), a.data[l]["var"].double(),
                                               b.data[l]["mu"].double(), b.data[l]["var"].double())
                           for l in ours.layers]).mean())
    assert nfd > 0 and abs(nfd - ours_("gauss", "nfd")) <= 1e-9 * nfd
    a, b = both("layer-gauss")
    for layer in ("layer1_0", "layer4_2"):  # 24 images: rank-23 covariances, sqrtm is ill-conditioned there
        fd = float(frechet_distance_multidim(a.data[layer]["mu"], a.data[layer]["sigma"],
                                             b.data[layer]["mu"], b.data[layer]["sigma"]))
        mine = ours_("layer-gauss", "fd", [layer])
        assert fd > 0 and abs(fd - mine) <= 1e-4 * fd, (layer, fd, mine)


def test_layer_frechet_round_trip_to_1e9(tmp_path):
    """Full-rank layer Gaussians (more images than neurons) through both loaders and distances."""
    from vdna import load_vdna_from_files
    from vdna.utils.stats import frechet_distance_multidim

    from vdnacli.distances import compare
    from vdnacli.dna import DNA, LayerGaussian, new_meta
    from vdnacli.interop import export_upstream, import_upstream

    rng = np.random.default_rng(5)
    layers = {"block_0": 48, "last_norm": 32}
    dnas = []
    for k in range(2):
        lg = {}
        for l, n in layers.items():
            x = rng.normal(k * 0.3, 1.0 + 0.2 * k, size=(400, n)) @ rng.normal(size=(n, n)) / np.sqrt(n)
            lg[l] = LayerGaussian(400, x.sum(0), x.T @ x)
        meta = new_meta(extractor="mugs-vit-b16", weights_sha256=None, ranges_sha256=None, layers=layers, bins=None,
                        preprocessing={}, kinds=["layer-gauss"])
        meta["num_images"] = 400
        dnas.append(DNA(meta=meta, layer_gauss=lg))
        export_upstream(dnas[-1], tmp_path / f"d{k}")
    a, b = load_vdna_from_files(tmp_path / "d0"), load_vdna_from_files(tmp_path / "d1")
    mine = compare(import_upstream(tmp_path / "d0"), import_upstream(tmp_path / "d1"), "fd").per_layer
    for l in layers:
        fd = float(frechet_distance_multidim(a.data[l]["mu"], a.data[l]["sigma"], b.data[l]["mu"], b.data[l]["sigma"]))
        assert abs(fd - mine[l]) <= 1e-9 * fd, (l, fd, mine[l])
