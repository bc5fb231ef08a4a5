"""ResNet-50 (torchvision's architecture): DINO self-supervised weights, vdna 0.1.1's random
weights, and random weights generated from a fixed seed.

Layers (paper Table 4): the output of each of the 16 bottleneck blocks, 3 x 256, 4 x 512,
6 x 1024 and 3 x 2048 neurons; names follow upstream vdna (layer1_0 .. layer4_2).

`dino-resnet50` and `rand-resnet50` are vdna 0.1.1's `dino_resnet50` and `rand_resnet50`: the
same weights, and the same stem (the SwAV-style backbone pads the image by one pixel, then runs
the 7x7 convolution with padding 2, where torchvision pads by 3), so every convolution sees the
shapes it sees upstream and the activations are bit-identical on CPU
(tests/test_upstream_networks.py).

`rand-resnet50-seeded` is this project's own random network, made offline: weights generated
with numpy only (PCG64 raw 64-bit outputs -> uniform doubles -> one multiply-add -> float32),
operations that IEEE arithmetic makes bit-identical on every machine, numpy and torch version;
its parameters' sha256 is pinned below and checked at every load. Until vdnacli 0.3 it was
called `rand-resnet50` (see `vdnacli.extractors.identity.current_name`).
"""
from __future__ import annotations

import numpy as np

from vdnacli.extractors.spec import ExtractorSpec, HubFile, WeightsSource, register
from vdnacli.extractors.vit import IMAGENET_MEAN, IMAGENET_STD, UPSTREAM_REPO

BLOCKS = (3, 4, 6, 3)
WIDTHS = (256, 512, 1024, 2048)
LAYERS = tuple((f"layer{s + 1}_{b}", WIDTHS[s]) for s in range(4) for b in range(BLOCKS[s]))
RAND_SEED = 0
RAND_SHA256 = "f41a1fdc7934ed93f2fd7110e0ad27fd15771350e0d27bb0cfd0681484dae3bc"


def block_outputs(net, upstream_stem: bool = False):
    """Wrap a torchvision ResNet: images -> {layer<s>_<b>: [B, C, H*W]} for every bottleneck.

    `upstream_stem`: zero-pad the image by 1 and convolve with padding 2, as vdna 0.1.1's
    ResNet-50s do (the same function as torchvision's padding 3, computed on the same shapes
    as upstream, so the convolution algorithm and its rounding are upstream's too).
    """
    import torch.nn.functional as F
    from torch import nn

    pre_pad = 1 if upstream_stem else 0
    if upstream_stem:
        net.conv1.padding = (2, 2)

    class ResNetBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            net.fc = nn.Identity()  # the classifier is never used
            self.net = net

        def forward(self, x):
            n = self.net
            if pre_pad:
                x = F.pad(x, (pre_pad,) * 4)
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            out = {}
            for s, stage in enumerate((n.layer1, n.layer2, n.layer3, n.layer4)):
                for b, block in enumerate(stage):
                    x = block(x)
                    out[f"layer{s + 1}_{b}"] = x.flatten(2)
            return out

    return ResNetBlocks()


def uniform_doubles(rng: np.random.Generator, n: int) -> np.ndarray:
    """n doubles in [0, 1) from the raw PCG64 stream: (u64 >> 11) * 2**-53, exact everywhere."""
    raw = rng.bit_generator.random_raw(n)
    return (raw >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def generate_weights(module, seed: int = RAND_SEED) -> None:
    """Fill a module's parameters deterministically (sorted by name).

    Convolutions: uniform on [-b, b] with b = sqrt(6 / fan_out), the variance of torchvision's
    default ResNet init (Kaiming normal, fan_out, ReLU); batch norm: weight 1, bias 0, running
    mean 0, running variance 1.
    """
    import torch

    rng = np.random.Generator(np.random.PCG64(seed))
    state = module.state_dict()
    new = {}
    for key in sorted(state):
        t = state[key]
        if t.ndim == 4:  # convolution weight [out, in, kh, kw]
            fan_out = t.shape[0] * t.shape[2] * t.shape[3]
            bound = np.sqrt(6.0 / fan_out)
            vals = (uniform_doubles(rng, t.numel()) * 2.0 - 1.0) * bound
            new[key] = torch.from_numpy(vals.astype(np.float32).reshape(tuple(t.shape)))
        elif key.endswith("running_var") or (t.ndim == 1 and key.endswith(".weight")):  # batch-norm scale
            new[key] = torch.ones_like(t)
        else:  # batch-norm biases, running means, num_batches_tracked
            new[key] = torch.zeros_like(t)
    module.load_state_dict(new, strict=True)


def _resnet50():
    import torchvision

    return torchvision.models.resnet50(weights=None)


def build_upstream(spec: ExtractorSpec, weights_path):
    """vdna 0.1.1's ResNet-50 backbones (DINO, random): a weight file, or torchvision's random init."""
    from vdnacli.extractors.weights import load_into, load_state_dict

    net = _resnet50()
    if weights_path is not None:
        load_into(net, load_state_dict(weights_path), spec.name, drop=("fc.",), allow_missing=("fc.",))
    return block_outputs(net, upstream_stem=True)


def build_seeded(spec: ExtractorSpec, weights_path):
    """Generated weights; a weight file given with --weights replaces them."""
    from vdnacli.extractors.weights import load_into, load_state_dict

    net = _resnet50()
    module = block_outputs(net)
    if weights_path is None:
        generate_weights(module, RAND_SEED)
    else:
        load_into(net, load_state_dict(weights_path), spec.name, drop=("fc.",), allow_missing=("fc.",))
    return module


DINO_RESNET50 = register(ExtractorSpec(
    name="dino-resnet50",
    architecture="ResNet-50, DINO self-supervised (ImageNet-1k)",
    description="Official DINO ResNet-50 backbone (torch.hub cache); ranges from upstream's Hub repo",
    layers=LAYERS,
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights=WeightsSource(kind="url",
                          location="https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
                          install_hint="download the URL into torch.hub's checkpoints folder"),
    build=build_upstream,
    ranges_hub=HubFile(UPSTREAM_REPO, "DINO/dino_resnet50/activation_ranges.json"),
    tags=("paper",),
    upstream="dino_resnet50",
))

RAND_WEIGHTS_FILE = "Random/rand_resnet50/weights.pth"  # {"model_state_dict": ...}, read with weights_only=True

RAND_RESNET50 = register(ExtractorSpec(
    name="rand-resnet50",
    architecture="ResNet-50, random weights (vdna 0.1.1's published file)",
    description=f"Paper's untrained baseline: upstream's own random network, from its Hub repo {UPSTREAM_REPO} "
                "(offline: rand-resnet50-seeded)",
    layers=LAYERS,
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    # sha256 not pinned yet: the published file could not be read from this project's machines (no
    # internet). Downloads are still checked against the Hub's own LFS sha256 (weights.check_hub_blob).
    weights=WeightsSource(kind="hf", location=UPSTREAM_REPO, filenames=(RAND_WEIGHTS_FILE,), sha256=None,
                          install_hint=f"hf download {UPSTREAM_REPO} {RAND_WEIGHTS_FILE}"),
    build=build_upstream,
    ranges_hub=HubFile(UPSTREAM_REPO, "Random/rand_resnet50/activation_ranges.json"),
    tags=("paper", "hub"),
    upstream="rand_resnet50",
))

RAND_RESNET50_SEEDED = register(ExtractorSpec(
    name="rand-resnet50-seeded",
    architecture="ResNet-50, random weights (numpy PCG64, seed 0)",
    description="An untrained baseline made offline: weights generated identically on every machine (no download); "
                "not vdna 0.1.1's network (that is rand-resnet50)",
    layers=LAYERS,
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights=WeightsSource(kind="generated", location=f"numpy PCG64 seed {RAND_SEED}", sha256=RAND_SHA256),
    build=build_seeded,
    ranges="rand-resnet50-seeded.json",
    tags=("offline",),
))

