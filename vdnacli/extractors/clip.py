"""CLIP ViT-B/16 image encoder (open_clip's architecture, OpenAI weights from the Hub).

Layers, as upstream vdna: the output of each of the 12 residual attention blocks over all
197 tokens (block_0 .. block_11), and the final LayerNorm applied to the class token
(last_norm, one position), 13 x 768 neurons.
"""
from __future__ import annotations

import logging

from vdnacli.extractors.spec import ExtractorSpec, HubFile, WeightsSource, register
from vdnacli.extractors.vit import UPSTREAM_REPO, vit_layers

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def build(spec: ExtractorSpec, weights_path):
    import open_clip
    from torch import nn

    from vdnacli.extractors.weights import load_into, load_state_dict

    # OpenAI's CLIP uses QuickGELU; open_clip builds it with force_quick_gelu. Its note that the
    # model starts random is expected here (weights are loaded below), so it is silenced.
    logging.disable(logging.WARNING)
    try:
        visual = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).visual
    finally:
        logging.disable(logging.NOTSET)
    if weights_path is not None:
        state = load_state_dict(weights_path)
        if any(k.startswith("visual.") for k in state):
            state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        load_into(visual, state, spec.name)

    class CLIPTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            v = self.visual
            x = v._embeds(x)
            _, blocks = v.transformer.forward_intermediates(x)  # [B, tokens, C] after each block
            out = {f"block_{i}": t.transpose(1, 2) for i, t in enumerate(blocks)}
            out["last_norm"] = v.ln_post(blocks[-1][:, 0]).unsqueeze(2)
            return out

    return CLIPTokens()


CLIP_B16 = register(ExtractorSpec(
    name="clip-vit-b16",
    architecture="CLIP ViT-B/16 image encoder (OpenAI weights)",
    description="open_clip ViT-B-16 with OpenAI's weights (timm's Hub copy); ranges from upstream's Hub repo",
    layers=vit_layers(12, 768),
    input_size=224,
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    weights=WeightsSource(kind="hf", location="timm/vit_base_patch16_clip_224.openai", filenames=OPEN_CLIP_FILES,
                          install_hint="hf download timm/vit_base_patch16_clip_224.openai open_clip_model.safetensors"),
    build=build,
    ranges_hub=HubFile(UPSTREAM_REPO, "CLIP/clip_im_vit_b16/activation_ranges.json"),
    tags=("paper",),
))
