"""A built extractor: network in eval mode on a device, plus what identifies it."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vdnacli.errors import ExtractorError
from vdnacli.extractors import weights as weights_mod
from vdnacli.extractors.spec import ExtractorSpec, get_spec
from vdnacli.ranges import ActivationRanges, load_ranges


@dataclass
class Extractor:
    spec: ExtractorSpec
    module: object  # torch.nn.Module: images [B, 3, H, W] -> {layer: [B, C, S]}
    weights_sha256: str
    device: object  # torch.device

    def __call__(self, x):
        return self.module(x)


def packaged_ranges(spec: ExtractorSpec) -> ActivationRanges | None:
    if not spec.ranges:
        return None
    res = resources.files("vdnacli.extractors").joinpath("ranges", spec.ranges)
    with resources.as_file(res) as p:
        if not Path(p).is_file():
            return None
        return load_ranges(Path(p))


def resolve_device(device: str | None):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ExtractorError(f"invalid device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExtractorError(f"device '{device}' requested but no CUDA GPU is available; use --device cpu")
    return dev


def load_extractor(name: str, device: str | None = "auto", weights: Path | None = None) -> Extractor:
    import torch

    spec = get_spec(name)
    path, digest = weights_mod.resolve(spec, weights)
    module = spec.build(spec, path)
    dev = resolve_device(device)
    module.eval().requires_grad_(False).to(dev)
    return Extractor(spec=spec, module=module, weights_sha256=digest, device=dev)
