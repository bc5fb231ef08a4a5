"""The paper's own code as the oracle for our networks: vdna 0.1.1 (PyPI `vdna`).

What "agrees with the paper's code" means for an extractor: given the same weights file and the
same normalised batch of real images, every layer of ours equals vdna 0.1.1's `get_features`
bit for bit (`torch.equal`), on CPU.

How vdna 0.1.1 runs here: its own network classes, built by its own entry point
(`vdna.networks.get_feature_extractor`), with only what cannot run on this machine replaced:
* downloads: `hf_hub_download` as imported in its modules, `load_state_dict_from_url` (its
  modules' import, torchvision's for VGG-16, `torch.hub`'s for CLIP) return the test's files;
* `.cuda()` (its ResNet-50s move their input with `torch.cat(...).cuda(device=...)`) returns the
  tensor itself, on CPU.
Nothing of its arithmetic is replaced. The weights are random, made here from upstream's own
modules, and saved in the layout upstream loads ({"model_state_dict": ...} for rand_resnet50,
{"state_dict": ...} for Mugs, OpenAI's whole-CLIP state dict, ...); ours reads the same file
through its real loading path, `load_extractor(name, "cpu", weights=PATH)`.

Layouts: upstream returns [B, C, H, W] (ViTs [B, C, tokens, 1]), ours [B, C, H*W]; upstream's
CLIP `last_norm` is [1, C, B, 1] (the images of a batch on the spatial axis), ours [B, C, 1].

VDNA_ORACLE_DEVICE=cuda runs both sides on the GPU instead (upstream's `.cuda()` is then its own).
"""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("vdna.networks", reason="the oracle is the test extra's vdna==0.1.1")

IMAGES = 2  # real photos per batch: a colour one and a grey one
DEVICE = os.environ.get("VDNA_ORACLE_DEVICE", "cpu")


@pytest.fixture(scope="module")
def photos():
    from vdnacli import samples

    return samples.photos()[:IMAGES]


def batch(photos, spec):
    """The normalised batch both networks see: real photos, centre crop, spec's size and mean/std."""
    import torch
    from PIL import Image

    from vdnacli.preprocess import normalise, prepare, to_rgb

    arrays = np.stack([prepare(to_rgb(Image.fromarray(p)), spec.input_size) for p in photos])
    return normalise(torch.from_numpy(arrays), spec.mean, spec.std)


def randomised(state: dict, seed: int = 0) -> dict:
    """Random values for every tensor of a state dict (read for its keys and shapes only, so it may
    live on the meta device), at the scales of trained networks: weights ~ N(0, 1/fan_in), norm
    scales 1 + N(0, 0.1), biases, means and embeddings N(0, 0.1), BN variances in [0.5, 1.5]."""
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, v in state.items():
        shape = tuple(v.shape)
        if not v.is_floating_point():
            out[key] = torch.zeros(shape, dtype=v.dtype)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif v.ndim == 1 and key.endswith("weight"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif v.ndim <= 1 or key.endswith(("pos_embed", "positional_embedding", "cls_token")):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return out


def meta_state(make):
    """The state dict of a module built on the meta device (keys and shapes, no memory, no init)."""
    import torch

    with torch.device("meta"):
        return make().state_dict()


@pytest.fixture
def upstream_offline(monkeypatch, tmp_path):
    """Point vdna 0.1.1's downloads at the test's files and its `.cuda()` at the CPU tensor.

    Returns `serve(hub={filename: path}, urls={basename: path})`; an activation_ranges.json that
    is not served is an empty one (ranges only feed upstream's binning, not its networks)."""
    import torch
    import torchvision.models._api as tv_api

    import vdna.networks.clip as up_clip
    import vdna.networks.dino_resnet50 as up_dino_rn
    import vdna.networks.dino_vit as up_dino_vit
    import vdna.networks.inception_pytorch as up_inception
    import vdna.networks.mugs_vit as up_mugs
    import vdna.networks.random_resnet50 as up_rand_rn
    import vdna.networks.vgg16 as up_vgg

    hub, urls = {}, {}
    empty = tmp_path / "activation_ranges.json"
    empty.write_text(json.dumps({"mins_per_neuron": {}, "maxs_per_neuron": {}}))

    def hf_hub_download(repo_id=None, filename=None, **_):
        if filename in hub:
            return str(hub[filename])
        if filename.endswith("activation_ranges.json"):
            return str(empty)
        raise AssertionError(f"unexpected Hub download {repo_id}/{filename}")

    def load_state_dict_from_url(url, *_, **__):
        return torch.load(urls[url.rsplit("/", 1)[-1]], map_location="cpu", weights_only=True)

    class TorchScriptStandIn:  # OpenAI's CLIP files are TorchScript archives: upstream calls .eval().state_dict()
        def __init__(self, state):
            self.state = state

        def eval(self):
            return self

        def state_dict(self):
            return dict(self.state)

    for module in (up_clip, up_dino_rn, up_dino_vit, up_inception, up_mugs, up_rand_rn, up_vgg):
        monkeypatch.setattr(module, "hf_hub_download", hf_hub_download)
    for module in (up_dino_rn, up_dino_vit, up_inception):
        monkeypatch.setattr(module, "load_state_dict_from_url", load_state_dict_from_url)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", load_state_dict_from_url)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda url, *a, **k: TorchScriptStandIn(load_state_dict_from_url(url)))
    if DEVICE == "cpu":
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)

    def serve(hub_files=None, url_files=None):
        hub.update(hub_files or {})
        urls.update(url_files or {})

    return serve


def upstream_network(name: str):
    """vdna 0.1.1's network, built by its own entry point, on DEVICE."""
    from vdna.networks import get_feature_extractor
    from vdna.utils.settings import ExtractionSettings

    return get_feature_extractor(name, ExtractionSettings(device=DEVICE, verbose=False))


# -- the weights files, in the layout each upstream network loads ------------------------------
def _save(obj, path):
    import torch

    torch.save(obj, path)
    return path


def rand_resnet50_file(tmp_path):
    import torchvision

    state = {k: v for k, v in randomised(meta_state(torchvision.models.resnet50)).items() if not k.startswith("fc.")}
    path = _save({"model_state_dict": state}, tmp_path / "weights.pth")
    return {"hub": {"Random/rand_resnet50/weights.pth": path}}, path


def dino_resnet50_file(tmp_path):
    import torchvision

    state = {k: v for k, v in randomised(meta_state(torchvision.models.resnet50), seed=1).items()
             if not k.startswith("fc.")}
    path = _save(state, tmp_path / "dino_resnet50_pretrain.pth")
    return {"urls": {path.name: path}}, path


def vit_state(size: str, relation_block: bool = False) -> dict:
    """The keys and shapes of a Mugs/DINO ViT checkpoint (the Mugs and DINO code name their modules as
    timm does; upstream loads the file strictly, so any difference fails the test)."""
    import timm

    state = meta_state(lambda: timm.create_model(f"vit_{size}_patch16_224", num_classes=0))
    if relation_block:  # Mugs' checkpoints also hold the pre-training relation block (a block's shapes)
        block = {k[len("blocks.0."):]: v for k, v in state.items() if k.startswith("blocks.0.")}
        state.update({f"relation_blocks.0.{k}": v for k, v in block.items()})
    return state


def mugs_file(size):
    def make(tmp_path):
        state = randomised(vit_state(size, relation_block=True), seed=2)
        path = _save({"state_dict": state, "epoch": 100}, tmp_path / "weights.pth")
        return {"hub": {f"Mugs/mugs_vit_{size}/weights.pth": path}}, path

    return make


def dino_vit_file(size):
    def make(tmp_path):
        import vdna.networks.dino_vit as up_dino_vit

        name = up_dino_vit.WEIGHTS_LINKS[size].rsplit("/", 1)[-1]
        path = _save(randomised(vit_state(size), seed=3), tmp_path / name)
        return {"urls": {name: path}}, path

    return make


def clip_file(tmp_path):
    """A whole-CLIP state dict in OpenAI's layout: the ViT-B/16 image tower of the real size, and a
    tiny text tower (upstream builds it from the file's shapes and never runs it on images)."""
    import vdna.networks.clip as up_clip

    state = meta_state(lambda: up_clip.CLIP(
        embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
        context_length=4, vocab_size=8, transformer_width=64, transformer_heads=1, transformer_layers=1))
    state = {k: v.half() for k, v in randomised(state, seed=4).items()}  # OpenAI ships float16 weights
    name = up_clip._MODELS["vit_b16"].rsplit("/", 1)[-1]
    path = _save(state, tmp_path / name)
    return {"urls": {name: path}}, path


def inception_file(tmp_path):
    import vdna.networks.inception_pytorch as up_inception

    from vdnacli.extractors.inception import fid_inception_v3  # the same keys as pytorch-fid's (upstream loads strictly)

    name = up_inception.FID_WEIGHTS_URL.rsplit("/", 1)[-1]
    path = _save(randomised(meta_state(fid_inception_v3), seed=5), tmp_path / name)
    return {"urls": {name: path}}, path


def vgg16_file(tmp_path):
    import torchvision

    path = _save(randomised(meta_state(torchvision.models.vgg16), seed=6), tmp_path / "vgg16-397923af.pth")
    return {"urls": {path.name: path}}, path


# ours -> (vdna 0.1.1's name, weights file maker)
CASES = {
    "rand-resnet50": ("rand_resnet50", rand_resnet50_file),
    "dino-resnet50": ("dino_resnet50", dino_resnet50_file),
    "mugs-vit-s16": ("mugs_vit_small", mugs_file("small")),
    "mugs-vit-b16": ("mugs_vit_base", mugs_file("base")),
    "mugs-vit-l16": ("mugs_vit_large", mugs_file("large")),
    "dino-vit-s16": ("dino_vit_small", dino_vit_file("small")),
    "dino-vit-b16": ("dino_vit_base", dino_vit_file("base")),
    "clip-vit-b16": ("clip_im_vit_b16", clip_file),
    "inception-v3": ("inception", inception_file),
    "vgg16": ("vgg16", vgg16_file),
}
SLOW = {"mugs-vit-b16", "mugs-vit-l16", "dino-vit-b16", "clip-vit-b16"}  # > 30 s on the 2-core box (CLIP: float16 on CPU)


def upstream_features(upstream_name: str, x, weights_path):
    """vdna 0.1.1's `get_features(x)`, in ours layout [B, C, positions]."""
    import torch

    try:
        net = upstream_network(upstream_name)
    except ValueError as e:
        # vdna 0.1.1 lists dino_vit_small, but DINOViTFeatExtractor("small") raises (its `if small / if
        # base / else raise`). Its get_features then runs on its own ViT-S, loaded with the same file.
        assert upstream_name == "dino_vit_small", e
        import vdna.networks.dino_vit as up_dino_vit

        vit = up_dino_vit.vit_small()
        vit.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
        net = SimpleNamespace(model=vit.to(DEVICE).eval())
        get_features = up_dino_vit.DINOViTFeatExtractor.get_features.__get__(net)
    else:
        assert net.name == upstream_name
        get_features = net.get_features
    with torch.no_grad():
        feats = get_features(x)
    if upstream_name.startswith("clip_im_"):
        feats["last_norm"] = feats["last_norm"].permute(2, 1, 0, 3)  # [1, C, B, 1] -> [B, C, 1, 1]
    return {layer: a.float().flatten(2) for layer, a in feats.items()}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES])
def test_activations_are_bit_identical_to_vdna_0_1_1(name, photos, upstream_offline, tmp_path):
    import torch

    from vdnacli.extractors import get_spec, load_extractor

    upstream_name, make_file = CASES[name]
    served, path = make_file(tmp_path)
    upstream_offline(served.get("hub"), served.get("urls"))
    spec = get_spec(name)
    assert spec.upstream == upstream_name
    x = batch(photos, spec).to(DEVICE)

    theirs = upstream_features(upstream_name, x, path)
    ours_ext = load_extractor(name, DEVICE, weights=path)
    with torch.inference_mode():
        ours = ours_ext(x)

    assert list(ours) == list(theirs) == [layer for layer, _ in spec.layers]
    differ = {}
    for layer, t in theirs.items():
        o = ours[layer]
        assert o.dtype == torch.float32 and o.shape == t.shape, (layer, o.shape, t.shape)
        if not torch.equal(o, t):
            differ[layer] = float((o.double() - t.double()).abs().max())
    assert not differ, f"{name}: layers differing from vdna 0.1.1 (max abs diff): {differ}"


def test_every_upstream_network_is_covered():
    """Each vdna 0.1.1 extractor with a counterpart here is in CASES (clip_im_rn50 / vit_b32 / vit_l14 have
    none); the names agree with the specs and with UPSTREAM_NAMES."""
    import inspect

    import vdna.networks as up

    from vdnacli.extractors import UPSTREAM_NAMES

    source = inspect.getsource(up.get_feature_extractor)
    listed = {n for n in ("inception", "dino_resnet50", "dino_vit_base", "dino_vit_small", "rand_resnet50", "vgg16",
                          "mugs_vit_large", "mugs_vit_base", "mugs_vit_small") if f'"{n}"' in source}
    assert len(listed) == 9 and '"clip_im_" in feature_extractor' in source
    assert {theirs for theirs, _ in CASES.values()} == listed | {"clip_im_vit_b16"}
    assert UPSTREAM_NAMES == {theirs: ours for ours, (theirs, _) in CASES.items()}
