"""CLIP ViT-B/16 image encoder (OpenAI's architecture and weights), computed as vdna 0.1.1 does.

Layers, as upstream vdna: the output of each of the 12 residual attention blocks over all
197 tokens (block_0 .. block_11), and the final LayerNorm applied to the class token
(last_norm, one position), 13 x 768 neurons.

Arithmetic, as vdna 0.1.1's `clip_im_vit_b16` (which runs OpenAI's model after its
`convert_weights`): convolution, linear and attention weights in float16, the input cast to
float16, every LayerNorm computed in float32 and cast back, QuickGELU, and torch's
`nn.MultiheadAttention` on [tokens, batch, width] tensors. The activations are returned as
float32 (exact). On CPU they are bit-identical to vdna 0.1.1's (tests/test_upstream_networks.py).

One difference, on purpose: upstream returns `last_norm` as [1, 768, batch, 1] (the images of a
batch land on the spatial axis), which leaves histograms unchanged but averages its Gaussian over
the batch; here it is [batch, 768, 1], one position per image.
"""
from __future__ import annotations

from vdnacli.extractors.spec import ExtractorSpec, HubFile, WeightsSource, register
from vdnacli.extractors.vit import UPSTREAM_REPO, vit_layers

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WIDTH, DEPTH, HEADS, PATCH, SIZE, EMBED = 768, 12, 12, 16, 224, 512


def _modules():
    """The encoder's classes, defined on first use so that importing this file stays torch-free."""
    from collections import OrderedDict

    import torch
    from torch import nn

    class LayerNorm32(nn.LayerNorm):
        """LayerNorm in float32 whatever the input's dtype; the result has the input's dtype."""

        def forward(self, x):
            return super().forward(x.float()).to(x.dtype)

    class QuickGELU(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class ResidualBlock(nn.Module):
        def __init__(self, width: int, heads: int):
            super().__init__()
            self.ln_1 = LayerNorm32(width)
            self.attn = nn.MultiheadAttention(width, heads)  # [tokens, batch, width]
            self.ln_2 = LayerNorm32(width)
            self.mlp = nn.Sequential(OrderedDict(
                c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width)))

        def forward(self, x):
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class CLIPVisual(nn.Module):
        """State-dict keys as OpenAI's `visual.*` (and open_clip's), so their files load strictly."""

        def __init__(self):
            super().__init__()
            scale = WIDTH ** -0.5
            self.conv1 = nn.Conv2d(3, WIDTH, kernel_size=PATCH, stride=PATCH, bias=False)
            self.class_embedding = nn.Parameter(scale * torch.randn(WIDTH))
            self.positional_embedding = nn.Parameter(scale * torch.randn((SIZE // PATCH) ** 2 + 1, WIDTH))
            self.ln_pre = LayerNorm32(WIDTH)
            self.transformer = nn.Module()
            self.transformer.resblocks = nn.ModuleList(ResidualBlock(WIDTH, HEADS) for _ in range(DEPTH))
            self.ln_post = LayerNorm32(WIDTH)
            self.proj = nn.Parameter(scale * torch.randn(WIDTH, EMBED))  # the image embedding: unused here

        def to_upstream_dtypes(self):
            """float16 where OpenAI's `convert_weights` puts it: convolution, linear and attention
            weights and biases. LayerNorms and the embeddings stay float32."""
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention)):
                    m.half()
            return self

        def forward(self, images):
            dtype = self.conv1.weight.dtype
            x = self.conv1(images.to(dtype)).flatten(2).transpose(1, 2)  # [B, patches, width]
            cls = self.class_embedding.to(dtype) + x.new_zeros(x.shape[0], 1, x.shape[2])
            x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(dtype)
            x = self.ln_pre(x).permute(1, 0, 2)  # [tokens, B, width]
            out = {}
            for i, block in enumerate(self.transformer.resblocks):
                x = block(x)
                out[f"block_{i}"] = x.permute(1, 2, 0).float()  # [B, width, tokens]
            out["last_norm"] = self.ln_post(x[0]).unsqueeze(2).float()  # class token: [B, width, 1]
            return out

    return CLIPVisual


def build(spec: ExtractorSpec, weights_path):
    from vdnacli.extractors.weights import load_into, load_state_dict

    visual = _modules()()
    if weights_path is not None:
        state = load_state_dict(weights_path)
        if any(k.startswith("visual.") for k in state):  # a whole CLIP file (text tower included)
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        load_into(visual, state, spec.name)
    return visual.to_upstream_dtypes()


CLIP_B16 = register(ExtractorSpec(
    name="clip-vit-b16",
    architecture="CLIP ViT-B/16 image encoder (OpenAI weights), float16 as vdna 0.1.1",
    description="OpenAI's ViT-B/16 image encoder (weights: timm's Hub copy in open_clip format), computed in "
                "float16 like vdna 0.1.1; ranges from upstream's Hub repo",
    layers=vit_layers(DEPTH, WIDTH),
    input_size=SIZE,
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    weights=WeightsSource(kind="hf", location="timm/vit_base_patch16_clip_224.openai", filenames=OPEN_CLIP_FILES,
                          install_hint="hf download timm/vit_base_patch16_clip_224.openai open_clip_model.safetensors"),
    build=build,
    ranges_hub=HubFile(UPSTREAM_REPO, "CLIP/clip_im_vit_b16/activation_ranges.json"),
    tags=("paper",),
    upstream="clip_im_vit_b16",
    dtype="fp16",
    revision=2,  # 2: float16 arithmetic, vdna 0.1.1's (1 computed in float32)
    layer_notes=(("block_0..block_11", "tokens after each residual block, float16 arithmetic"),
                 ("last_norm", "tokens after ln_post, one value per image and token")),
))
