"""Vision Transformers built with timm: Mugs ViT-S/B/L-16, DINO ViT-S/B-16, DINOv2 ViT-B/14.

Layers (paper Table 4 and A.1.2): the output of every transformer block and of the final
LayerNorm, over all tokens (the class token included): tokens are the spatial dimension.
Layer names follow upstream vdna (block_0 .. block_{depth-1}, last_norm), so upstream's
activation_ranges.json files and DNAs line up with ours.

The Mugs and DINO networks compute attention as vdna 0.1.1 does, softmax(q k^T / sqrt(d)) v
written out (timm's `fused_attn=False`), not with scaled_dot_product_attention: their
activations are then bit-identical to vdna 0.1.1's on CPU (tests/test_upstream_networks.py).
"""
from __future__ import annotations

from vdnacli.extractors.spec import ExtractorSpec, HubFile, WeightsSource, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UPSTREAM_REPO = "bramtoula/visual-dna-models"  # the Hub repo upstream vdna 0.1.1 reads
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def vit_layers(depth: int, width: int) -> tuple[tuple[str, int], ...]:
    return tuple((f"block_{i}", width) for i in range(depth)) + (("last_norm", width),)


def token_layers(vit):
    """Wrap a timm VisionTransformer: images -> {block_i: [B, C, tokens], last_norm: [B, C, tokens]}."""
    from torch import nn

    class ViTTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            v = self.vit
            x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
            out = {}
            for i, block in enumerate(v.blocks):
                x = block(x)
                out[f"block_{i}"] = x.transpose(1, 2)
            out["last_norm"] = v.norm(x).transpose(1, 2)
            return out

    return ViTTokens()


def load_timm_checkpoint(model, path, name: str, drop: tuple[str, ...] = ()) -> None:
    """Load a state dict into a timm ViT through timm's own converter (original FB/OpenAI
    layouts, position embeddings resampled to the model's image size)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    from vdnacli.extractors.weights import load_into, load_state_dict

    state = checkpoint_filter_fn(load_state_dict(path), model)
    load_into(model, state, name, drop=("head.", "fc_norm.", "head_drop.") + drop)


def explicit_attention(vit) -> None:
    """Attention as vdna 0.1.1 (and the Mugs and DINO code) computes it: softmax(q k^T * scale) v
    with explicit matmuls. timm's fused kernel (scaled_dot_product_attention) rounds differently."""
    for block in vit.blocks:
        block.attn.fused_attn = False


def _builder(arch: str, drop: tuple[str, ...] = (), upstream_attention: bool = False, **kwargs):
    def build(spec: ExtractorSpec, weights_path):
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        if weights_path is not None:
            load_timm_checkpoint(model, weights_path, spec.name, drop)
        if upstream_attention:
            explicit_attention(model)
        return token_layers(model)

    return build


# Upstream has activation ranges on the Hub for Mugs base and large only: mugs-vit-s16 computes
# gauss and layer-gauss, and histograms with --ranges (e.g. from 'vdna calibrate').
_MUGS_HUB_RANGES = ("base", "large")


def _mugs(size: str, arch: str, depth: int, width: int) -> ExtractorSpec:
    letter = size[0].upper()
    hub_ranges = size in _MUGS_HUB_RANGES
    return register(ExtractorSpec(
        name=f"mugs-vit-{size[0]}16",
        architecture=f"ViT-{letter}/16, Mugs self-supervised (ImageNet-1k)",
        description=(f"Paper's main extractor family; weights {'and ranges ' if hub_ranges else ''}from upstream's "
                     f"Hub repo {UPSTREAM_REPO}"
                     + ("" if hub_ranges else " (no published ranges: calibrate your own)")),
        layers=vit_layers(depth, width),
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=WeightsSource(kind="hf", location=UPSTREAM_REPO, filenames=(f"Mugs/mugs_vit_{size}/weights.pth",),
                              install_hint=f"hf download {UPSTREAM_REPO} Mugs/mugs_vit_{size}/weights.pth"),
        # Mugs checkpoints also hold the pre-training relation blocks, unused here.
        build=_builder(arch, drop=("relation_blocks.",), upstream_attention=True),
        ranges_hub=HubFile(UPSTREAM_REPO, f"Mugs/mugs_vit_{size}/activation_ranges.json") if hub_ranges else None,
        tags=("paper", "hub"),
        upstream=f"mugs_vit_{size}",
    ))


MUGS_S16 = _mugs("small", "vit_small_patch16_224", 12, 384)
MUGS_B16 = _mugs("base", "vit_base_patch16_224", 12, 768)
MUGS_L16 = _mugs("large", "vit_large_patch16_224", 24, 1024)


def _dino(size: str, arch: str, width: int, hub_ranges: bool) -> ExtractorSpec:
    letter = size[0].upper()
    repo = f"timm/{arch}.dino"
    return register(ExtractorSpec(
        name=f"dino-vit-{size[0]}16",
        architecture=f"ViT-{letter}/16, DINO self-supervised (ImageNet-1k)",
        description=f"DINO ViT-{letter}/16 (timm's copy of the official weights); "
                    + ("ranges from upstream's Hub repo" if hub_ranges else "no published ranges: calibrate your own"),
        layers=vit_layers(12, width),
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=WeightsSource(kind="hf", location=repo, filenames=TIMM_FILES,
                              install_hint=f"hf download {repo} model.safetensors"),
        build=_builder(arch, upstream_attention=True),
        ranges_hub=HubFile(UPSTREAM_REPO, f"DINO/dino_vit_{size}/activation_ranges.json") if hub_ranges else None,
        tags=("paper", "hub"),
        upstream=f"dino_vit_{size}",
    ))


# vdna 0.1.1 lists dino_vit_small but its constructor refuses it (and has no ranges for it).
DINO_S16 = _dino("small", "vit_small_patch16_224", 384, hub_ranges=False)
DINO_B16 = _dino("base", "vit_base_patch16_224", 768, hub_ranges=True)

DINOV2_B14 = register(ExtractorSpec(
    name="dinov2-vit-b14",
    architecture="ViT-B/14 with layer scale, DINOv2 self-supervised (LVD-142M)",
    description="Beyond the paper: DINOv2 at 224 px (16x16 patches + class token; position "
                "embeddings resampled by timm); calibrate its ranges with 'vdna calibrate'",
    layers=vit_layers(12, 768),
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights=WeightsSource(kind="hf", location="timm/vit_base_patch14_dinov2.lvd142m", filenames=TIMM_FILES,
                          install_hint="hf download timm/vit_base_patch14_dinov2.lvd142m model.safetensors"),
    build=_builder("vit_base_patch14_dinov2", drop=("mask_token",), img_size=224),
    tags=("hub",),
))
