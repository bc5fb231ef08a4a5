"""The DNA: per-neuron histograms and/or Gaussian sufficient statistics, with provenance.

A DNA holds, for every layer of its extractor,
  hist[layer]:        int64 [neurons, bins] counts over [-1, 1] after range normalisation
  gauss[layer]:       float64 [neurons] sum and sum of squares of the per-image spatially
                      averaged activation, plus the image count (so Gaussians merge exactly)
  layer_gauss[layer]: float64 [neurons] sum and [neurons, neurons] sum of outer products of
                      the same per-image averages, plus the image count (full covariance, FID)
All are sums over images, so the DNA of a union is the sum of the DNAs (Eq. 2).
A histogram DNA also keeps the activation ranges it was binned with (`ranges`), so the
settings it records are complete: `--like` can reproduce it without the ranges file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from vdnacli import __version__
from vdnacli import shards as shards_mod
from vdnacli.errors import FormatError, IncompatibleDNAError
from vdnacli.thumbnails import Thumbnails, combine as combine_thumbnails

KINDS = ("hist", "gauss", "layer-gauss")
_ATTR = {"hist": "hist", "gauss": "gauss", "layer-gauss": "layer_gauss"}  # kind -> DNA attribute

# Keys that must agree for two DNAs to be comparable, by the kind compared.
_MUST_MATCH = {
    "hist": ("extractor", "extractor_revision", "weights_sha256", "ranges_sha256", "bins", "layers"),
    "gauss": ("extractor", "extractor_revision", "weights_sha256", "layers"),
    "layer-gauss": ("extractor", "extractor_revision", "weights_sha256", "layers"),
}


@dataclass
class Gaussian:
    """Mergeable per-neuron Gaussian: count, sum and sum of squares (float64)."""

    count: int
    sum: np.ndarray
    sumsq: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def var(self) -> np.ndarray:
        """Unbiased variance (ddof=1), 0 with a single image, never negative."""
        if self.count < 2:
            return np.zeros_like(self.sum)
        v = (self.sumsq - self.sum * self.sum / self.count) / (self.count - 1)
        return np.maximum(v, 0.0)

    def __add__(self, other: "Gaussian") -> "Gaussian":
        return Gaussian(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)


@dataclass
class LayerGaussian:
    """Mergeable full-covariance Gaussian of one layer: count, sum [C], sum of outer products [C, C]."""

    count: int
    sum: np.ndarray
    outer: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof=1, as np.cov), exactly symmetric; zeros with a single image."""
        if self.count < 2:
            return np.zeros_like(self.outer)
        c = (self.outer - np.outer(self.sum, self.sum) / self.count) / (self.count - 1)
        return (c + c.T) / 2

    def select(self, idx: np.ndarray | None) -> "LayerGaussian":
        """The Gaussian of a subset of the layer's neurons (a marginal: sub-vector and sub-block)."""
        if idx is None:
            return self
        return LayerGaussian(self.count, self.sum[idx], self.outer[np.ix_(idx, idx)])

    def __add__(self, other: "LayerGaussian") -> "LayerGaussian":
        return LayerGaussian(self.count + other.count, self.sum + other.sum, self.outer + other.outer)


@dataclass
class DNA:
    meta: dict
    hist: dict[str, np.ndarray] | None = None
    gauss: dict[str, Gaussian] | None = None
    layer_gauss: dict[str, LayerGaussian] | None = None
    image_hashes: np.ndarray | None = field(default=None, repr=False)  # sorted [n, 16] uint8
    thumbnails: Thumbnails | None = field(default=None, repr=False)  # a few images, by smallest hash
    ranges: object | None = field(default=None, repr=False)  # vdnacli.ranges.ActivationRanges (hist DNAs)
    shards: object | None = field(default=None, repr=False)  # vdnacli.shards.Shards: K disjoint parts, summing to this

    # -- descriptive -------------------------------------------------------------
    @property
    def layers(self) -> dict[str, int]:
        return dict(self.meta["layers"])

    @property
    def num_images(self) -> int:
        return int(self.meta["num_images"])

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if getattr(self, _ATTR[k]) is not None]

    def data(self, kind: str) -> dict | None:
        """The per-layer data of one kind ("hist", "gauss", "layer-gauss"), or None."""
        return getattr(self, _ATTR[kind])

    def require(self, kind: str) -> None:
        if self.data(kind) is None:
            have = ", ".join(self.kinds) or "nothing"
            raise IncompatibleDNAError(
                f"DNA '{self.meta.get('name', '?')}' has no {kind} data (it holds {have}); "
                f"recompute it with --kind {kind}"
            )

    # -- arithmetic ----------------------------------------------------------------
    def __add__(self, other: "DNA") -> "DNA":
        return merge([self, other])


def images_digest(sorted_hashes: np.ndarray) -> str:
    """sha256 over the sorted per-image content hashes: equal sets give equal digests."""
    return hashlib.sha256(np.ascontiguousarray(sorted_hashes, dtype=np.uint8).tobytes()).hexdigest()


def new_meta(*, extractor, weights_sha256, ranges_sha256, layers, bins, preprocessing, kinds, precision="fp32",
             binning="float32", extractor_revision: int = 1) -> dict:
    return {
        "format": "vdna-dna",
        "format_version": 1,
        "kinds": list(kinds),
        "extractor": extractor,
        "extractor_revision": int(extractor_revision),
        "weights_sha256": weights_sha256,
        "ranges_sha256": ranges_sha256,
        "layers": [[name, int(n)] for name, n in layers.items()],
        "bins": int(bins) if "hist" in kinds else None,
        "preprocessing": dict(preprocessing),
        "binning": binning,
        "precision": precision,
        "num_images": 0,
        "images_sha256": None,
        "tool": "vdna",
        "tool_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def must_match(kind: str) -> tuple[str, ...]:
    """The metadata keys two DNAs must agree on to be compared with `kind` (a digest that
    is unknown on either side is assumed to match, with a warning)."""
    return _MUST_MATCH[kind]


def check_compatible(a: DNA, b: DNA, kind: str) -> list[str]:
    """Raise if a and b cannot be compared with `kind`; return warnings otherwise."""
    a.require(kind)
    b.require(kind)
    warnings = []
    for key in _MUST_MATCH[kind]:
        va, vb = a.meta.get(key), b.meta.get(key)
        if key == "extractor_revision":  # DNAs made before revisions were recorded: revision 1
            va, vb = va or 1, vb or 1
        if key.endswith("sha256") and (va is None or vb is None):
            if va != vb:
                warnings.append(f"{key} unknown for one DNA (imported?): assuming they match")
            continue
        if key == "layers":
            va, vb = [tuple(x) for x in va], [tuple(x) for x in vb]
        if va != vb:
            what = {"weights_sha256": "weights", "ranges_sha256": "activation ranges",
                    "extractor_revision": "extractor revisions (a layer's definition changed)"}.get(key, key)
            raise IncompatibleDNAError(
                f"cannot compare '{a.meta.get('name', 'A')}' and '{b.meta.get('name', 'B')}': "
                f"different {what} ({_short(va)} vs {_short(vb)}); compute both with the same extractor settings"
            )
    if a.meta.get("preprocessing") != b.meta.get("preprocessing"):
        warnings.append("the DNAs were computed with different preprocessing; distances may be biased")
    if kind == "hist" and binning_of(a.meta) != binning_of(b.meta):
        warnings.append(f"the DNAs were binned under different rules ({binning_of(a.meta)} vs {binning_of(b.meta)}); "
                        "distances may be biased")
    if a.meta.get("precision", "fp32") != b.meta.get("precision", "fp32"):
        warnings.append(f"the DNAs were computed at different precisions ({a.meta.get('precision', 'fp32')} vs "
                        f"{b.meta.get('precision', 'fp32')})")
    return warnings


def current_meta(meta: dict) -> dict:
    """Recorded metadata in today's terms: an extractor renamed since the DNA was made gets
    its current name (vdnacli.extractors.identity). Returns `meta` itself when nothing changed."""
    name = meta.get("extractor")
    if not isinstance(name, str):
        return meta
    from vdnacli.extractors.identity import current_name

    now = current_name(name, meta.get("weights_sha256"))
    return meta if now == name else dict(meta, extractor=now)


def binning_of(meta: dict) -> str:
    """The binning rule a DNA records ("float32" for DNAs made before rules were recorded)."""
    return meta.get("binning") or "float32"


def _short(v) -> str:
    s = str(v)
    return s[:16] + "…" if len(s) > 19 else s


def merge(dnas: list[DNA], name: str | None = None) -> DNA:
    """Sum DNAs (histograms and Gaussian sums); refuses incompatible ones."""
    if not dnas:
        raise IncompatibleDNAError("nothing to merge")
    first = dnas[0]
    kinds = [k for k in first.kinds if all(d.data(k) is not None for d in dnas)]
    if not kinds:
        raise IncompatibleDNAError("the DNAs share no distribution kind to merge")
    for d in dnas[1:]:
        for k in kinds:
            check_compatible(first, d, k)
    meta = dict(first.meta)
    meta["kinds"] = kinds
    meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["tool_version"] = __version__
    if name:
        meta["name"] = name
    hist = gauss = layer_gauss = None
    if "hist" in kinds:
        hist = {l: sum(d.hist[l] for d in dnas).astype(np.int64) for l in first.hist}
    if "gauss" in kinds:
        gauss = {l: sum((d.gauss[l] for d in dnas[1:]), first.gauss[l]) for l in first.gauss}
    if "layer-gauss" in kinds:
        layer_gauss = {l: sum((d.layer_gauss[l] for d in dnas[1:]), first.layer_gauss[l]) for l in first.layer_gauss}
    parts, _ = shards_mod.merge([d.shards for d in dnas], kinds)
    if parts is not None:
        meta["shards"] = parts.record()
    else:
        meta.pop("shards", None)
    hashes = None
    if all(d.image_hashes is not None for d in dnas):
        hashes = np.unique(np.concatenate([d.image_hashes for d in dnas]), axis=0)
    meta["num_images"] = sum(d.num_images for d in dnas)
    meta["images_sha256"] = images_digest(hashes) if hashes is not None else None
    ranges = first.ranges if hist is not None else None  # equal sha256 on every part (checked above)
    thumbs = combine_thumbnails((d.thumbnails, len(d.image_hashes) if d.image_hashes is not None else d.num_images)
                                for d in dnas)
    return DNA(meta=meta, hist=hist, gauss=gauss, layer_gauss=layer_gauss, image_hashes=hashes, ranges=ranges,
               thumbnails=thumbs, shards=parts)


# -- conversion to and from the registry's (meta, arrays) form -------------------------
def storage_dtype(counts: np.ndarray) -> np.dtype:
    """The narrowest of uint16 / int32 / int64 that holds every count of a layer: what a
    nearest search decompresses per candidate shrinks with it (int64 stays in memory)."""
    top = int(counts.max(initial=0))
    return np.dtype(np.uint16 if top < 2**16 else np.int32 if top < 2**31 else np.int64)


def to_arrays(dna: DNA) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for layer in dna.layers:
        if dna.hist is not None:
            h = np.asarray(dna.hist[layer])
            arrays[f"hist/{layer}"] = h.astype(storage_dtype(h))
        if dna.gauss is not None:
            g = dna.gauss[layer]
            arrays[f"gauss/{layer}/count"] = np.asarray([g.count], dtype=np.int64)
            arrays[f"gauss/{layer}/sum"] = np.asarray(g.sum, dtype=np.float64)
            arrays[f"gauss/{layer}/sumsq"] = np.asarray(g.sumsq, dtype=np.float64)
        if dna.layer_gauss is not None:
            g = dna.layer_gauss[layer]
            arrays[f"layer_gauss/{layer}/count"] = np.asarray([g.count], dtype=np.int64)
            arrays[f"layer_gauss/{layer}/sum"] = np.asarray(g.sum, dtype=np.float64)
            arrays[f"layer_gauss/{layer}/outer"] = np.asarray(g.outer, dtype=np.float64)
    if dna.image_hashes is not None:
        arrays["images/hashes"] = np.asarray(dna.image_hashes, dtype=np.uint8).reshape(-1, 16)
    if dna.thumbnails is not None and len(dna.thumbnails):
        arrays.update(dna.thumbnails.to_arrays())
    if dna.ranges is not None and dna.hist is not None:
        for layer in dna.layers:
            arrays[f"ranges/{layer}/min"] = np.asarray(dna.ranges.mins[layer], dtype=np.float64)
            arrays[f"ranges/{layer}/max"] = np.asarray(dna.ranges.maxs[layer], dtype=np.float64)
    if dna.shards is not None:
        arrays.update(dna.shards.to_arrays())
    return arrays


def ranges_record(ranges) -> dict:
    """What a DNA's metadata says of the ranges it keeps (the numbers are arrays beside it)."""
    return {"extractor": ranges.extractor, "margin": float(ranges.margin), "margin_rule": ranges.rule,
            "images": int(ranges.images), "sources": [str(x) for x in ranges.sources][:16]}


def _ranges_from_arrays(meta: dict, arrays: dict, layers: dict[str, int]):
    """The ActivationRanges a DNA keeps, or None (older entries, imported files)."""
    rec = meta.get("ranges")
    if not isinstance(rec, dict) or not layers:
        return None
    from vdnacli.ranges import ActivationRanges

    mins, maxs = {}, {}
    for layer, n in layers.items():
        mn, mx = arrays.get(f"ranges/{layer}/min"), arrays.get(f"ranges/{layer}/max")
        if mn is None or mx is None:
            return None
        if mn.shape != (n,) or mx.shape != (n,) or mn.dtype.kind != "f" or mx.dtype.kind != "f" \
                or not (np.isfinite(mn).all() and np.isfinite(mx).all()) or (mn > mx).any():
            raise FormatError(f"activation ranges of layer {layer!r} are malformed")
        mins[layer], maxs[layer] = mn.astype(np.float64), mx.astype(np.float64)
    try:
        r = ActivationRanges(extractor=str(rec.get("extractor", meta.get("extractor"))), mins=mins, maxs=maxs,
                             margin=float(rec.get("margin", 0.2)), rule=str(rec.get("margin_rule", "widen")),
                             images=int(rec.get("images", 0)), sources=tuple(str(x) for x in rec.get("sources", ())))
    except (TypeError, ValueError):
        raise FormatError("the DNA's ranges record is malformed") from None
    if r.rule not in ("widen", "scale"):
        raise FormatError(f"unknown margin rule {r.rule!r} in the DNA's ranges")
    if meta.get("ranges_sha256") and r.sha256() != meta["ranges_sha256"]:
        raise FormatError("the activation ranges kept in the DNA do not match its ranges_sha256")
    return r


def from_arrays(meta: dict, arrays: dict[str, np.ndarray], only_layers=None) -> DNA:
    """Rebuild a DNA, validating shapes and values (entries may come from anywhere).

    `only_layers` loads a partial DNA (the metadata still describes every layer).
    """
    meta = current_meta(meta)
    try:
        layers = {str(n): int(c) for n, c in meta["layers"]}
        kinds = list(meta["kinds"])
        bins = meta.get("bins")
        int(meta["num_images"])
    except (KeyError, TypeError, ValueError):
        raise FormatError("DNA metadata lacks layers, kinds or num_images") from None
    if only_layers is not None:
        layers = {l: n for l, n in layers.items() if l in only_layers}
    hist = gauss = layer_gauss = None
    if "hist" in kinds:
        hist = {}
        for layer, n in layers.items():
            h = arrays.get(f"hist/{layer}")
            if h is None or h.shape != (n, bins) or h.dtype.kind not in "iu":
                raise FormatError(f"histogram of layer {layer!r} is missing or not an integer [{n}, {bins}] array")
            if h.size and h.min() < 0:
                raise FormatError(f"histogram of layer {layer!r} has negative counts")
            if h.dtype == np.uint64 and h.size and h.max() > np.iinfo(np.int64).max:  # would wrap to negative
                raise FormatError(f"histogram of layer {layer!r} has counts above int64 max")
            hist[layer] = h.astype(np.int64, copy=False)
    if "gauss" in kinds:
        gauss = {}
        for layer, n in layers.items():
            try:
                c = int(arrays[f"gauss/{layer}/count"][0])
                s = arrays[f"gauss/{layer}/sum"].astype(np.float64)
                q = arrays[f"gauss/{layer}/sumsq"].astype(np.float64)
            except (KeyError, IndexError):
                raise FormatError(f"Gaussian of layer {layer!r} is incomplete") from None
            if s.shape != (n,) or q.shape != (n,) or c < 0 or not (np.isfinite(s).all() and np.isfinite(q).all()):
                raise FormatError(f"Gaussian of layer {layer!r} has wrong shape or non-finite values")
            gauss[layer] = Gaussian(c, s, q)
    if "layer-gauss" in kinds:
        layer_gauss = {}
        for layer, n in layers.items():
            try:
                c = int(arrays[f"layer_gauss/{layer}/count"][0])
                s = arrays[f"layer_gauss/{layer}/sum"].astype(np.float64)
                o = arrays[f"layer_gauss/{layer}/outer"].astype(np.float64)
            except (KeyError, IndexError):
                raise FormatError(f"layer Gaussian of layer {layer!r} is incomplete") from None
            if s.shape != (n,) or o.shape != (n, n) or c < 0 or not (np.isfinite(s).all() and np.isfinite(o).all()):
                raise FormatError(f"layer Gaussian of layer {layer!r} has wrong shape or non-finite values")
            layer_gauss[layer] = LayerGaussian(c, s, o)
    ranges = _ranges_from_arrays(meta, arrays, layers) if hist is not None and only_layers is None else None
    shards = shards_mod.from_arrays(meta, arrays, layers, kinds, bins, (hist, gauss, layer_gauss))
    return DNA(meta=dict(meta), hist=hist, gauss=gauss, layer_gauss=layer_gauss,
               image_hashes=arrays.get("images/hashes"), ranges=ranges, thumbnails=Thumbnails.from_arrays(arrays),
               shards=shards)
