"""The Python entry point: `vdnacli.compute(images, ...) -> DNA` for anything a notebook holds.

`images` is whatever `vdnacli.sources.open_source` takes (a folder, shards, a table, a URL,
hf://..., as a str or Path), a Source, or images in memory (vdnacli.sources.memory: a list
of PIL images / uint8 arrays / paths, a torch or `datasets` Dataset, a uint8 batch array,
or a one-shot iterable). The same images give the same DNA whichever way they arrive.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from vdnacli.dna import DNA
from vdnacli.sources import Source, SourceOptions, open_source


def source_of(images, options: SourceOptions | None = None) -> Source:
    """The Source for `images`: a path-like or a Source through open_source, anything else
    through vdnacli.sources.memory."""
    if isinstance(images, (str, os.PathLike, Source)):
        return open_source(images, options)
    from vdnacli.sources.memory import memory_source

    return memory_source(images)


def compute(
    images,
    extractor="efficientnet-lite0",
    *,
    settings=None,
    kinds=None,
    bins: int | None = None,
    ranges=None,
    weights: str | Path | None = None,
    crop: str | None = None,
    precision: str | None = None,
    decoder: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    workers: int = 0,
    strict: bool = False,
    limit: int | None = None,
    seed: int = 0,
    name: str | None = None,
    offline: bool = False,
    source_options: SourceOptions | None = None,
    report=None,
    progress=None,
) -> DNA:
    """The DNA of `images` (see the module's docstring).

    extractor: a name (see `vdna extractors`) or an Extractor already loaded with
    vdnacli.extractors.load_extractor (to reuse it across calls). settings: a
    vdnacli.settings.ComputeSettings; else the extractor's defaults with kinds, bins, weights,
    ranges (a file, or ActivationRanges), crop, precision, decoder overriding them (None: the
    default). workers: decode processes (0: in this process; a one-shot iterable is always read
    here). limit/seed: a seeded random subset. report: a vdnacli.pipeline.ComputeReport to fill
    (images, failed, duplicates, seconds); without one, skipped images are reported as a
    warning. strict: raise on the first unusable image instead.
    """
    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import ComputeReport, Run, announce, check_weights, compute_dna
    from vdnacli.ranges import ActivationRanges
    from vdnacli.settings import ComputeSettings

    source = source_of(images, source_options or SourceOptions(offline=offline)).select(limit, seed)
    given_ranges = ranges if isinstance(ranges, ActivationRanges) else None
    if settings is None:
        settings = ComputeSettings.for_extractor(
            extractor if isinstance(extractor, str) else extractor.spec.name,
            kinds=tuple(kinds) if kinds is not None else None, bins=bins, crop=crop, precision=precision,
            decoder=decoder, weights=Path(weights) if weights is not None else None,
            ranges=Path(ranges) if ranges is not None and given_ranges is None else None)
    if isinstance(extractor, str):
        announce(progress, f"loading {settings.extractor}…")
    ext = load_extractor(settings.extractor, device, settings.weights, offline=offline) \
        if isinstance(extractor, str) else extractor
    check_weights(settings, ext)
    run = Run(batch_size=batch_size, workers=workers, strict=strict, progress=progress)
    dna, rep = compute_dna(source, ext, settings, run, ranges=given_ranges, name=name)
    dna.meta["origin"] = {**source.origin, "limit": limit, "seed": seed if limit else None}
    if report is not None:
        if not isinstance(report, ComputeReport):
            raise TypeError("report must be a vdnacli.pipeline.ComputeReport")
        report.__dict__.update(rep.__dict__)
    elif rep.failed:
        shown = "; ".join(f"{n} ({r})" for n, r in rep.failed[:5]) + (" …" if len(rep.failed) > 5 else "")
        warnings.warn(f"skipped {len(rep.failed)} unusable image(s): {shown}", stacklevel=2)
    return dna
