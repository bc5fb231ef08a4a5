"""What a DNA is computed with, as one frozen value: `ComputeSettings`.

`vdna add`, `--like`, `score`, `similar`, `calibrate` and the metadata recorded in every DNA
all go through it: settings are parsed once, carried whole, recorded whole and read back
whole (`--like ENTRY` is `ComputeSettings.from_meta(entry.meta)`).

Two recipes exist, named by what they reproduce:
  "vdna-0.1.1" the paper's own code (PyPI vdna 0.1.1): image decoded with PIL's plain
               convert("RGB"), crop "none", clean resize (each channel a float PIL image,
               bicubic, no uint8 rounding), activations normalised in float64 with
               (a - mean) / std, mean and std from the ranges x 1.2, binned as torch.histc on
               [-1, 1]. The paper's extractors default to it, so published DNAs line up.
  "vdnacli"    ours: EXIF-upright decode (high bit depths rescaled), centre crop, clean resize,
               the binning rule of `vdnacli.kernels` (two float32 operations). Extractors
               outside the paper default to it, with their own crop and resize.
Execution choices that do not change a DNA (device, batch size, workers) are not settings; the
shard count is one (it decides which shard DNAs the entry keeps, vdnacli.shards).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from vdnacli.errors import ConfigError
from vdnacli.shards import check_count, count_of

KINDS = ("hist", "gauss", "layer-gauss")
DECODE_MODES = ("upright", "plain")  # EXIF-upright, high bit depths rescaled | PIL's Image.convert("RGB") (vdna 0.1.1)
CROPS = ("center", "none", "random")
RESIZES = ("pil", "clean", "legacy_pytorch")  # uint8 PIL (antialiased) | vdna 0.1.1 / clean-fid float | torch bilinear
BINNINGS = ("float32", "vdna-0.1.1")
PRECISIONS = ("fp32", "bf16", "fp16")
DECODERS = ("pil", "torch")
RECIPES = {
    "vdna-0.1.1": {"decode_mode": "plain", "crop": "none", "resize": "clean", "binning": "vdna-0.1.1"},
    "vdnacli": {"decode_mode": "upright", "crop": "center", "resize": "clean", "binning": "float32"},
}


@dataclass(frozen=True)
class ComputeSettings:
    """Everything that decides a DNA's numbers. Digests (`*_sha256`) are expectations: when
    set, the weights/ranges actually used must have them, or the computation is refused."""

    extractor: str = "efficientnet-lite0"
    kinds: tuple[str, ...] = ("hist",)
    bins: int = 1000
    weights: Path | None = None  # a local weight file instead of the extractor's default
    weights_sha256: str | None = None
    ranges: Path | None = None  # a ranges file instead of the extractor's default
    ranges_sha256: str | None = None
    decode_mode: str = "upright"
    crop: str = "center"
    crop_seed: int = 0  # crop "random": each image's offset drawn from (seed, its content hash)
    resize: str = "pil"
    interpolation: str = "bicubic"  # the "pil" resize filter (the extractor's)
    binning: str = "float32"
    precision: str = "fp32"
    decoder: str = "pil"
    shards: int = 0  # keep the DNAs of K disjoint shards of the images too (vdnacli.shards; 0 = none)
    # set by from_meta: the entry whose record these settings were read from (for messages)
    like: str | None = field(default=None, compare=False)

    def __post_init__(self):
        kinds = tuple(dict.fromkeys(self.kinds))
        object.__setattr__(self, "kinds", kinds)
        for value, allowed, what in ((self.decode_mode, DECODE_MODES, "decode mode"), (self.crop, CROPS, "crop"),
                                     (self.resize, RESIZES, "resize"), (self.binning, BINNINGS, "binning rule"),
                                     (self.precision, PRECISIONS, "precision"), (self.decoder, DECODERS, "decoder")):
            if value not in allowed:
                raise ConfigError(f"unknown {what} '{value}'; choose from {', '.join(allowed)}")
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ConfigError(f"unknown kind {', '.join(bad) or '(none)'}; choose from {', '.join(KINDS)}")
        if not isinstance(self.bins, int) or not 2 <= self.bins <= 100_000:
            raise ConfigError("--bins must be between 2 and 100000")
        check_count(self.shards)
        if self.decoder == "torch" and (self.resize != "pil" or self.decode_mode != "upright" or self.crop == "random"):
            raise ConfigError("--decode torch reproduces the 'pil' resize of EXIF-upright images with a centre crop or "
                              f"none; these settings use resize '{self.resize}', decode mode '{self.decode_mode}', crop "
                              f"'{self.crop}': use --decode pil")

    # -- construction ------------------------------------------------------------------
    @classmethod
    def for_extractor(cls, extractor: str, **overrides) -> "ComputeSettings":
        """The extractor's own defaults (its recipe), then `overrides` (None = not given)."""
        from vdnacli.extractors import get_spec

        spec = get_spec(extractor)
        values = dict(extractor=spec.name, interpolation=spec.interpolation, **recipe_of(spec))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_meta(cls, meta: dict, like: str | None = None) -> "ComputeSettings":
        """The settings a DNA records (ours, imported or pulled), read back whole. DNAs made
        before a setting was recorded get the value that was then implied."""
        from vdnacli.dna import current_meta

        meta = current_meta(meta)
        pre = meta.get("preprocessing") or {}
        resize = str(pre.get("resize") or "")
        if resize in ("clean", "legacy_pytorch"):
            resize_kind, interpolation = resize, "bicubic"
        elif resize.startswith(("pil-", "torch-")):  # "pil-bicubic-antialias", "torch-bicubic-antialias"
            resize_kind, interpolation = "pil", resize.split("-")[1]
        else:
            raise ConfigError(f"{_who(meta, like)} records no resize this version knows ({resize or 'none'}); "
                              "give the settings explicitly")
        decoder = "torch" if str(pre.get("decoder", "pil")).startswith("torchvision") else "pil"
        try:
            return cls(
                extractor=str(meta["extractor"]),
                kinds=tuple(meta.get("kinds") or ("hist",)),
                bins=int(meta.get("bins") or 1000),
                weights_sha256=meta.get("weights_sha256"),
                ranges_sha256=meta.get("ranges_sha256"),
                decode_mode=str(pre.get("decode", "upright")),
                crop=str(pre.get("crop", "center")),
                crop_seed=int(pre.get("crop_seed", 0) or 0),
                resize=resize_kind,
                interpolation=interpolation,
                binning=str(meta.get("binning") or "float32"),
                precision=str(meta.get("precision", "fp32")),
                decoder=decoder,
                shards=count_of(meta),
                like=like,
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{_who(meta, like)} does not record its settings completely") from None

    def replace(self, **overrides) -> "ComputeSettings":
        """A copy with `overrides` applied (None = not given)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    # -- what a DNA records ----------------------------------------------------------------
    def preprocessing(self, spec, device=None) -> dict:
        """The preprocessing record of a DNA made with these settings by `spec`."""
        if self.resize == "pil":
            resize = f"pil-{self.interpolation}-antialias"
        else:
            resize = self.resize
        pre = {"decode": self.decode_mode, "crop": self.crop, "resize": resize, "size": spec.input_size,
               "mean": list(spec.mean), "std": list(spec.std)}
        if self.crop == "random":
            pre["crop_seed"] = self.crop_seed
        if self.decoder == "torch":
            from vdnacli import decode_torch

            pre.update(decode_torch.recorded(device, self.interpolation))
        return pre

    def recipe_name(self) -> str:
        """"vdna-0.1.1" or "vdnacli" when the settings follow one recipe throughout, else "custom"."""
        mine = {"decode_mode": self.decode_mode, "crop": self.crop, "resize": self.resize, "binning": self.binning}
        return next((name for name, recipe in RECIPES.items() if recipe == mine), "custom")

    def describe(self) -> dict:
        """A JSON-ready view (for `vdna show`, notes and error messages)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "like"}
        d["kinds"] = list(self.kinds)
        d["weights"] = str(self.weights) if self.weights else None
        d["ranges"] = str(self.ranges) if self.ranges else None
        return d


def recipe_of(spec) -> dict:
    """The extractor's default recipe: the paper's extractors (tag "paper") follow vdna 0.1.1
    throughout, so their DNAs line up with published ones; others follow the spec's own."""
    if "paper" in spec.tags:
        return dict(RECIPES["vdna-0.1.1"])
    return {"decode_mode": "upright", "crop": spec.crop, "resize": spec.resize, "binning": "float32"}


def _who(meta: dict, like: str | None) -> str:
    name = like or meta.get("name")
    return f"entry '{name}'" if name else "this DNA"
