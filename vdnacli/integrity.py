"""Integrity of stored DNAs: what `vdna verify` checks in each entry, and `--repair`.

Storage level (registry): every array against its sha256 (values, dtype, shape), no array
without a checksum and no checksum without its array, plain numeric datasets only.
DNA level (here): the shapes the metadata promises, no negative counts, no NaN or
infinite Gaussian sums, and the invariants every real DNA satisfies:
  * hist: within a layer every neuron counted the same number of activations (one per
    spatial position per image), a multiple of the image count;
  * gauss: its image count equals the DNA's, and sum² <= count * sumsq (variance >= 0);
  * layer-gauss: its image count equals the DNA's, its sum of outer products is symmetric;
  * images/hashes: at most one per image, sorted and unique, matching images_sha256;
  * sketch (nearest search): equal to the sketch recomputed from the histograms, else
    the search could prune a true neighbour;
  * shards: recorded in the metadata exactly when stored, and adding up to the DNA (checked
    on load by vdnacli.shards.from_arrays).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from registry import Registry
from vdnacli import dna as dna_mod
from vdnacli.errors import VdnaError
from vdnacli.shards import count_of


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
    if type(meta.get("num_images")) is not int or meta["num_images"] < 0:
        return "metadata 'num_images' must be a non-negative integer"
    bins = meta.get("bins")
    if bins is not None and (type(bins) is not int or not 0 <= bins <= 1_000_000):
        return "metadata 'bins' must be an integer"
    return None


def dna_problems(meta: dict, arrays: dict[str, np.ndarray]) -> list[str]:
    """Problems of one DNA given as stored (meta, arrays); empty when consistent."""
    bad = meta_problem(meta)
    if bad:
        return [bad]
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
    """Every problem of one stored DNA: storage (checksums), then DNA consistency; one read."""
    return registry.verify(name, check=dna_problems)


def verify_catalog(catalog, repair: bool = False) -> VerifyReport:
    """Check every entry (and every stored mask); with `repair`, finish interrupted group
    commits and delete leftovers of killed writers (never files of a live writer)."""
    report = VerifyReport()
    registries = [("", catalog.registry)]
    masks_root = Path(catalog.registry.root) / "masks"
    if (masks_root / "registry.json").exists():
        registries.append(("mask:", Registry(masks_root)))
    for prefix, reg in registries:
        for name in reg.names():
            problems = check_entry(reg, name) if not prefix else reg.verify(name)
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
