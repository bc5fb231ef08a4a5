"""The paper's extractors (Tables 4 and 5), weights from a local Hugging Face cache (offline),
--weights files, generated random weights, timm models, ranges in upstream's format, crop modes,
names across versions and vdna 0.1.1.

Networks are built with random weights: nothing is downloaded. The Hub code path runs against
a Hugging Face cache that the tests populate (HF_HOME + HF_HUB_OFFLINE=1). Agreement of the
activations with vdna 0.1.1's networks is checked in tests/test_upstream_networks.py.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vdnacli.errors import ExtractorError, IncompatibleDNAError
from vdnacli.extractors import all_specs, build_module, get_spec, load_extractor, packaged_ranges
from vdnacli.extractors import weights as weights_mod

# Paper Table 4 (neurons per layer) and Table 5 (input size); dinov2 and vgg16 are not in the tables.
RESNET50 = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
VIT_S = [384] * 13
VIT_B = [768] * 13
VIT_L = [1024] * 25
INCEPTION = [64, 192, 768, 2048]
VGG16 = [64, 64, 128, 128, 256, 256, 256] + [512] * 6
EXPECTED = {
    "mugs-vit-s16": (VIT_S, 224, 197),
    "mugs-vit-b16": (VIT_B, 224, 197),
    "mugs-vit-l16": (VIT_L, 224, 197),
    "dino-vit-s16": (VIT_S, 224, 197),
    "dino-vit-b16": (VIT_B, 224, 197),
    "clip-vit-b16": (VIT_B, 224, 1),  # last_norm: the class token only, as upstream
    "dinov2-vit-b14": (VIT_B, 224, 257),
    "inception-v3": (INCEPTION, 299, 1),
    "dino-resnet50": (RESNET50, 224, 49),
    "rand-resnet50": (RESNET50, 224, 49),
    "rand-resnet50-seeded": (RESNET50, 224, 49),
    "vgg16": (VGG16, 224, 196),
    "efficientnet-lite0": ([16, 24, 40, 80, 112, 192, 320, 1280], 224, 49),  # not in the paper
}
SEEDED_SHA256 = "f41a1fdc7934ed93f2fd7110e0ad27fd15771350e0d27bb0cfd0681484dae3bc"
MUGS = "bramtoula/visual-dna-models"
# vdna 0.1.1's feature_extractor_name -> ours (vdna/networks/__init__.py, get_feature_extractor)
UPSTREAM = {
    "mugs_vit_small": "mugs-vit-s16", "mugs_vit_base": "mugs-vit-b16", "mugs_vit_large": "mugs-vit-l16",
    "dino_vit_small": "dino-vit-s16", "dino_vit_base": "dino-vit-b16", "dino_resnet50": "dino-resnet50",
    "rand_resnet50": "rand-resnet50", "clip_im_vit_b16": "clip-vit-b16", "inception": "inception-v3", "vgg16": "vgg16",
}


def test_specs_follow_the_paper_tables():
    registered = {s.name for s in all_specs() if not s.name.startswith("timm:")}
    assert registered == set(EXPECTED)
    for name, (neurons, size, _) in EXPECTED.items():
        spec = get_spec(name)
        assert [n for _, n in spec.layers] == neurons, name
        assert spec.input_size == size, name
        assert spec.neurons == sum(neurons)
    assert get_spec("inception-v3").mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "mugs-vit-l16" else n
                                  for n in EXPECTED])
def test_architecture_outputs_every_layer(name):
    """Random weights, one real forward pass: every layer, in order, with its neuron count."""
    import torch

    spec = get_spec(name)
    neurons, size, last_positions = EXPECTED[name]
    module = build_module(spec, None)
    with torch.inference_mode():
        out = module(torch.rand(1, 3, size, size) * 2 - 1)
    assert list(out) == [l for l, _ in spec.layers]
    assert [v.shape[1] for v in out.values()] == neurons
    assert all(v.ndim == 3 and v.shape[0] == 1 and torch.isfinite(v).all() for v in out.values())
    assert out[spec.layers[-1][0]].shape[2] == last_positions
    if "vit" in name:  # tokens (class token included) are the spatial axis (A.1.2)
        tokens = 1 + (size // (14 if name == "dinov2-vit-b14" else 16)) ** 2
        assert {v.shape[2] for l, v in out.items() if l.startswith("block_")} == {tokens}


def test_seeded_rand_resnet50_is_identical_everywhere():
    a = build_module(get_spec("rand-resnet50-seeded"), None)
    ext = load_extractor("rand-resnet50-seeded", "cpu")  # a second build, checked against the pinned sha256
    sa, sb = a.state_dict(), ext.module.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    assert weights_mod.state_sha256(a) == ext.weights_sha256 == SEEDED_SHA256
    assert packaged_ranges(ext.spec).extractor == "rand-resnet50-seeded"
    conv = sa["net.conv1.weight"].numpy()
    bound = np.sqrt(6.0 / (64 * 7 * 7))
    assert conv.dtype == np.float32 and np.abs(conv).max() <= bound and conv.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_weights_file_replaces_generated_weights_and_is_loaded_safely(tmp_path):
    import torch

    net = build_module(get_spec("rand-resnet50-seeded"), None).net
    with torch.no_grad():
        net.conv1.weight.mul_(-1)
    path = tmp_path / "weights.pth"
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, path)  # upstream's checkpoint layout
    ext = load_extractor("rand-resnet50-seeded", "cpu", weights=path)
    assert ext.weights_sha256 == weights_mod.sha256_of(path) != SEEDED_SHA256
    assert torch.equal(ext.module.net.conv1.weight, net.conv1.weight)
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a pickled object, not tensors: refused
    with pytest.raises(ExtractorError, match="cannot load weights"):
        load_extractor("rand-resnet50", "cpu", weights=pickled)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ExtractorError, match="do not fit rand-resnet50"):
        load_extractor("rand-resnet50", "cpu", weights=tmp_path / "other.pth")


def test_upstream_and_seeded_rand_resnet50_are_distinct_networks():
    """rand-resnet50 is vdna 0.1.1's (its Hub file, upstream's stem); the seeded one keeps its own name."""
    up, seeded = get_spec("rand-resnet50"), get_spec("rand-resnet50-seeded")
    assert up.upstream == "rand_resnet50" and seeded.upstream is None
    assert (up.weights.kind, up.weights.location) == ("hf", MUGS)
    assert up.weights.filenames == ("Random/rand_resnet50/weights.pth",)
    assert up.weights.sha256 is None  # not pinned yet: the published file was not reachable (no internet)
    assert up.ranges is None and up.ranges_hub.filename == "Random/rand_resnet50/activation_ranges.json"
    assert seeded.weights.kind == "generated" and seeded.weights.sha256 == SEEDED_SHA256
    assert seeded.ranges == "rand-resnet50-seeded.json" and "offline" in seeded.tags and "offline" not in up.tags
    assert build_module(up, None).net.conv1.padding == (2, 2)  # pad 1, then the 7x7 conv with padding 2 (upstream's)
    assert build_module(seeded, None).net.conv1.padding == (3, 3)


def test_names_across_versions_and_vdna_0_1_1():
    from vdnacli import interop
    from vdnacli.extractors import UPSTREAM_NAMES, current_name, from_upstream, to_upstream

    assert UPSTREAM_NAMES == UPSTREAM and interop.UPSTREAM_EXTRACTORS is UPSTREAM_NAMES
    assert all(get_spec(ours).upstream == theirs for theirs, ours in UPSTREAM.items())
    assert from_upstream("mugs_vit_small") == "mugs-vit-s16" and to_upstream("clip-vit-b16") == "clip_im_vit_b16"
    assert from_upstream("clip_im_rn50") is None and to_upstream("rand-resnet50-seeded") is None
    # DNAs made before the rename: the seeded network's digest tells them apart from upstream's file
    assert current_name("rand-resnet50", SEEDED_SHA256) == "rand-resnet50-seeded"
    assert current_name("rand-resnet50", SEEDED_SHA256.upper()) == "rand-resnet50-seeded"
    assert current_name("rand-resnet50", "ab" * 32) == "rand-resnet50"  # computed with upstream's file
    assert current_name("rand-resnet50", None) == "rand-resnet50"
    assert current_name("mugs-vit-b16", SEEDED_SHA256) == "mugs-vit-b16"


def test_networks_compute_as_vdna_0_1_1():
    """What makes them bit-identical (tests/test_upstream_networks.py): explicit attention in the
    Mugs/DINO ViTs, CLIP in float16 with float32 LayerNorms."""
    import torch

    for name in ("mugs-vit-s16", "dino-vit-s16"):
        vit = build_module(get_spec(name), None).vit
        assert not any(b.attn.fused_attn for b in vit.blocks), name
    clip = build_module(get_spec("clip-vit-b16"), None)
    assert get_spec("clip-vit-b16").dtype == "fp16"
    assert clip.conv1.weight.dtype == clip.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert clip.ln_pre.weight.dtype == torch.float32 and clip.positional_embedding.dtype == torch.float32
    for name in ("mugs-vit-s16", "dino-vit-s16"):  # upstream publishes no ranges for these
        spec = get_spec(name)
        assert spec.ranges is None and spec.ranges_hub is None


# -- a local Hugging Face cache -------------------------------------------------------------
def put_hub_file(cache, repo: str, filename: str, data: bytes | None = None, revision: str = "0" * 40):
    """Write one file in huggingface_hub's documented cache layout; returns its path."""
    root = cache / ("models--" + repo.replace("/", "--"))
    path = root / "snapshots" / revision / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    if data is not None:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, sample_dirs):
    """HF_HOME with upstream's Mugs ViT-B/16 files: a (random) checkpoint in Mugs' own layout, relation
    blocks included, and activation_ranges.json in upstream's format measured on real images."""
    import timm
    import torch

    home = tmp_path_factory.mktemp("hf-home")
    cache = home / "hub"
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    state = {k: v.half() for k, v in vit.state_dict().items()}
    state.update({f"relation_blocks.0.{k[len('blocks.0.'):]}": v for k, v in state.items() if k.startswith("blocks.0.")})
    weights = put_hub_file(cache, MUGS, "Mugs/mugs_vit_base/weights.pth")
    torch.save({"state_dict": state, "epoch": 100}, weights)

    from vdnacli.extractors.vit import token_layers
    from vdnacli.sources import list_images

    vit.load_state_dict({k: v.float() for k, v in state.items() if not k.startswith("relation")})
    module = token_layers(vit).eval()
    refs = list_images(sample_dirs["photos-a"])[:8]
    from vdnacli.preprocess import decode, normalise, prepare

    x = normalise(torch.from_numpy(np.stack([prepare(decode(r.read_bytes()), 224) for r in refs])),
                  get_spec("mugs-vit-b16").mean, get_spec("mugs-vit-b16").std)
    with torch.inference_mode():
        feats = module(x)
    upstream = {"mins_per_neuron": {}, "maxs_per_neuron": {}}
    for layer, a in feats.items():
        a = a.transpose(0, 1).reshape(a.shape[1], -1)
        upstream["mins_per_neuron"][layer] = {str(i): float(v) for i, v in enumerate(a.amin(1))}
        upstream["maxs_per_neuron"][layer] = {str(i): float(v) for i, v in enumerate(a.amax(1))}
    put_hub_file(cache, MUGS, "Mugs/mugs_vit_base/activation_ranges.json", json.dumps(upstream).encode())
    return home


@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(hub_cache))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_cache


def test_hub_weights_and_ranges_load_offline_from_the_cache(offline_hub, sample_dirs):
    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.ranges import from_upstream
    from vdnacli.sources import list_images

    spec = get_spec("mugs-vit-b16")
    path = weights_mod.locate(spec)
    assert path is not None and path.name == "weights.pth" and str(offline_hub) in str(path)
    ext = load_extractor("mugs-vit-b16", "cpu")  # relation blocks dropped, everything else strict
    assert ext.offline and ext.weights_sha256 == weights_mod.sha256_of(path)
    refs = list_images(sample_dirs["photos-a"])[:8]
    dna, _ = compute_dna(refs, ext, ComputeSettings.for_extractor(ext.spec.name, kinds=("hist", "gauss"), bins=50), Run(batch_size=8))
    ranges_file = weights_mod.hf_cached(MUGS, "Mugs/mugs_vit_base/activation_ranges.json")
    expected = from_upstream(json.loads(ranges_file.read_text()), "mugs-vit-b16")
    assert dna.meta["ranges_sha256"] == expected.sha256()
    assert dna.meta["weights_sha256"] == ext.weights_sha256
    # the ranges were measured on these very images with upstream's x1.2 margin: nothing falls in the edge bins
    for h in dna.hist.values():
        assert h[:, 0].sum() + h[:, -1].sum() < h.sum() * 1e-3
    assert dna.gauss["last_norm"].count == 8


def test_missing_hub_file_offline_is_one_clear_error(offline_hub, monkeypatch):
    from vdnacli.extractors.loaded import hub_ranges

    with pytest.raises(ExtractorError) as e:
        load_extractor("mugs-vit-l16", "cpu")
    msg = str(e.value)
    assert "Mugs/mugs_vit_large/weights.pth" in msg and f"hf download {MUGS}" in msg and "--weights" in msg
    assert "\n" not in msg
    with pytest.raises(ExtractorError) as e:  # vdna 0.1.1's random network is a Hub file now
        load_extractor("rand-resnet50", "cpu")
    msg = str(e.value)
    assert "Random/rand_resnet50/weights.pth" in msg and "--weights" in msg and "\n" not in msg
    with pytest.raises(ExtractorError, match="dino_vit_base/activation_ranges.json"):
        hub_ranges(get_spec("dino-vit-b16"))
    monkeypatch.setenv("TORCH_HOME", str(offline_hub / "torch"))  # URL weights: torch.hub's cache
    with pytest.raises(ExtractorError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_extractor("inception-v3", "cpu")


def test_cli_extractors_and_offline_add(offline_hub, sample_dirs, vdna):
    env = {"HF_HOME": str(offline_hub), "HF_HUB_OFFLINE": "1"}
    r = vdna("extractors", "--json", env=env)
    assert r.code == 0, r.stderr
    items = {i["name"]: i for i in r.json()}
    assert set(items) == set(EXPECTED)
    for name, (neurons, size, _) in EXPECTED.items():
        assert items[name]["neurons"] == sum(neurons) and items[name]["input_size"] == size
        assert list(items[name]["layers"].values()) == neurons
    assert items["mugs-vit-b16"]["weights_present"] is True and items["mugs-vit-b16"]["ranges_source"] == "hub"
    assert items["mugs-vit-l16"]["weights_present"] is False
    assert items["rand-resnet50"]["weights_present"] is False and items["rand-resnet50"]["upstream"] == "rand_resnet50"
    assert items["rand-resnet50-seeded"]["weights_present"] is True
    assert items["efficientnet-lite0"]["weights_present"] is True
    assert items["mugs-vit-s16"]["ranges_source"] == "none" and items["clip-vit-b16"]["dtype"] == "fp16"

    r = vdna("add", "big", sample_dirs["faces-a"], "--extractor", "mugs-vit-l16", "--offline", env=env)
    assert r.code == 6 and r.stderr.count("\n") == 1 and "Mugs/mugs_vit_large/weights.pth" in r.stderr
    r = vdna("add", "r", sample_dirs["faces-a"], "--extractor", "rand-resnet50", "--offline", env=env)
    assert r.code == 6 and r.stderr.count("\n") == 1 and "Random/rand_resnet50/weights.pth" in r.stderr

    r = vdna("add", "m", sample_dirs["faces-a"], "-e", "mugs-vit-b16", "--offline", "--limit", "6", "--crop", "none",
             "--kind", "gauss,layer-gauss", "--json", env=env)
    assert r.code == 0, r.stderr
    meta = vdna("show", "m", "--json").json()
    assert meta["kinds"] == ["gauss", "layer-gauss"] and meta["preprocessing"]["crop"] == "none"
    assert meta["weights_sha256"] == weights_mod.sha256_of(weights_mod.hf_cached(MUGS, "Mugs/mugs_vit_base/weights.pth"))


def put_hub_blob(cache, repo: str, filename: str, data: bytes, revision: str = "1" * 40):
    """One LFS file as huggingface_hub stores it: blobs/<sha256> and a snapshot symlink to it."""
    import hashlib

    root = cache / ("models--" + repo.replace("/", "--"))
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = put_hub_file(cache, repo, filename, revision=revision)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link, blob


def test_rand_resnet50_from_the_hub_cache_is_checked_against_the_hubs_sha256(tmp_path, monkeypatch):
    """Upstream's checkpoint layout {"model_state_dict": ...} loads with weights_only=True; the file must
    have the sha256 the Hub published for it (the name of its blob)."""
    import io

    import torch
    import torchvision

    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    buf = io.BytesIO()
    torch.save({"model_state_dict": state}, buf)
    link, blob = put_hub_blob(tmp_path / "hub", MUGS, "Random/rand_resnet50/weights.pth", buf.getvalue())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights_mod.hub_blob_sha256(link) == blob.name
    ext = load_extractor("rand-resnet50", "cpu")
    assert ext.weights_sha256 == blob.name
    assert torch.equal(ext.module.net.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    with open(blob, "ab") as f:  # a damaged download
        f.write(b"\0")
    with pytest.raises(ExtractorError, match="the Hub published"):
        load_extractor("rand-resnet50", "cpu")
    assert weights_mod.hub_blob_sha256(put_hub_file(tmp_path / "copy", MUGS, "w.pth", b"x")) is None  # no blob: unknown


# -- timm:<model> -------------------------------------------------------------------------
def test_timm_models_by_name(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    spec = get_spec("timm:resnet18")
    assert spec.layers == (("act1", 64), ("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512))
    assert spec.input_size == 224 and spec.weights.kind == "hf" and spec.weights.location == "timm/resnet18.a1_in1k"
    with pytest.raises(ExtractorError, match="Did you mean 'timm:resnet18'"):
        get_spec("timm:resnett18")
    # weights from the local Hub cache (safetensors), offline
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExtractorError, match="timm/resnet18.a1_in1k/model.safetensors"):
        load_extractor("timm:resnet18", "cpu")
    net = build_module(spec, None).model
    path = put_hub_file(tmp_path / "hub", "timm/resnet18.a1_in1k", "model.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    ext = load_extractor("timm:resnet18", "cpu")
    assert ext.weights_sha256 == weights_mod.sha256_of(path)
    with torch.inference_mode():
        out = ext(torch.zeros(2, 3, 64, 64))
        ref = net.eval().forward_intermediates(torch.zeros(2, 3, 64, 64), intermediates_only=True)
    assert [tuple(v.shape) for v in out.values()] == [(2, 64, 1024), (2, 64, 256), (2, 128, 64), (2, 256, 16), (2, 512, 4)]
    assert torch.allclose(out["layer4"], ref[-1].flatten(2))


@pytest.mark.slow
def test_dinov2_hub_checkpoint_at_518_loads_at_224(tmp_path):
    """timm's DINOv2 file is at 518 px: its position embeddings are resampled to our 224 px input."""
    import timm
    from safetensors.torch import save_file

    big = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0)
    assert big.pos_embed.shape[1] == 1 + 37 * 37
    path = tmp_path / "model.safetensors"
    save_file({k: v.half().contiguous() for k, v in big.state_dict().items()}, str(path))
    module = build_module(get_spec("dinov2-vit-b14"), path)
    assert module.vit.pos_embed.shape[1] == 1 + 16 * 16
    assert module.vit.blocks[3].ls1.gamma.dtype.is_floating_point


# -- activation ranges: upstream format, provenance, refusal ----------------------------------
def test_upstream_ranges_are_read_recorded_and_never_mixed(tmp_path, sample_dirs, lite0, vdna):
    from vdnacli.distances import compare
    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.ranges import load_ranges
    from vdnacli.sources import list_images

    ours = packaged_ranges(lite0.spec)
    upstream = {"mins_per_neuron": {l: {str(i): float(v) for i, v in enumerate(ours.mins[l])} for l in ours.mins},
                "maxs_per_neuron": {l: {str(i): float(v) for i, v in enumerate(ours.maxs[l])} for l in ours.maxs}}
    path = tmp_path / "activation_ranges.json"
    path.write_text(json.dumps(upstream))
    r = load_ranges(path)
    assert r.rule == "scale"
    lo, hi = r.interval("head")
    np.testing.assert_allclose(lo, ours.mins["head"].astype(np.float64) * 1.2)
    np.testing.assert_allclose(hi, ours.maxs["head"].astype(np.float64) * 1.2)
    refs = list_images(sample_dirs["digits-a"])[:10]
    with_upstream, _ = compute_dna(refs, lite0, ComputeSettings.for_extractor("efficientnet-lite0", bins=64), ranges=r)
    with_ours, _ = compute_dna(refs, lite0, ComputeSettings.for_extractor("efficientnet-lite0", bins=64))
    assert with_upstream.meta["ranges_sha256"] == r.sha256() != ours.sha256() == with_ours.meta["ranges_sha256"]
    with pytest.raises(IncompatibleDNAError, match="activation ranges"):
        compare(with_upstream, with_ours)

    out = tmp_path / "imported.json"
    res = vdna("ranges", "import", path, "--extractor", "efficientnet-lite0", "--out", out, "--json")
    assert res.code == 0, res.stderr
    assert res.json()["sha256"] == r.sha256() and res.json()["margin_rule"] == "scale"
    shown = vdna("ranges", "show", out, "--json").json()
    assert shown["sha256"] == r.sha256() and shown["extractor"] == "efficientnet-lite0"
    bad = vdna("ranges", "import", path, "--extractor", "vgg16", "--out", tmp_path / "x.json")
    assert bad.code == 1 and "do not fit 'vgg16'" in bad.stderr and not (tmp_path / "x.json").exists()


def test_crop_none_is_recorded_and_changes_activations(tmp_path, lite0):
    from PIL import Image

    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.sources import list_images

    rng = np.random.default_rng(0)
    for i in range(4):  # wide images whose left and right thirds differ from the centre
        a = np.zeros((60, 180, 3), np.uint8)
        a[:, :60] = rng.integers(0, 255, (60, 60, 3))
        a[:, 60:120] = 40 * i
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    refs = list_images(tmp_path)
    centre, _ = compute_dna(refs, lite0, ComputeSettings.for_extractor("efficientnet-lite0", kinds=("gauss",)))
    squash, _ = compute_dna(refs, lite0, ComputeSettings.for_extractor("efficientnet-lite0", kinds=("gauss",), crop="none"))
    assert centre.meta["preprocessing"]["crop"] == "center" and squash.meta["preprocessing"]["crop"] == "none"
    assert not np.allclose(centre.gauss["head"].mean, squash.gauss["head"].mean, rtol=0.05)
    from vdnacli.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown crop"):
        ComputeSettings.for_extractor("efficientnet-lite0", kinds=("gauss",), crop="left")
