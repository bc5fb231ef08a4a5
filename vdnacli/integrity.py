"""Integrity of stored DNAs: what `vdna verify` checks in each entry, and `--repair`.

Sizes and numbers first (also at the import / pull boundary): the declared size of every
array is capped by what the DNA's own metadata allows (neurons x bins x 8 bytes for a
histogram, ...; `entry_caps`) before anything is read; image counts lie in [0, 2^53),
counts in [0, int64 max], bins in [1, 100,000] (`meta_problem`, `count_problems`).

Storage level (registry): every array against its sha256 (values, dtype, shape), no array
without a checksum and no checksum without its array, plain numeric datasets only.
DNA level (here): the shapes the metadata promises, no negative counts, no NaN or
infinite Gaussian sums, and the invariants every real DNA satisfies:
  * hist: within a layer every neuron counted the same number of activations (one per
    spatial position per image), a multiple of the image count;
  * gauss: its image count equals the DNA's, and sum² <= count * sumsq (variance >= 0);
  * layer-gauss: its image count equals the DNA's, its sum of outer products is symmetric;
  * images/hashes: at most one per image, sorted and unique, matching images_sha256;
  * thumbnails: well formed (vdnacli.thumbnails), each of an image the DNA counted;
  * sketch (nearest search): equal to the sketch recomputed from the histograms, else
    the search could prune a true neighbour;
  * shards: recorded in the metadata exactly when stored, and adding up to the DNA (checked
    on load by vdnacli.shards.from_arrays).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from registry import Caps, Registry
from vdnacli import dna as dna_mod
from vdnacli.errors import FormatError, VdnaError
from vdnacli.shards import count_of

MAX_IMAGES = 2**53 - 1  # image counts are exact in float64 below 2^53
MAX_COUNT = np.iinfo(np.int64).max  # histogram counts are int64 once read
MAX_BINS = 100_000
MAX_NEURONS = 1 << 22  # per layer; the largest real layer has a few thousand
_MIB = 1 << 20
_OTHER_ARRAY = 64 * _MIB  # arrays the DNA format does not name (e.g. additions of later versions)


@dataclass
class VerifyReport:
    entries: int = 0
    damaged: dict[str, list[str]] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)  # temporary files of interrupted writes
    removed: list[str] = field(default_factory=list)  # leftovers deleted by repair

    def as_dict(self) -> dict:
        return {"entries": self.entries, "damaged": self.damaged, "leftovers": len(self.leftovers),
                "leftover_files": self.leftovers, "removed": len(self.removed), "repaired": bool(self.removed)}


def meta_problem(meta) -> str | None:
    """Why a DNA's metadata cannot describe arrays (None when its structure is sound).

    Checked before any metadata-driven read, so a forged entry gives one clear error
    instead of a TypeError deep in the catalog."""
    if not isinstance(meta, dict):
        return "metadata is not a JSON object"
    layers, kinds = meta.get("layers"), meta.get("kinds")
    if not isinstance(layers, list) or not all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and type(x[1]) is int and x[1] > 0
            for x in layers):
        return "metadata 'layers' must be a list of [name, neurons] pairs"
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        return "metadata 'kinds' must be a list of names"
    if any(x[1] > MAX_NEURONS for x in layers):
        return f"metadata 'layers' declares more than {MAX_NEURONS:,} neurons in a layer"
    n = meta.get("num_images")
    if type(n) is not int or not 0 <= n <= MAX_IMAGES:
        return "metadata 'num_images' must be an integer in [0, 2^53)"
    bins = meta.get("bins")
    if bins is not None and (type(bins) is not int or not 1 <= bins <= MAX_BINS):
        return f"metadata 'bins' must be an integer in [1, {MAX_BINS:,}]"
    if "hist" in kinds and bins is None:
        return "metadata 'bins' is missing for a DNA with histograms"
    return None


def entry_caps(meta) -> Caps:
    """The largest declared sizes an entry may have, from its own metadata (layout.Caps): for a
    DNA, neurons x bins x 8 bytes per histogram, neurons x 8 per Gaussian sum and kept range,
    neurons^2 x 8 per layer Gaussian, 16 bytes per image hash, the sketch; for a mask, neurons x 8 per layer. An
    entry whose metadata is malformed gets small caps (its problem is reported anyway)."""
    per: dict[str, int] = {}
    if isinstance(meta, dict) and meta.get("format") == "vdna-mask":
        layers = meta.get("layers")
        ok = isinstance(layers, list) and all(isinstance(x, list) and len(x) == 2 and type(x[1]) is int
                                              and 0 < x[1] <= MAX_NEURONS for x in layers)
        for l, n in layers if ok else []:
            per[f"weights/{l}"] = n * 8
    elif meta_problem(meta) is None:
        bins = meta.get("bins") or 0
        neurons = 0
        for l, n in meta["layers"]:
            neurons += n
            per[f"hist/{l}"] = n * bins * 8
            for kind in ("gauss", "layer_gauss"):
                per[f"{kind}/{l}/count"] = 8
                per[f"{kind}/{l}/sum"] = n * 8
            per[f"gauss/{l}/sumsq"] = n * 8
            per[f"ranges/{l}/min"] = per[f"ranges/{l}/max"] = n * 8  # the activation ranges a DNA keeps
            if "layer-gauss" in meta["kinds"]:
                per[f"layer_gauss/{l}/outer"] = n * n * 8
        k = count_of(meta)  # shard DNAs: K times each per-neuron array (vdnacli.shards)
        if k:
            per["shards/images"] = k * 8
            for l, n in meta["layers"]:
                per[f"shards/hist/{l}"] = k * n * bins * 8
                for part in ("gauss/{}/sum", "gauss/{}/sumsq", "layer_gauss/{}/sum"):
                    per["shards/" + part.format(l)] = k * n * 8
                if "layer-gauss" in meta["kinds"]:
                    per[f"shards/layer_gauss/{l}/outer"] = k * n * n * 8
        per["images/hashes"] = min(meta["num_images"], 1 << 36) * 16
        per["sketch/mean"] = neurons * 8
        per["sketch/quantiles"] = neurons * 64 * 2
    total = sum(per.values()) + 4 * _OTHER_ARRAY
    return Caps(total=total + total // 20, per_key={k: v + 4096 for k, v in per.items()}, default=_OTHER_ARRAY)


def count_problems(meta: dict, arrays: dict[str, np.ndarray]) -> list[str]:
    """Numbers out of range in a DNA's arrays: histogram counts above int64 max (a uint64 array
    would pass a negative check and wrap), Gaussian image counts outside [0, 2^53)."""
    problems = []
    for key, a in arrays.items():
        if key.startswith("hist/") and a.dtype.kind == "u" and a.size and int(a.max()) > MAX_COUNT:
            problems.append(f"{key} has counts above {MAX_COUNT} (int64 max)")
        if key.endswith("/count") and a.size and a.dtype.kind in "iu":
            c = int(a.reshape(-1)[0])
            if not 0 <= c <= MAX_IMAGES:
                problems.append(f"{key} is {c}, outside [0, 2^53)")
    return problems


def refuse_insane(meta: dict, arrays: dict[str, np.ndarray], where: str) -> None:
    """FormatError unless a DNA's metadata and numbers are sane (the import / pull boundary)."""
    bad = meta_problem(meta)
    problems = [bad] if bad else count_problems(meta, arrays)
    if problems:
        raise FormatError(f"{where}: {problems[0]}")


def dna_problems(meta: dict, arrays: dict[str, np.ndarray]) -> list[str]:
    """Problems of one DNA given as stored (meta, arrays); empty when consistent."""
    bad = meta_problem(meta)
    if bad:
        return [bad]
    numbers = count_problems(meta, arrays)
    if numbers:
        return numbers
    try:
        dna = dna_mod.from_arrays(meta, arrays)
    except VdnaError as e:
        return [str(e)]
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        return [f"malformed metadata ({type(e).__name__}: {e})"]
    problems = []
    try:
        n_images = int(meta["num_images"])
    except (TypeError, ValueError):
        return ["num_images is not an integer"]
    if n_images < 0:
        problems.append(f"num_images is negative ({n_images})")
    for layer, h in (dna.hist or {}).items():
        totals = h.sum(axis=1)
        if totals.size and (totals != totals[0]).any():
            problems.append(f"histogram of layer {layer!r}: neurons counted different numbers of activations")
        elif totals.size and n_images > 0 and totals[0] % n_images:
            problems.append(f"histogram of layer {layer!r}: {int(totals[0])} activations is not a multiple of "
                            f"{n_images} images")
        elif totals.size and n_images == 0 and totals[0]:
            problems.append(f"histogram of layer {layer!r} has counts but the DNA has no image")
    for layer, g in (dna.gauss or {}).items():
        if g.count != n_images:
            problems.append(f"Gaussian of layer {layer!r} counts {g.count} images, the DNA {n_images}")
        if g.count and (g.sum * g.sum > g.count * g.sumsq * (1 + 1e-9) + 1e-9).any():
            problems.append(f"Gaussian of layer {layer!r} has negative variances")
    for layer, g in (getattr(dna, "layer_gauss", None) or {}).items():
        if g.count != n_images:
            problems.append(f"layer Gaussian of layer {layer!r} counts {g.count} images, the DNA {n_images}")
        if not np.allclose(g.outer, g.outer.T, rtol=1e-9, atol=1e-9):
            problems.append(f"layer Gaussian of layer {layer!r}: sum of outer products is not symmetric")
    hashes = arrays.get("images/hashes")
    if hashes is not None:
        if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 16:
            problems.append(f"images/hashes must be uint8 [n, 16], not {hashes.dtype} {list(hashes.shape)}")
        else:
            if hashes.shape[0] > max(n_images, 0):
                problems.append(f"{hashes.shape[0]} image hashes for {n_images} images")
            if hashes.shape[0] > 1 and (np.unique(hashes, axis=0).shape[0] != hashes.shape[0]
                                        or not (np.unique(hashes, axis=0) == hashes).all()):
                problems.append("images/hashes are not sorted and unique")
            digest = meta.get("images_sha256")
            if digest is not None and digest != dna_mod.images_digest(hashes):
                problems.append("images_sha256 does not match images/hashes")
            if dna.thumbnails is not None:
                counted = {bytes(h) for h in hashes}
                if any(bytes(h) not in counted for h in dna.thumbnails.hashes):
                    problems.append("a thumbnail shows an image the DNA did not count")
    if dna.hist is not None and "sketch/mean" in arrays:
        problems += _sketch_problems(dna, arrays)
    if count_of(meta) and dna.shards is None:
        problems.append(f"the metadata records {count_of(meta)} shards but the entry stores none")
    return problems


def _sketch_problems(dna, arrays) -> list[str]:
    from vdnacli.sketch import sketch_dna_hist

    mean, quant = arrays.get("sketch/mean"), arrays.get("sketch/quantiles")
    try:
        want_mean, want_quant = sketch_dna_hist({l: dna.hist[l] for l in dna.layers})
    except ValueError:  # more bins than a sketch supports: a sketch should not exist
        return ["an entry with more than 65535 bins carries a sketch"]
    if quant is None or mean.shape != want_mean.shape or quant.shape != want_quant.shape:
        return ["sketch has the wrong shape for its histograms"]
    if not np.array_equal(quant, want_quant) or not np.allclose(mean, want_mean, rtol=1e-6, atol=1e-3):
        return ["sketch does not match the histograms (nearest search would prune wrongly); add or import it again"]
    return []


def check_entry(registry: Registry, name: str) -> list[str]:
    """Every problem of one stored DNA: sizes within its metadata's caps, storage (checksums),
    then DNA consistency; one read, one array at a time. Never raises for a broken entry."""
    try:
        return registry.verify(name, check=dna_problems, caps=entry_caps)
    except Exception as e:  # noqa: BLE001  a broken entry is reported, and the next one is checked
        return [f"cannot be checked ({type(e).__name__}: {str(e)[:200]})"]


def verify_catalog(catalog, repair: bool = False) -> VerifyReport:
    """Check every entry (and every stored mask); with `repair`, finish interrupted group
    commits and delete leftovers of killed writers (never files of a live writer)."""
    report = VerifyReport()
    registries = [("", catalog.registry)]
    masks_root = Path(catalog.registry.root) / "masks"
    if (masks_root / "registry.json").exists():
        registries.append(("mask:", Registry(masks_root, create=False)))
    for prefix, reg in registries:
        for name in reg.names():
            problems = check_entry(reg, name) if not prefix else _check_mask(reg, name)
            if problems and name not in reg:
                continue  # removed by another process while being checked: not damage
            report.entries += 1
            if problems:
                report.damaged[prefix + name] = problems
        if repair:
            report.removed += [str(p) for p in reg.repair()]
        report.leftovers += [str(p) for p in reg.leftovers()]
    if repair:
        report.leftovers = report.removed + report.leftovers
    return report


def _check_mask(reg: Registry, name: str) -> list[str]:
    try:
        return reg.verify(name, caps=entry_caps)
    except Exception as e:  # noqa: BLE001
        return [f"cannot be checked ({type(e).__name__}: {str(e)[:200]})"]
