"""Declarative extractor specs and their registry (one small frozen entry per network).

A spec says everything that identifies an extractor: architecture, where its weights
come from (and their sha256 when published), the layers and neurons it exposes, the
input size and normalisation, and where its default activation ranges live. Families
register specs at import; `timm:<model>` specs are created on demand by a factory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vdnacli.errors import ExtractorError, UnknownExtractorError, did_you_mean

WEIGHT_KINDS = ("package", "hf", "url", "generated")


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's weights come from; resolved to a local file by `weights.resolve`.

    kind "package":   `location` = "module:callable" returning the path of a file shipped in
                      an installed Python package
    kind "hf":        `location` = Hugging Face repo id, `filenames` = file(s) in the repo, tried
                      in order (huggingface_hub's cache; timm and open_clip use the same one)
    kind "url":       `location` = URL, downloaded into torch.hub's checkpoint cache
    kind "generated": weights computed by the build function (no file); `sha256` pins them
    `sha256` is the full hex digest, or a published prefix (torch.hub's "-<8 hex>" suffix).
    """

    kind: str
    location: str
    sha256: str | None = None
    install_hint: str = ""
    filenames: tuple[str, ...] = ()
    revision: str | None = None

    def describe(self) -> str:
        if self.kind == "hf":
            return f"hf://{self.location}/{self.filenames[0]}"
        if self.kind == "generated":
            return f"generated ({self.location})"
        return self.location


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repo (e.g. upstream's activation_ranges.json)."""

    repo: str
    filename: str
    revision: str | None = None


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
    # (spec, weights_path or None) -> torch.nn.Module returning {layer: [B, C, S]};
    # weights_path None builds the architecture with random weights and downloads nothing.
    build: Callable
    ranges: str | None = None  # packaged ranges resource (vdnacli/extractors/ranges/<file>)
    ranges_hub: HubFile | None = None  # upstream activation_ranges.json on the Hub
    crop: str = "center"
    interpolation: str = "bicubic"
    resize: str = "pil"  # "pil" (uint8, antialiased `interpolation`) or "clean" (float bicubic, as vdna 0.1.1)
    # Bumped whenever a layer's definition changes under the same name: DNAs record it and
    # only DNAs of the same revision are compared. `layer_notes` says what a layer is.
    revision: int = 1
    layer_notes: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = field(default=())  # "paper": follows vdna 0.1.1's recipe by default (vdnacli.settings)
    # vdna 0.1.1's `feature_extractor_name` of the same network (None: upstream has no such network);
    # `vdnacli.extractors.identity.UPSTREAM_NAMES` is built from these.
    upstream: str | None = None
    # The arithmetic of the network itself, whatever --precision says ("fp16": CLIP, as upstream).
    dtype: str = "fp32"

    @property
    def neurons(self) -> int:
        return sum(n for _, n in self.layers)

    def preprocessing(self, crop: str | None = None) -> dict:
        """The preprocessing record of a DNA made with this extractor's default settings."""
        from vdnacli.settings import ComputeSettings

        return ComputeSettings.for_extractor(self.name, crop=crop).preprocessing(self)


_REGISTRY: dict[str, ExtractorSpec] = {}
_FACTORIES: dict[str, Callable[[str], ExtractorSpec]] = {}  # name prefix -> spec factory


def register(spec: ExtractorSpec) -> ExtractorSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"extractor {spec.name!r} registered twice")
    if spec.weights.kind not in WEIGHT_KINDS:
        raise ValueError(f"extractor {spec.name!r}: unknown weight source kind {spec.weights.kind!r}")
    _REGISTRY[spec.name] = spec
    return spec


def register_factory(prefix: str, factory: Callable[[str], ExtractorSpec]) -> None:
    """Names starting with `prefix` (e.g. "timm:") are built on demand by `factory(name)`."""
    _FACTORIES[prefix] = factory


def get_spec(name: str) -> ExtractorSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix, factory in _FACTORIES.items():
        if name.startswith(prefix):
            spec = factory(name)
            _REGISTRY.setdefault(spec.name, spec)
            return _REGISTRY[spec.name]
    raise UnknownExtractorError(f"unknown extractor '{name}'{did_you_mean(name, _REGISTRY)}; run 'vdna extractors' to "
                                "list them, or use timm:<model_name>")


def all_specs() -> list[ExtractorSpec]:
    """The registered extractors (on-demand `timm:` entries included once created)."""
    return list(_REGISTRY.values())
