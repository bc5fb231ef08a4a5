"""Compute a DNA from an image source and store it: the work behind `vdna add` and `merge`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from registry import EntryExistsError, validate_name
from vdnacli import distributed
from vdnacli.catalog import Catalog
from vdnacli.dna import DNA, merge
from vdnacli.errors import ConfigError, SourceError
from vdnacli.ranges import ActivationRanges
from vdnacli.settings import ComputeSettings
from vdnacli.sources import Source, SourceOptions, open_source
from vdnacli.thumbnails import DEFAULT_COUNT, check_count, collect as collect_thumbnails

if TYPE_CHECKING:  # the pipeline needs the compute extra (torch, pillow): imported by add(), not by merge
    from vdnacli.pipeline import ComputeReport, Progress


@dataclass
class AddRequest:
    """One `vdna add`: what to compute (`settings`), from where, and how to run it."""

    name: str
    source: str | Path  # anything vdnacli.sources.open_source takes: folder, shards, table, URL, hf://, '-'
    settings: ComputeSettings | None = None  # None: the extractor's defaults (see resolve_settings)
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    workers: int = 2
    replace: bool = False
    append: bool = False
    strict: bool = False
    offline: bool = False  # download nothing (weights, Hub ranges)
    like_ranges: ActivationRanges | None = None  # the ranges kept in the --like entry, if any
    thumbnails: int = DEFAULT_COUNT  # images kept as 96-px thumbnails, chosen by content hash; 0 = none
    source_options: SourceOptions = SourceOptions()  # --column, --split, --every/--fps, --url-*


def resolve_settings(catalog: Catalog, like: str | None = None, extractor: str | None = None,
                     **overrides) -> tuple[ComputeSettings, ActivationRanges | None, list[str]]:
    """Settings for a new computation: `like`'s recorded settings (and the ranges it keeps), or
    `extractor`'s defaults; then every explicit override (None = not given). Returns the
    settings, the ranges to bin with (None: resolve from the settings) and notes for the user
    (what was overridden, what cannot be verified)."""
    notes: list[str] = []
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if like is None:
        return ComputeSettings.for_extractor(extractor or "efficientnet-lite0", **overrides), None, notes
    base, ranges = catalog.settings(like)
    if extractor is not None and extractor != base.extractor:  # another network: the entry's digests do not apply
        overrides["extractor"] = extractor
        base = dataclasses.replace(base, weights_sha256=None, ranges_sha256=None)
        ranges = None
    changed = sorted(k for k, v in overrides.items()  # shards change what is kept, not the DNA's numbers
                     if k not in ("weights", "ranges", "shards") and getattr(base, k) != v)
    if changed:
        notes.append(f"overriding {', '.join(changed)} of '{like}' (the DNAs may not be comparable)")
    if "ranges" in overrides:
        ranges = None  # the file given replaces the kept ranges; its sha256 is still checked
    settings = base.replace(**overrides)
    if settings.weights_sha256 is None and "extractor" not in overrides:
        notes.append(f"'{like}' does not record its weights' sha256 (imported?): using {settings.extractor}'s "
                     "default weights, unverified")
    return settings, ranges, notes


def add(catalog: Catalog, req: AddRequest, progress: Progress | None = None) -> tuple[DNA, ComputeReport]:
    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import Run, announce, check_weights, compute_dna

    validate_name(req.name)
    check_count(req.thumbnails)
    if req.append and req.replace:
        raise ConfigError("--append and --replace cannot be combined")
    settings = req.settings or ComputeSettings.for_extractor("efficientnet-lite0")
    existing = None
    stamp = False  # no check: a new entry (refused if it exists) or --replace
    given_ranges = req.like_ranges
    if req.append:
        stamp = catalog.registry.stamp(req.name)  # before reading: a concurrent change makes the put fail
        existing = catalog.get(req.name, shards=True)
        settings, given_ranges = _append_settings(req.name, existing, req.settings)
    elif not req.replace and req.name in catalog.registry:
        raise EntryExistsError(req.name, append=True)
    options = dataclasses.replace(req.source_options, offline=True) if req.offline else req.source_options
    source = whole = open_source(req.source, options).select(req.limit, req.seed)  # checked before loading a network
    rank = distributed.current()  # under torchrun: this process's shard, summed across ranks below
    device = distributed.device_for(rank, req.device)
    announce(progress, f"loading {settings.extractor}…")
    ext = load_extractor(settings.extractor, device, settings.weights, offline=req.offline)
    check_weights(settings, ext)
    if rank.active:
        distributed.init(ext.device.type)
        source = distributed.shard(source, rank)
    skip = None
    if existing is not None and existing.image_hashes is not None:
        skip = {bytes(h) for h in existing.image_hashes}
    run = Run(batch_size=req.batch_size, workers=req.workers, strict=req.strict, skip=skip, progress=progress,
              allow_empty=rank.active)
    dna, report = compute_dna(source, ext, settings, run, ranges=given_ranges, name=req.name)
    if rank.active:
        dna = distributed.reduce_dna(dna, ext.device)
        report.images = distributed.reduce_int(report.images, ext.device)
        report.duplicates = distributed.reduce_int(report.duplicates, ext.device)
        if report.images == 0:
            raise SourceError("no valid image in the source (all ranks)")
    if rank.is_writer:  # thumbnails of counted images (under torchrun, from the whole source, not one shard)
        dna.thumbnails = thumbnails_of(whole, dna.image_hashes, req.thumbnails)
    dna.meta["origin"] = {**source.origin, "limit": req.limit, "seed": req.seed if req.limit else None}
    if settings.like:
        dna.meta["origin"]["like"] = settings.like
    if existing is not None:
        dna = merge([existing, dna], name=req.name)
        dna.meta["origin"] = existing.meta.get("origin")
    if rank.is_writer:
        catalog.put(req.name, dna, replace=req.replace or req.append, expect=stamp)
    return dna, report


@dataclass(frozen=True)
class _Held:
    """An image's bytes already read (a stream cannot be read again at one position)."""

    data: bytes

    def read_bytes(self) -> bytes:
        return self.data


def thumbnails_of(source: Source, image_hashes, n: int):
    """Thumbnails of the counted images with the smallest content hashes. A streamed source
    (tar shards, parquet bytes, videos) is read once more up to the last of those images
    (no decoding; hashing only); its images whose digest is not the sha256 of their bytes
    (video frames) get none."""
    if n == 0 or image_hashes is None or len(image_hashes) == 0:
        return None
    if not source.streamed:
        return collect_thumbnails(source.refs, image_hashes, n)
    import hashlib

    rows = np.ascontiguousarray(image_hashes, dtype=np.uint8).reshape(-1, 16)
    order = np.argsort(rows.view("S16").ravel(), kind="stable")  # (S16 values drop trailing zero bytes: rows)
    wanted = {rows[i].tobytes() for i in order[: 2 * n]}  # the candidates collect() will look for
    found: dict[bytes, _Held] = {}
    for item in source.iter_items():
        if item.data is None or item.digest is not None:
            continue
        digest = hashlib.sha256(item.data).digest()[:16]
        if digest in wanted and digest not in found:
            found[digest] = _Held(item.data)
            if len(found) == len(wanted):
                break
    return collect_thumbnails(list(found.values()), image_hashes, n, digests=list(found))


def _append_settings(name: str, existing: DNA, asked: ComputeSettings | None):
    """Images appended to a DNA are computed with the settings it records; asking for others
    is an error (a merged DNA keeps one record, so a difference would go unrecorded)."""
    recorded = ComputeSettings.from_meta(existing.meta, like=name)
    if asked is not None:
        differ = [f for f in ("extractor", "kinds", "bins", "decode_mode", "crop", "crop_seed", "resize", "binning",
                              "precision", "decoder", "shards") if getattr(asked, f) != getattr(recorded, f)]
        if differ:
            raise ConfigError(f"'{name}' was computed with other settings ({', '.join(differ)}: "
                              + ", ".join(f"{f}={getattr(recorded, f)}" for f in differ[:3])
                              + "); append with the same ones (or recompute it with --replace)")
        recorded = recorded.replace(weights=asked.weights, ranges=asked.ranges)
    return recorded, existing.ranges


def merge_entries(catalog: Catalog, new: str, names: list[str], replace: bool = False) -> DNA:
    validate_name(new)
    if len(names) < 1:
        raise ConfigError("give at least one DNA to merge")
    if not replace and new in catalog.registry:
        raise EntryExistsError(new)
    stamp = catalog.registry.stamp(new) if replace and new in names else False  # merging into itself
    dna = merge([catalog.get(n, shards=True) for n in names], name=new)
    dna.meta["origin"] = {"kind": "merge", "parts": list(names)}
    catalog.put(new, dna, replace=replace, expect=stamp)
    return dna
