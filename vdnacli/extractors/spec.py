"""Declarative extractor specs and their registry (one small frozen entry per network)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

from vdnacli.errors import ExtractorError


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's weights come from; resolved to a local file by `weights.resolve`."""

    kind: str  # "package": a file shipped inside an installed Python package
    location: str  # package: "module:callable" returning the path
    sha256: str | None = None
    install_hint: str = ""


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    architecture: str
    description: str
    layers: tuple[tuple[str, int], ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: WeightsSource
    build: Callable  # (spec, weights_path) -> torch.nn.Module returning {layer: [B, C, S]}
    ranges: str | None = None  # packaged ranges resource (vdnacli/extractors/ranges/<file>)
    crop: str = "center"
    interpolation: str = "bicubic"
    tags: tuple[str, ...] = field(default=())

    @property
    def neurons(self) -> int:
        return sum(n for _, n in self.layers)

    def preprocessing(self) -> dict:
        """Everything about the input that changes activations; recorded in every DNA."""
        return {
            "crop": self.crop,
            "resize": f"pil-{self.interpolation}-antialias",
            "size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }


_REGISTRY: dict[str, ExtractorSpec] = {}


def register(spec: ExtractorSpec) -> ExtractorSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"extractor {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ExtractorSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ExtractorError(
            f"unknown extractor '{name}'.{hint} Run 'vdna extractors' to list them."
        ) from None


def all_specs() -> list[ExtractorSpec]:
    return list(_REGISTRY.values())
