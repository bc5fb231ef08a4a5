"""Compute a DNA from an image source and store it: the work behind `vdna add` and `merge`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry import EntryExistsError, validate_name
from vdnacli.catalog import Catalog
from vdnacli.dna import DNA, merge
from vdnacli import distributed
from vdnacli.decode_torch import check_decoder
from vdnacli.errors import ConfigError, SourceError
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
    crop: str | None = None  # "center" or "none"; None = the extractor's default (center)
    offline: bool = False  # download nothing (weights, Hub ranges)
    precision: str = "fp32"  # forward-pass autocast: fp32, bf16 or fp16 (recorded in the DNA)
    decoder: str | None = None  # "pil" or "torch" (JPEGs decoded on the device); None: pil, or the appended entry's


def add(catalog: Catalog, req: AddRequest, progress: Progress | None = None) -> tuple[DNA, ComputeReport]:
    validate_name(req.name)
    if req.append and req.replace:
        raise ConfigError("--append and --replace cannot be combined")
    if req.decoder is not None:
        check_decoder(req.decoder)
    existing = None
    stamp = False  # no check: a new entry (refused if it exists) or --replace
    if req.append:
        stamp = catalog.registry.stamp(req.name)  # before reading: a concurrent change makes the put fail
        existing = catalog.get(req.name)
        req.extractor = existing.meta["extractor"]
        req.kinds = tuple(existing.kinds)
        req.bins = existing.meta.get("bins") or req.bins
        req.crop = (existing.meta.get("preprocessing") or {}).get("crop") or req.crop
        req.decoder = _append_decoder(req.name, existing, req.decoder)
    elif not req.replace and req.name in catalog.registry:
        raise EntryExistsError(req.name)
    refs = list_images(req.source, req.limit, req.seed)  # validate the source before loading a network
    rank = distributed.current()  # under torchrun: this process's shard, summed across ranks below
    device = distributed.device_for(rank, req.device)
    ext = load_extractor(req.extractor, device, req.weights, offline=req.offline)
    if rank.active:
        distributed.init(ext.device.type)
        refs = distributed.shard(refs, rank)
    ranges = load_ranges(req.ranges) if req.ranges else None
    skip = None
    if existing is not None and existing.image_hashes is not None:
        skip = {bytes(h) for h in existing.image_hashes}
    dna, report = compute_dna(refs, ext, req.kinds, req.bins, ranges, req.batch_size, req.workers, req.strict,
                              skip=skip, progress=progress, name=req.name, crop=req.crop, precision=req.precision,
                              allow_empty=rank.active, decoder=req.decoder or "pil")
    if rank.active:
        dna = distributed.reduce_dna(dna, ext.device)
        report.images = distributed.reduce_int(report.images, ext.device)
        report.duplicates = distributed.reduce_int(report.duplicates, ext.device)
        if report.images == 0:
            raise SourceError("no valid image in the source (all ranks)")
    dna.meta["origin"] = {"kind": "images", "source_name": Path(req.source).name, "limit": req.limit,
                          "seed": req.seed if req.limit else None}
    if existing is not None:
        dna = merge([existing, dna], name=req.name)
        dna.meta["origin"] = existing.meta.get("origin")
    if rank.is_writer:
        catalog.put(req.name, dna, replace=req.replace or req.append, expect=stamp)
    return dna, report


def _append_decoder(name: str, existing: DNA, asked: str | None) -> str:
    """Images appended to a DNA go through the decoder its preprocessing records (a merged
    DNA keeps the first part's record, so a different decoder would go unrecorded)."""
    pre = existing.meta.get("preprocessing") or {}
    recorded = "torch" if str(pre.get("decoder", "pil")).startswith("torchvision") else "pil"
    if asked is not None and asked != recorded:
        raise ConfigError(f"'{name}' was computed with --decode {recorded}; append with "
                          f"--decode {recorded} (or recompute it with --replace)")
    return recorded


def merge_entries(catalog: Catalog, new: str, names: list[str], replace: bool = False) -> DNA:
    validate_name(new)
    if len(names) < 1:
        raise ConfigError("give at least one DNA to merge")
    if not replace and new in catalog.registry:
        raise EntryExistsError(new)
    stamp = catalog.registry.stamp(new) if replace and new in names else False  # merging into itself
    dna = merge([catalog.get(n) for n in names], name=new)
    dna.meta["origin"] = {"kind": "merge", "parts": list(names)}
    catalog.put(new, dna, replace=replace, expect=stamp)
    return dna
