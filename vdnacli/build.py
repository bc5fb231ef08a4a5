"""Compute a DNA from an image source and store it: the work behind `vdna add` and `merge`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry import EntryExistsError, validate_name
from vdnacli.catalog import Catalog
from vdnacli.dna import DNA, merge
from vdnacli.errors import ConfigError
from vdnacli.extractors import load_extractor
from vdnacli.pipeline import ComputeReport, Progress, compute_dna
from vdnacli.ranges import load_ranges
from vdnacli.sources import list_images


@dataclass
class AddRequest:
    name: str
    source: Path
    extractor: str = "efficientnet-lite0"
    kinds: tuple[str, ...] = ("hist",)
    bins: int = 1000
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    workers: int = 2
    replace: bool = False
    append: bool = False
    strict: bool = False
    weights: Path | None = None
    ranges: Path | None = None


def add(catalog: Catalog, req: AddRequest, progress: Progress | None = None) -> tuple[DNA, ComputeReport]:
    validate_name(req.name)
    if req.append and req.replace:
        raise ConfigError("--append and --replace cannot be combined")
    existing = None
    if req.append:
        existing = catalog.get(req.name)
        req.extractor = existing.meta["extractor"]
        req.kinds = tuple(existing.kinds)
        req.bins = existing.meta.get("bins") or req.bins
    elif not req.replace and req.name in catalog.registry:
        raise EntryExistsError(req.name)
    refs = list_images(req.source, req.limit, req.seed)  # validate the source before loading a network
    ext = load_extractor(req.extractor, req.device, req.weights)
    ranges = load_ranges(req.ranges) if req.ranges else None
    skip = None
    if existing is not None and existing.image_hashes is not None:
        skip = {bytes(h) for h in existing.image_hashes}
    dna, report = compute_dna(refs, ext, req.kinds, req.bins, ranges, req.batch_size, req.workers, req.strict,
                              skip=skip, progress=progress, name=req.name)
    dna.meta["origin"] = {"kind": "images", "source_name": Path(req.source).name, "limit": req.limit,
                          "seed": req.seed if req.limit else None}
    if existing is not None:
        dna = merge([existing, dna], name=req.name)
        dna.meta["origin"] = existing.meta.get("origin")
    catalog.put(req.name, dna, replace=req.replace or req.append)
    return dna, report


def merge_entries(catalog: Catalog, new: str, names: list[str], replace: bool = False) -> DNA:
    validate_name(new)
    if len(names) < 1:
        raise ConfigError("give at least one DNA to merge")
    if not replace and new in catalog.registry:
        raise EntryExistsError(new)
    dna = merge([catalog.get(n) for n in names], name=new)
    dna.meta["origin"] = {"kind": "merge", "parts": list(names)}
    catalog.put(new, dna, replace=replace)
    return dna
