"""Activation ranges (paper A.2): per-neuron min/max observed over many images.

A ranges file keeps the raw observed min/max per neuron and the margin rule; the
normalisation interval [lo, hi] of each neuron follows from them:
  "widen" (ours):   the observed interval widened by `margin` of its width, split
                    evenly on both sides (20% -> 10% below the min, 10% above the max)
  "scale" (upstream vdna 0.1.1): lo = min * (1 + margin), hi = max * (1 + margin)
Its sha256 is taken over the resulting float32 [lo, hi] values (from float32 minima and
maxima), so two files that normalise identically share a hash whatever their formatting.
Minima and maxima are kept in float64 as read: vdna 0.1.1 normalises with the JSON values
themselves, and the "vdna-0.1.1" binning rule must see the same numbers.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdnacli.errors import FormatError

FORMAT = "vdna-ranges"
FORMAT_VERSION = 1
_MIN_WIDTH = 1e-6


@dataclass
class ActivationRanges:
    extractor: str
    mins: dict[str, np.ndarray]
    maxs: dict[str, np.ndarray]
    margin: float = 0.2
    rule: str = "widen"
    images: int = 0
    sources: tuple[str, ...] = ()

    def interval(self, layer: str, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi] per neuron in float64 (margin applied; degenerate ranges widened to
        _MIN_WIDTH). `exact=False` starts from float32-rounded minima/maxima, as the float32
        binning rule and the sha256 always have."""
        mn = self.mins[layer].astype(np.float64 if exact else np.float32).astype(np.float64)
        mx = self.maxs[layer].astype(np.float64 if exact else np.float32).astype(np.float64)
        if self.rule == "widen":
            pad = (mx - mn) * self.margin / 2
            lo, hi = mn - pad, mx + pad
        elif self.rule == "scale":
            lo, hi = mn * (1 + self.margin), mx * (1 + self.margin)
        else:
            raise FormatError(f"unknown margin rule {self.rule!r}")
        narrow = (hi - lo) < _MIN_WIDTH
        centre = (hi + lo) / 2
        lo = np.where(narrow, centre - _MIN_WIDTH, lo)
        hi = np.where(narrow, centre + _MIN_WIDTH, hi)
        return lo, hi

    def upstream_norm(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) float64 per neuron for the "vdna-0.1.1" binning rule: exactly vdna
        0.1.1's numbers for its own ranges (rule "scale": min and max x (1 + margin), no
        widening of degenerate neurons: std gets + 1e-8), and the same form for ours."""
        from vdnacli.binning import upstream_norm

        if self.rule == "scale":
            return upstream_norm(self.mins[layer], self.maxs[layer], 1 + self.margin)
        lo, hi = self.interval(layer, exact=True)
        return (lo + hi) / 2, (hi - lo) / 2 + 1e-8

    def sha256(self) -> str:
        h = hashlib.sha256()
        for layer in self.mins:
            lo, hi = self.interval(layer)
            h.update(layer.encode() + b"\0")
            h.update(lo.astype("<f4").tobytes())
            h.update(hi.astype("<f4").tobytes())
        return h.hexdigest()

    def layers(self) -> dict[str, int]:
        return {l: int(v.shape[0]) for l, v in self.mins.items()}

    def update(self, layer: str, mins: np.ndarray, maxs: np.ndarray) -> None:
        if layer in self.mins:
            self.mins[layer] = np.minimum(self.mins[layer], mins)
            self.maxs[layer] = np.maximum(self.maxs[layer], maxs)
        else:
            self.mins[layer] = np.asarray(mins, dtype=np.float64).copy()
            self.maxs[layer] = np.asarray(maxs, dtype=np.float64).copy()

    # -- files ------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "extractor": self.extractor,
            "margin": self.margin,
            "margin_rule": self.rule,
            "images": self.images,
            "sources": list(self.sources),
            "layers": {
                l: {"min": [float(x) for x in self.mins[l]], "max": [float(x) for x in self.maxs[l]]} for l in self.mins
            },
        }

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)


def load_ranges(path: Path) -> ActivationRanges:
    """Read our ranges file, or upstream vdna's activation_ranges.json."""
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FormatError(f"ranges file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read ranges file {path}: {e}") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return _from_ours(data, path)
    if isinstance(data, dict) and "mins_per_neuron" in data and "maxs_per_neuron" in data:
        return from_upstream(data, extractor=path.stem)
    raise FormatError(f"{path} is neither a vdna ranges file nor upstream activation ranges")


def _from_ours(data: dict, path: Path) -> ActivationRanges:
    try:
        mins = {l: np.asarray(v["min"], dtype=np.float64) for l, v in data["layers"].items()}
        maxs = {l: np.asarray(v["max"], dtype=np.float64) for l, v in data["layers"].items()}
        r = ActivationRanges(
            extractor=str(data["extractor"]),
            mins=mins,
            maxs=maxs,
            margin=float(data.get("margin", 0.2)),
            rule=str(data.get("margin_rule", "widen")),
            images=int(data.get("images", 0)),
            sources=tuple(data.get("sources", ())),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: malformed ranges file ({e})") from None
    _validate(r, path)
    return r


def from_upstream(data: dict, extractor: str) -> ActivationRanges:
    """Upstream layout: {"mins_per_neuron": {layer: {idx: v}}, "maxs_per_neuron": ...}."""
    mins, maxs = {}, {}
    try:
        for layer, per in data["mins_per_neuron"].items():
            order = list(per)  # the file's order, as vdna 0.1.1 pairs keys with neurons
            mins[layer] = np.asarray([per[i] for i in order], dtype=np.float64)
            maxs[layer] = np.asarray([data["maxs_per_neuron"][layer][i] for i in order], dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FormatError(f"malformed upstream activation ranges ({e})") from None
    r = ActivationRanges(extractor=extractor, mins=mins, maxs=maxs, margin=0.2, rule="scale")
    _validate(r, Path(extractor))
    return r


def _validate(r: ActivationRanges, path: Path) -> None:
    for l in r.mins:
        mn, mx = r.mins[l], r.maxs.get(l)
        if mx is None or mn.shape != mx.shape or mn.ndim != 1:
            raise FormatError(f"{path}: layer {l!r} has mismatched min/max arrays")
        if not (np.isfinite(mn).all() and np.isfinite(mx).all()) or (mn > mx).any():
            raise FormatError(f"{path}: layer {l!r} has non-finite values or min > max")
