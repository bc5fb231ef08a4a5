"""Inception-v3 as used for FID (the TensorFlow 2015-12-05 graph, ported to PyTorch by pytorch-fid).

Architecture: torchvision's Inception3 (1008 classes, no auxiliary head) with the FID graph's
three differences: the pooling branch of the A, C and first E blocks averages without counting
the zero padding, and the last E block max-pools. Inputs are scaled to [-1, 1] (mean = std = 0.5),
299 x 299 (paper Table 5).

Layers (paper Table 4): the outputs of the first and second max pooling (64, 192), the input
of the auxiliary classifier (Mixed_6e, 768) and the final average pooling (2048); names
follow upstream vdna (block_0 .. block_3).
"""
from __future__ import annotations

from vdnacli.extractors.spec import ExtractorSpec, HubFile, WeightsSource, register
from vdnacli.extractors.vit import UPSTREAM_REPO

FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"


def fid_inception_v3():
    """torchvision's Inception3 with the FID graph's pooling branches."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torchvision.models import inception as tv

    def avg_no_pad(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class BlockA(tv.InceptionA):
        def _forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5, b3, self.branch_pool(avg_no_pad(x))]

    class BlockC(tv.InceptionC):
        def _forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                         self.branch7x7dbl_5):
                d = conv(d)
            return [self.branch1x1(x), b7, d, self.branch_pool(avg_no_pad(x))]

    class BlockE(tv.InceptionE):
        pool = staticmethod(avg_no_pad)

        def _forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            return [self.branch1x1(x), b3, d, self.branch_pool(self.pool(x))]

    class BlockEMax(BlockE):
        pool = staticmethod(lambda x: F.max_pool2d(x, kernel_size=3, stride=1, padding=1))

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    net.Mixed_5b = BlockA(192, pool_features=32)
    net.Mixed_5c = BlockA(256, pool_features=64)
    net.Mixed_5d = BlockA(288, pool_features=64)
    net.Mixed_6b = BlockC(768, channels_7x7=128)
    net.Mixed_6c = BlockC(768, channels_7x7=160)
    net.Mixed_6d = BlockC(768, channels_7x7=160)
    net.Mixed_6e = BlockC(768, channels_7x7=192)
    net.Mixed_7b = BlockE(1280)
    net.Mixed_7c = BlockEMax(2048)
    return net


def build(spec: ExtractorSpec, weights_path):
    from torch import nn

    from vdnacli.extractors.weights import load_into, load_state_dict

    net = fid_inception_v3()
    if weights_path is not None:
        load_into(net, load_state_dict(weights_path), spec.name, drop=("AuxLogits.",))

    class InceptionBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            n = self.net
            x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))
            out = {"block_0": x.flatten(2)}
            x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))
            out["block_1"] = x.flatten(2)
            for m in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d, n.Mixed_6e):
                x = m(x)
            out["block_2"] = x.flatten(2)
            for m in (n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
                x = m(x)
            out["block_3"] = n.avgpool(x).flatten(2)
            return out

    return InceptionBlocks()


INCEPTION_V3 = register(ExtractorSpec(
    name="inception-v3",
    architecture="Inception-v3, the FID network (TF 2015-12-05 graph, ImageNet)",
    description="FID's feature extractor (pytorch-fid's weights, torch.hub cache); ranges from upstream's Hub repo",
    layers=(("block_0", 64), ("block_1", 192), ("block_2", 768), ("block_3", 2048)),
    input_size=299,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    weights=WeightsSource(kind="url", location=FID_WEIGHTS_URL, sha256="6726825d",
                          install_hint="download the URL into torch.hub's checkpoints folder"),
    build=build,
    ranges_hub=HubFile(UPSTREAM_REPO, "Inception/inception_v3/activation_ranges.json"),
    tags=("paper",),
    upstream="inception",
))
