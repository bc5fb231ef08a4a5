"""Commands that compute DNAs: add, merge, calibrate, demo."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vdnacli.cli.common import open_catalog, settings, split_csv
from vdnacli.cli.options import (BinningOpt, ColumnOpt, CropOpt, DecodeOpt, EveryOpt, FpsOpt, JsonOpt, OfflineOpt,
                                 QuietOpt, RecipeOpt, RegistryOpt, ResizeOpt, SplitOpt, UrlConcurrencyOpt, UrlRetriesOpt,
                                 UrlTimeoutOpt, WeightsOpt)
from vdnacli.errors import ConfigError
from vdnacli.cli.output import Output
from vdnacli.cli.progress import progress_bar
from vdnacli.text import plural


def add_cmd(
    name: Annotated[str, typer.Argument(help="Entry name in the registry.")],
    source: Annotated[str, typer.Argument(help="Folder, image, .txt list, .zip, tar shards (patterns: shard-{000..099}.tar, "
                                                "*.tar), table (.parquet/.csv/.jsonl), video, URL, "
                                                "hf://datasets/ORG/NAME\\[@REV]\\[/PATH], or - (paths/URLs on stdin); "
                                                "see docs/sources.md.")],
    extractor: Annotated[Optional[str], typer.Option("--extractor", "-e", help="Feature extractor (see 'vdna extractors').")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="Compute with exactly the settings of this entry (ours, "
                                                "imported or pulled): extractor, weights, ranges, bins, kinds, "
                                                "preprocessing, binning rule. Other flags override.", show_default=False)] = None,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", help="hist, gauss and/or layer-gauss, computed in one pass "
                                                      "(repeatable or comma-separated).")] = None,
    bins: Annotated[Optional[int], typer.Option("--bins", help="Histogram bins per neuron.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use a random subset of N images.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the --limit subset.")] = 0,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per forward pass.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decoding worker processes.")] = None,
    weights: WeightsOpt = None,
    offline: OfflineOpt = False,
    recipe: RecipeOpt = None,
    crop: CropOpt = None,
    crop_seed: Annotated[Optional[int], typer.Option("--crop-seed", help="Seed of --crop random (recorded).",
                                                     show_default=False)] = None,
    resize: ResizeOpt = None,
    binning: BinningOpt = None,
    decode: DecodeOpt = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="Forward pass precision: fp32 (default), bf16 or "
                                                     "fp16 (recorded).", show_default=False)] = None,
    ranges: Annotated[Optional[Path], typer.Option("--ranges", help="Activation ranges file ('vdna calibrate', or upstream's JSON).")] = None,
    shards: Annotated[Optional[int], typer.Option("--shards", help="Also keep the DNAs of K shards of the images "
                                                  "(by content hash), for 'compare --ci', 'drift' and 'plan'; 0 = "
                                                  "none. Default: 8, or the entry's with --like / --append.",
                                                  show_default=False)] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an entry of the same name.")] = False,
    append: Annotated[bool, typer.Option("--append", help="Add new images to an existing DNA (skips ones already counted).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first unreadable image instead of skipping it.")] = False,
    thumbnails: Annotated[int, typer.Option("--thumbnails", help="Keep N 96-px thumbnails, chosen by content hash "
                                            "(0 = none; private: 'push' leaves them out).")] = 16,
    column: ColumnOpt = None,
    split: SplitOpt = None,
    every: EveryOpt = None,
    fps: FpsOpt = None,
    url_timeout: UrlTimeoutOpt = 30.0,
    url_retries: UrlRetriesOpt = 2,
    url_concurrency: UrlConcurrencyOpt = 16,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Compute the DNA of an image source and store it under NAME.

    Example: vdna add cityscapes ./cityscapes --limit 2000 --seed 1 --kind hist,layer-gauss

    Comparable with a published DNA: vdna pull bramtoula/ffhq-mugs, then vdna add mine ./imgs --like ffhq

    Also: vdna add laion 'shards/shard-{000..099}.tar' · vdna add pets hf://datasets/ORG/NAME --split test
    With uncertainty: vdna add mine ./imgs --shards 8, then vdna compare mine ref --ci

    On several GPUs or processes: torchrun --nproc-per-node 4 -m vdnacli add NAME SOURCE
    """
    from vdnacli.extras import require_compute

    require_compute("vdna add")  # before the imports that need it
    from vdnacli.build import AddRequest, add, resolve_settings
    from vdnacli.settings import RECIPES
    from vdnacli.sources import SourceOptions

    source_options = SourceOptions(column=column, split=split, every=every, fps=fps, url_timeout=url_timeout,
                                   url_retries=url_retries, url_concurrency=url_concurrency)
    from vdnacli.shards import DEFAULT_SHARDS

    s = settings(registry=registry, extractor=extractor, device=device, batch_size=batch_size, workers=workers, bins=bins,
                 offline=offline or None)
    out = Output(json=json, quiet=quiet)
    cat = open_catalog(s.registry, create=True)
    if append and like:
        raise ConfigError("--append computes with the entry's own settings; --like does not apply")
    if recipe is not None and recipe not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe}'; choose from {', '.join(RECIPES)}")
    flags = dict(RECIPES.get(recipe, {}))
    if decode == "torch" and resize is None:  # the device decoder reproduces the uint8 PIL resize of upright images
        flags.update(resize="pil", decode_mode="upright")
        out.note("--decode torch resizes as --resize pil (EXIF-upright), recorded in the DNA")
    flags.update({k: v for k, v in dict(kinds=tuple(split_csv(kind) or ()) or None, weights=weights, ranges=ranges,
                                        crop=crop, crop_seed=crop_seed, resize=resize, binning=binning,
                                        decoder=decode, precision=precision).items() if v is not None})
    if like or append:  # the entry's settings; only flags given on the command line override them
        base_extractor, flags["bins"], flags["shards"] = extractor, bins, shards
    else:  # the extractor's defaults, after vdna.yaml / environment
        base_extractor, flags["bins"] = s.extractor, s.bins
        flags["shards"] = DEFAULT_SHARDS if shards is None else shards
    compute, like_ranges, notes = resolve_settings(cat, like=name if append else like, extractor=base_extractor,
                                                   **flags)
    for note in notes if not append else ():  # --append refuses different settings itself
        out.note(note)
    req = AddRequest(name=name, source=source, settings=compute, limit=limit, seed=seed, device=s.device,
                     batch_size=s.batch_size, workers=s.workers, replace=replace, append=append, strict=strict,
                     offline=s.offline, like_ranges=like_ranges, thumbnails=thumbnails,
                     source_options=source_options)
    from vdnacli import distributed

    writer = distributed.current().is_writer  # under torchrun only rank 0 reports
    with progress_bar(not quiet and not json and writer, f"DNA {name}") as update:
        dna, report = add(cat, req, progress=update)
    if not writer:
        return
    failed = [{"image": n, "reason": r} for n, r in report.failed]
    if json:
        out.emit_json({"name": name, "num_images": dna.num_images, "added_images": report.images,
                       "duplicates_skipped": report.duplicates, "failed": failed,
                       "seconds": round(report.seconds, 3), "images_per_second": round(report.images_per_second, 2)})
    else:
        out.print(f"added {name}: {plural(report.images, 'image')} ({dna.num_images} in DNA), {', '.join(dna.kinds)}, "
                  f"{dna.meta['extractor']}, {report.images_per_second:.1f} img/s")
    if report.failed:
        out.warn(f"skipped {plural(len(report.failed), 'unreadable image')}: "
                 + "; ".join(f"{n} ({r})" for n, r in report.failed[:5]) + (" …" if len(report.failed) > 5 else ""))
    if report.duplicates:
        out.note(f"skipped {plural(report.duplicates, 'image')} already counted")


def merge_cmd(
    new: Annotated[str, typer.Argument(help="Name of the merged entry.")],
    names: Annotated[list[str], typer.Argument(help="Entries to sum.")],
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an entry of the same name.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Sum DNAs into a new entry (exact: histograms and Gaussian sums add up).

    Example: vdna merge city-all city-train city-val
    """
    from vdnacli.build import merge_entries

    cat = open_catalog(registry)
    dna = merge_entries(cat, new, names, replace)
    out = Output(json=json)
    if dna.shards is None and dna.meta.get("shards") is None and any(
            cat.registry.meta(n).get("shards") for n in names if n != new):
        out.note(f"{new} keeps no shards: every part needs them, with shard counts that divide one another")
    if json:
        out.emit_json({"name": new, "num_images": dna.num_images, "parts": names})
    else:
        out.print(f"merged {', '.join(names)} into {new}: {plural(dna.num_images, 'image')}")


def calibrate_cmd(
    extractor: Annotated[str, typer.Argument(help="Extractor to calibrate.")],
    sources: Annotated[list[Path], typer.Argument(help="Image sources to track min/max over.")],
    out_path: Annotated[Path, typer.Option("--out", help="Ranges file to write (JSON).")],
    margin: Annotated[float, typer.Option("--margin", help="Widen each range by this fraction of its width.")] = 0.2,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers")] = None,
    weights: WeightsOpt = None,
    offline: OfflineOpt = False,
    crop: CropOpt = None,
    decode: DecodeOpt = None,
    quiet: QuietOpt = False,
    json: JsonOpt = False,
):
    """Measure per-neuron activation ranges over image sets (paper A.2).

    Example: vdna calibrate efficientnet-lite0 ./set1 ./set2 --out lite0-ranges.json
    (upstream's activation_ranges.json files: 'vdna ranges import').
    """
    from vdnacli.extras import require_compute

    require_compute("vdna calibrate")  # before the imports that need it
    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import Run, calibrate
    from vdnacli.settings import ComputeSettings
    from vdnacli.sources import list_images

    s = settings(device=device, workers=workers, offline=offline or None)
    compute = ComputeSettings.for_extractor(extractor, crop=crop, decoder=decode, weights=weights)
    srcs = [(p.name, list_images(p)) for p in sources]
    ext = load_extractor(compute.extractor, s.device, weights, offline=s.offline)
    with progress_bar(not quiet and not json, "calibrating") as update:
        ranges, report = calibrate(srcs, ext, compute, margin, Run(s.batch_size, s.workers, progress=update))
    ranges.save(out_path)
    out = Output(json=json, quiet=quiet)
    if json:
        out.emit_json({"extractor": extractor, "out": str(out_path), "images": report.images, "sha256": ranges.sha256()})
    else:
        out.print(f"wrote {out_path}: {plural(report.images, 'image')}, sha256 {ranges.sha256()[:12]}")


def demo_cmd(
    per_half: Annotated[int, typer.Option("--per-half", help="Images in each half of each sample source.")] = 50,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Build a small catalog from offline sample images (digits, faces, photos), then query it.

    Example: vdna demo --registry ./demo-registry
    """
    from vdnacli.extras import require_compute

    require_compute("vdna demo")  # before the imports that need it
    from vdnacli.demo import run_demo

    s = settings(registry=registry, device=device)
    cat = open_catalog(s.registry, create=True)
    out = Output(json=json, quiet=quiet)
    out.note(f"registry: {cat.root}")

    def on_entry(name, report):
        out.note(f"  added {name}: {plural(report.images, 'image')}, {report.images_per_second:.1f} img/s")

    with progress_bar(not quiet and not json, "demo") as update:
        res = run_demo(cat, per_half=per_half, device=s.device, workers=s.workers, on_entry=on_entry, progress=update)
    if json:
        out.emit_json({"registry": str(cat.root), "entries": res.entries, "twins_ok": res.twins_ok,
                       "nearest": {k: {"name": v[0], "distance": v[1]} for k, v in res.nearest.items()}})
        return
    from vdnacli.cli.query import render_comparison

    out.table("nearest entry of each demo DNA (each half should find its twin)", ["DNA", "nearest", "EMD", "twin?"],
              [[n, v[0], v[1], "yes" if v[0] == n[:-1] + ("b" if n.endswith("a") else "a") else "NO"]
               for n, v in res.nearest.items()], numeric={2})
    render_comparison(out, cat.compare("demo-faces-a", "demo-photos-a"), top=5)
    out.print("\nnext: vdna list · vdna nearest demo-digits-a --top 3 · vdna compare demo-faces-a demo-faces-b")
    if not res.twins_ok:
        raise typer.Exit(1)


def samples_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the sample image sets into.")],
    per_half: Annotated[int, typer.Option("--per-half", help="Images in each half of each source.", min=1)] = 50,
    json: JsonOpt = False,
):
    """Write real sample images that install offline (digits, LFW faces, photo crops) as PNG folders.

    Six folders: digits-a/b, faces-a/b, photos-a/b (disjoint halves of each source).
    Example: vdna samples ./samples && vdna add faces-a ./samples/faces-a
    """
    from vdnacli.extras import require_compute

    require_compute("vdna samples")  # before the imports that need it
    from vdnacli import samples

    paths = samples.write_demo_sets(out_dir, per_half)
    out = Output(json=json)
    counts = {n: len(list(p.glob("*.png"))) for n, p in paths.items()}
    if json:
        out.emit_json({n: {"path": str(p), "images": counts[n]} for n, p in paths.items()})
    else:
        out.table(f"sample images in {out_dir}", ["set", "images", "folder"],
                  [[n, counts[n], str(p)] for n, p in paths.items()], numeric={1})


ranges_app = typer.Typer(help="Activation ranges files: import upstream's, inspect.", no_args_is_help=True)


@ranges_app.command("import")
def ranges_import_cmd(
    path: Annotated[Path, typer.Argument(help="Upstream activation_ranges.json (or one of our ranges files).")],
    extractor: Annotated[str, typer.Option("--extractor", "-e", help="Extractor the ranges belong to.")],
    out_path: Annotated[Path, typer.Option("--out", help="Ranges file to write (our versioned JSON).")],
    json: JsonOpt = False,
):
    """Convert upstream vdna's activation_ranges.json into a versioned ranges file, checked against
    the extractor's layers. Upstream's margin rule (min and max x 1.2) is kept, so DNAs match upstream's.

    Example: vdna ranges import activation_ranges.json -e mugs-vit-b16 --out mugs-b16-ranges.json
    """
    from vdnacli.extractors.loaded import import_ranges

    r = import_ranges(path, extractor, out_path)
    out = Output(json=json)
    info = {"extractor": extractor, "out": str(out_path), "margin_rule": r.rule, "margin": r.margin,
            "layers": len(r.mins), "neurons": sum(r.layers().values()), "sha256": r.sha256()}
    if json:
        out.emit_json(info)
    else:
        out.print(f"wrote {out_path}: {info['layers']} layers, {info['neurons']} neurons, rule {r.rule}, "
                  f"sha256 {info['sha256'][:12]}")


@ranges_app.command("show")
def ranges_show_cmd(
    path: Annotated[Path, typer.Argument(help="A ranges file (ours or upstream's).")],
    json: JsonOpt = False,
):
    """Show a ranges file: extractor, margin rule, layers, images, and the sha256 DNAs record.

    Example: vdna ranges show lite0-ranges.json
    """
    from vdnacli.ranges import load_ranges

    r = load_ranges(path)
    out = Output(json=json)
    info = {"extractor": r.extractor, "margin_rule": r.rule, "margin": r.margin, "images": r.images,
            "sources": list(r.sources), "layers": r.layers(), "sha256": r.sha256()}
    if json:
        out.emit_json(info)
        return
    out.print(f"{path}: {r.extractor}, rule {r.rule} (margin {r.margin}), {r.images} images, sha256 {info['sha256']}")
    out.table("layers", ["layer", "neurons"], [[l, n] for l, n in info["layers"].items()], numeric={1})


def register(app: typer.Typer) -> None:
    app.add_typer(ranges_app, name="ranges")
    app.command("samples")(samples_cmd)
    app.command("add")(add_cmd)
    app.command("merge")(merge_cmd)
    app.command("calibrate")(calibrate_cmd)
    app.command("demo")(demo_cmd)
