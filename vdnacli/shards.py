"""Shard DNAs: the DNAs of K disjoint parts of a DNA's images, kept beside the full DNA.

An image belongs to shard `int.from_bytes(sha256(file)[:8], "big") % K` (the first 8 bytes
of the 16-byte content hash the pipeline keeps anyway). The rule depends on the file alone:
the same file lands in the same shard whatever else is counted with it, so `--append`,
`merge` and distributed runs keep shards consistent, and a recomputation reproduces them.
The full DNA is the exact sum of its shards (integer histograms: exactly; Gaussian float64
sums: up to rounding, since the full sums are accumulated in their own order).

Stored in an entry (see `to_arrays`):
  shards/images                 int64 [K]          images per shard
  shards/hist/<layer>           [K, neurons, bins] narrowest of uint16 / int32 / int64
  shards/gauss/<layer>/{sum,sumsq}            float64 [K, neurons]
  shards/layer_gauss/<layer>/{sum,outer}      float64 [K, neurons], [K, neurons, neurons]
and recorded in the metadata as {"count": K, "rule": "sha256-mod"}.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vdnacli.errors import ConfigError, FormatError

RULE = "sha256-mod"
MAX_SHARDS = 256
DEFAULT_SHARDS = 8  # what `vdna add` keeps unless told (storage cost measured in docs/statistics.md)
PREFIX = "shards/"


def check_count(k: int) -> int:
    """A valid shard count: 0 (no shards) or 2..MAX_SHARDS."""
    if not isinstance(k, int) or isinstance(k, bool) or not (k == 0 or 2 <= k <= MAX_SHARDS):
        raise ConfigError(f"--shards must be 0 (none) or between 2 and {MAX_SHARDS}")
    return k


def shard_of(digest: bytes, k: int) -> int:
    """The shard of one image from its content hash (sha256 prefix)."""
    return int.from_bytes(bytes(digest[:8]), "big") % k


def shard_ids(digests, k: int) -> np.ndarray:
    """int64 [n]: the shard of each digest (bytes, or rows of a uint8 [n, 16] array)."""
    return np.fromiter((shard_of(d, k) for d in digests), dtype=np.int64, count=len(digests))


def _storage_dtype(counts: np.ndarray) -> np.dtype:
    top = int(counts.max(initial=0))
    return np.dtype(np.uint16 if top < 2**16 else np.int32 if top < 2**31 else np.int64)


@dataclass
class Shards:
    """K shard DNAs of one DNA (the same kinds and layers as the DNA)."""

    count: int
    images: np.ndarray  # int64 [K]
    hist: dict[str, np.ndarray] | None = None  # layer -> integer [K, neurons, bins]
    gauss: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # layer -> (sum, sumsq) float64 [K, n]
    layer_gauss: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # layer -> (sum [K, n], outer [K, n, n])

    def record(self) -> dict:
        return {"count": int(self.count), "rule": RULE}

    @property
    def nonempty(self) -> np.ndarray:
        """Indices of the shards that hold at least one image."""
        return np.flatnonzero(self.images > 0)

    def restrict(self, kinds, layers=None) -> "Shards":
        """The same shards holding only `kinds` (and `layers`)."""
        def pick(d):
            return None if d is None else {l: v for l, v in d.items() if layers is None or l in layers}

        return Shards(self.count, self.images, pick(self.hist) if "hist" in kinds else None,
                      pick(self.gauss) if "gauss" in kinds else None,
                      pick(self.layer_gauss) if "layer-gauss" in kinds else None)

    def fold(self, k: int) -> "Shards":
        """The same images in k shards, k a divisor of K: (h mod K) mod k = h mod k."""
        if k == self.count:
            return self
        if k < 2 or self.count % k:
            raise ConfigError(f"{self.count} shards cannot be folded into {k}")

        def f(a):
            return a.reshape(self.count // k, k, *a.shape[1:]).sum(axis=0)

        return Shards(
            k, f(self.images),
            None if self.hist is None else {l: f(h.astype(np.int64)) for l, h in self.hist.items()},
            None if self.gauss is None else {l: (f(s), f(q)) for l, (s, q) in self.gauss.items()},
            None if self.layer_gauss is None else {l: (f(s), f(o)) for l, (s, o) in self.layer_gauss.items()},
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {PREFIX + "images": np.asarray(self.images, dtype=np.int64)}
        for l, h in (self.hist or {}).items():
            arrays[f"{PREFIX}hist/{l}"] = h.astype(_storage_dtype(h), copy=False)
        for l, (s, q) in (self.gauss or {}).items():
            arrays[f"{PREFIX}gauss/{l}/sum"] = np.asarray(s, dtype=np.float64)
            arrays[f"{PREFIX}gauss/{l}/sumsq"] = np.asarray(q, dtype=np.float64)
        for l, (s, o) in (self.layer_gauss or {}).items():
            arrays[f"{PREFIX}layer_gauss/{l}/sum"] = np.asarray(s, dtype=np.float64)
            arrays[f"{PREFIX}layer_gauss/{l}/outer"] = np.asarray(o, dtype=np.float64)
        return arrays


def keys(meta: dict, kinds, layers) -> list[str]:
    """The dataset paths of the shards of `kinds` and `layers` in an entry recorded by `meta`."""
    out = [PREFIX + "images"]
    for l in layers:
        if "hist" in kinds:
            out.append(f"{PREFIX}hist/{l}")
        if "gauss" in kinds:
            out += [f"{PREFIX}gauss/{l}/{p}" for p in ("sum", "sumsq")]
        if "layer-gauss" in kinds:
            out += [f"{PREFIX}layer_gauss/{l}/{p}" for p in ("sum", "outer")]
    return out


def count_of(meta: dict) -> int:
    """The shard count an entry records (0: none; malformed records read as none)."""
    rec = meta.get("shards")
    if not isinstance(rec, dict):
        return 0
    k = rec.get("count")
    return k if type(k) is int and 2 <= k <= MAX_SHARDS else 0


def from_arrays(meta: dict, arrays: dict, layers: dict[str, int], kinds, bins, full) -> Shards | None:
    """The shards kept in an entry, validated against the full DNA (`full`: the DNA's hist,
    gauss and layer_gauss dicts as loaded); None when the entry keeps none (or they were
    not read)."""
    images = arrays.get(PREFIX + "images")
    if images is None:
        return None
    rec = meta.get("shards")
    k = count_of(meta)
    if not isinstance(rec, dict) or rec.get("rule") != RULE or k == 0:
        raise FormatError(f"the DNA keeps shards but records no valid shard rule ({str(rec)[:60]})")
    if images.shape != (k,) or images.dtype.kind not in "iu" or (images < 0).any():
        raise FormatError(f"shards/images must be {k} non-negative integers")
    images = images.astype(np.int64)
    if int(images.sum()) != int(meta["num_images"]):
        raise FormatError(f"the shards hold {int(images.sum())} images, the DNA {meta['num_images']}")
    hist_full, gauss_full, lg_full = full
    out = Shards(k, images)
    if "hist" in kinds and hist_full is not None:
        out.hist = {}
        for l, n in layers.items():
            h = arrays.get(f"{PREFIX}hist/{l}")
            if h is None or h.shape != (k, n, bins) or h.dtype.kind not in "iu":
                raise FormatError(f"shard histograms of layer {l!r} are missing or not an integer [{k}, {n}, {bins}] array")
            if h.dtype.kind == "i" and h.size and h.min() < 0:
                raise FormatError(f"shard histograms of layer {l!r} have negative counts")
            if not np.array_equal(h.sum(axis=0, dtype=np.int64), hist_full[l]):
                raise FormatError(f"the shard histograms of layer {l!r} do not add up to the DNA's")
            out.hist[l] = h
    if "gauss" in kinds and gauss_full is not None:
        out.gauss = {}
        for l, n in layers.items():
            s, q = arrays.get(f"{PREFIX}gauss/{l}/sum"), arrays.get(f"{PREFIX}gauss/{l}/sumsq")
            _check_float(s, (k, n), l, "Gaussian sums")
            _check_float(q, (k, n), l, "Gaussian sums of squares")
            g = gauss_full[l]
            if not (np.allclose(s.sum(0), g.sum, rtol=1e-9, atol=1e-6)
                    and np.allclose(q.sum(0), g.sumsq, rtol=1e-9, atol=1e-6)):
                raise FormatError(f"the shard Gaussians of layer {l!r} do not add up to the DNA's")
            out.gauss[l] = (s.astype(np.float64), q.astype(np.float64))
    if "layer-gauss" in kinds and lg_full is not None:
        out.layer_gauss = {}
        for l, n in layers.items():
            s, o = arrays.get(f"{PREFIX}layer_gauss/{l}/sum"), arrays.get(f"{PREFIX}layer_gauss/{l}/outer")
            _check_float(s, (k, n), l, "layer Gaussian sums")
            _check_float(o, (k, n, n), l, "layer Gaussian outer products")
            g = lg_full[l]
            if not (np.allclose(s.sum(0), g.sum, rtol=1e-9, atol=1e-6)
                    and np.allclose(o.sum(0), g.outer, rtol=1e-9, atol=1e-6)):
                raise FormatError(f"the shard layer Gaussians of layer {l!r} do not add up to the DNA's")
            out.layer_gauss[l] = (s.astype(np.float64), o.astype(np.float64))
    return out


def _check_float(a, shape, layer, what) -> None:
    if a is None or a.shape != shape or a.dtype.kind != "f" or not np.isfinite(a).all():
        raise FormatError(f"shard {what} of layer {layer!r} are missing, not float {list(shape)} or not finite")


def merge(parts: list[Shards | None], kinds) -> tuple[Shards | None, str | None]:
    """The shards of a sum of DNAs: shard j of the sum is the sum of the parts' shards j
    (after folding every part to the smallest count, when it divides the others). Returns
    (shards or None, why there are none)."""
    if any(p is None for p in parts):
        return None, "a part keeps no shards"
    k = min(p.count for p in parts)
    if any(p.count % k for p in parts):
        return None, f"the parts' shard counts ({', '.join(str(p.count) for p in parts)}) have no common fold"
    parts = [p.fold(k).restrict(kinds) for p in parts]
    first = parts[0]

    def add(attr):
        d = getattr(first, attr)
        if d is None:
            return None
        if attr == "hist":
            return {l: sum((p.hist[l].astype(np.int64) for p in parts[1:]), first.hist[l].astype(np.int64)) for l in d}
        return {l: (sum(p.__dict__[attr][l][0] for p in parts), sum(p.__dict__[attr][l][1] for p in parts)) for l in d}

    return Shards(k, sum(p.images for p in parts), add("hist"), add("gauss"), add("layer_gauss")), None
