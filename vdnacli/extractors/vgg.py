"""VGG-16 (torchvision's architecture and ImageNet weights, from timm's Hub copy).

Layers: the output of each of the 13 convolution + ReLU layers (relu_1_1 .. relu_5_3, as
upstream vdna), 64/64/128/128/256x3/512x3/512x3 = 4,224 neurons.
"""
from __future__ import annotations

from vdnacli.extractors.spec import ExtractorSpec, HubFile, WeightsSource, register
from vdnacli.extractors.vit import IMAGENET_MEAN, IMAGENET_STD, TIMM_FILES, UPSTREAM_REPO

STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convolutions) per stage
LAYERS = tuple((f"relu_{s + 1}_{c + 1}", ch) for s, (ch, n) in enumerate(STAGES) for c in range(n))


def build(spec: ExtractorSpec, weights_path):
    import torchvision
    from torch import nn

    from vdnacli.extractors.weights import load_into, load_state_dict

    net = torchvision.models.vgg16(weights=None)
    body = nn.Module()
    body.features = net.features  # the classifier is never used; keys stay "features.<i>.*"
    if weights_path is not None:
        state = {k: v for k, v in load_state_dict(weights_path).items() if k.startswith("features.")}
        load_into(body, state, spec.name)
    names = [name for name, _ in LAYERS]

    class VGGReLUs(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            out = {}
            for layer in self.body.features:
                x = layer(x)
                if isinstance(layer, nn.ReLU):
                    out[names[len(out)]] = x.flatten(2)
                    if len(out) == len(names):
                        break
            return out

    return VGGReLUs()


VGG16 = register(ExtractorSpec(
    name="vgg16",
    architecture="VGG-16 (ImageNet-1k, supervised; torchvision weights)",
    description="torchvision's VGG-16 weights via timm's Hub copy; ranges from upstream's Hub repo",
    layers=LAYERS,
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights=WeightsSource(kind="hf", location="timm/vgg16.tv_in1k", filenames=TIMM_FILES,
                          install_hint="hf download timm/vgg16.tv_in1k model.safetensors"),
    build=build,
    ranges_hub=HubFile(UPSTREAM_REPO, "VGG/vgg16/activation_ranges.json"),
    tags=("paper",),
    upstream="vgg16",
))
