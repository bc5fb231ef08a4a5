"""Shared Annotated options so every command spells them the same way."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RegistryOpt = Annotated[
    Optional[Path],
    typer.Option("--registry", help="Registry directory (else $VDNA_REGISTRY, ./vdna.yaml, user config, per-user "
                 "default; see 'vdna config').",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]
LayerOpt = Annotated[
    Optional[list[str]], typer.Option("--layer", help="Only this layer (repeatable).", show_default=False)
]
NeuronOpt = Annotated[
    Optional[list[str]],
    typer.Option("--neuron", help="Only these neurons, as LAYER:INDICES, e.g. head:0,5,10-19 (repeatable).",
                 show_default=False),
]
MetricOpt = Annotated[str, typer.Option("--metric", help="emd (histograms), nfd (neuron-wise Fréchet, Gaussians) "
                                                       "or fd (Fréchet per layer, layer Gaussians).")]
MaskOpt = Annotated[
    Optional[str], typer.Option("--mask", help="Focus mask: compare only its neurons (see 'vdna mask').", show_default=False)
]
IgnoreOpt = Annotated[
    Optional[str],
    typer.Option("--ignore", help="Learned ignore-mask: weighted EMD_W that ignores its attribute.", show_default=False),
]
PlotOpt = Annotated[Optional[Path], typer.Option("--plot", help="Also write a PNG figure here (needs vdnacli[plot]).", show_default=False)]
SheetOpt = Annotated[
    Optional[Path], typer.Option("--sheet", help="Also write a PNG contact sheet of best/middle/worst images.", show_default=False)
]
WeightsOpt = Annotated[
    Optional[Path], typer.Option("--weights", help="Local weight file instead of the default (its sha256 is recorded).",
                                 show_default=False)
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Download nothing: use only cached/installed weights and cached Hub datasets "
                                         "(also HF_HUB_OFFLINE=1).")
]
CropOpt = Annotated[
    Optional[str], typer.Option("--crop", help="center (square centre crop), none (squash; vdna 0.1.1's default) or "
                                "random (seeded per image, recorded). Default: the extractor's.", show_default=False)
]
ResizeOpt = Annotated[
    Optional[str], typer.Option("--resize", help="pil (uint8, antialiased), clean (float bicubic, as vdna 0.1.1 and "
                                "clean-fid) or legacy_pytorch (torch bilinear). Default: the extractor's.",
                                show_default=False)
]
BinningOpt = Annotated[
    Optional[str], typer.Option("--binning", help="float32 (ours) or vdna-0.1.1 (the paper's code, bit for bit). "
                                "Default: the extractor's.", show_default=False)
]
RecipeOpt = Annotated[
    Optional[str], typer.Option("--recipe", help="vdna-0.1.1 (the paper's code: plain decode, no crop, clean resize, "
                                "its binning; the paper's extractors' default) or vdnacli (EXIF-upright, centre crop, "
                                "pil resize, float32 binning). Single flags override.", show_default=False)
]
DecodeOpt = Annotated[
    Optional[str],
    typer.Option("--decode", help="pil (decode + resize in worker processes; default) or torch (JPEGs decoded and "
                 "resized in batches on the device: nvjpeg on a GPU; recorded).", show_default=False),
]
# -- where the images come from (vdnacli.sources.SourceOptions) --------------------------------
ColumnOpt = Annotated[Optional[str], typer.Option(
    "--column", help="Table / Hub dataset column of images, bytes, paths or URLs (default: the first image column).",
    show_default=False)]
SplitOpt = Annotated[Optional[str], typer.Option(
    "--split", help="Hub dataset split (default: train, when the dataset has one).", show_default=False)]
EveryOpt = Annotated[Optional[int], typer.Option(
    "--every", help="Video: every N-th frame (default: every frame).", show_default=False)]
FpsOpt = Annotated[Optional[float], typer.Option(
    "--fps", help="Video: F frames per second of video.", show_default=False)]
UrlTimeoutOpt = Annotated[float, typer.Option("--url-timeout", help="URLs: seconds without progress before a try fails.")]
UrlRetriesOpt = Annotated[int, typer.Option("--url-retries", help="URLs: retries after a failed try (timeouts, 5xx).")]
UrlConcurrencyOpt = Annotated[int, typer.Option("--url-concurrency", help="URLs: downloads at once, all workers together.")]
CIOpt = Annotated[bool, typer.Option("--ci", help="With uncertainty, from the entries' shards (vdna add --shards): "
                                     "95 % interval, noise floor, same-distribution p-value.")]
PermutationsOpt = Annotated[int, typer.Option("--permutations", min=0, help="Shard permutations of the same-distribution "
                                              "test (all splits when fewer exist; 0 = no test).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random permutations, half splits and --limit "
                                     "subsets.")]
# -- one-off comparisons: how a source given instead of an entry is computed (vdnacli.oneoff) --
LikeOpt = Annotated[Optional[str], typer.Option(
    "--like", help="Compute images given instead of an entry with this entry's settings (default: in compare, the "
    "other side's when it is an entry; else the extractor's defaults).", show_default=False)]
ExtractorOpt = Annotated[Optional[str], typer.Option(
    "--extractor", "-e", help="Feature extractor for images given instead of an entry (see 'vdna extractors'; "
    "default: the configured one, else efficientnet-lite0).", show_default=False)]
SaveOpt = Annotated[Optional[list[str]], typer.Option(
    "--save", help="Also register the computed side(s) under these names, in order (e.g. --save A,B); "
    "without it nothing is registered.", show_default=False)]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use a random subset of N images of a source.",
                                                 min=1, show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.", show_default=False)]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Decoding worker processes.", min=0,
                                                   show_default=False)]
