"""Commands that answer questions: compare, nearest, matrix, rank-transfer."""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vdnacli.cli.common import open_catalog, resolve_focus, split_csv
from vdnacli.cli.options import (CIOpt, DeviceOpt, ExtractorOpt, IgnoreOpt, JsonOpt, LayerOpt, LikeOpt, LimitOpt,
                                 MaskOpt, MetricOpt, NeuronOpt, OfflineOpt, PermutationsOpt, PlotOpt, QuietOpt,
                                 RegistryOpt, SaveOpt, SeedOpt, SheetOpt, WorkersOpt)
from vdnacli.cli.output import Output, bar, fmt_sig
from vdnacli.cli.progress import progress_bar
from vdnacli.text import plural
from vdnacli.cli.uncertainty import NO_INTERVAL, render_ci


def render_comparison(out: Output, c, top: int) -> None:
    out.print(f"{c.metric} distance between {c.a} and {c.b}: {fmt_sig(c.distance)}"
              + {"emd": " (bin units, mean over neurons)", "fd": " (Fréchet per layer, mean over layers)"}.get(
                  c.metric, " (mean over neurons)"))
    vmax = max(c.per_layer.values(), default=0.0)
    out.table("per layer", ["layer", "neurons", c.metric, ""],
              [[l, len(c.per_neuron[l]), v, bar(v, vmax)] for l, v in c.per_layer.items()], numeric={1, 2})
    if top > 0:
        out.table(f"top {top} neurons driving the distance", ["layer", "neuron", c.metric],
                  [list(r) for r in c.top_neurons(top)], numeric={1, 2})


OperandHelp = ("A registry entry, or images: folder, image, .txt list, .zip, tar shards, table, URL, hf://..., "
               "or - (stdin). A name the registry holds is the entry (write ./NAME for a path of that name).")


def compare_cmd(
    a: Annotated[str, typer.Argument(help=OperandHelp, show_default=False)],
    b: Annotated[str, typer.Argument(help="The other side, read as A is.", show_default=False)],
    metric: MetricOpt = "emd",
    layer: LayerOpt = None,
    neuron: NeuronOpt = None,
    top: Annotated[int, typer.Option("--top", help="Show the N neurons that drive the distance.")] = 10,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    plot: PlotOpt = None,
    ci: CIOpt = False,
    permutations: PermutationsOpt = 999,
    seed: SeedOpt = 0,
    like: LikeOpt = None,
    extractor: ExtractorOpt = None,
    save: SaveOpt = None,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    offline: OfflineOpt = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Distance between two DNAs, with per-layer breakdown and the neurons that drive it.

    A side may be images instead of an entry: its DNA is computed for this comparison and not
    registered (--save NAME keeps it), with --like's settings, else the other side's (an entry),
    else the extractor's defaults, exactly as 'vdna add' would.

    With --ci (both DNAs made with --shards): a 95 % interval for the population distance,
    the noise floor of these sample sizes and a same-distribution p-value, overall and per layer.

    Example: vdna compare cityscapes bdd100k --layer head --ci
    Also: vdna compare ./real ./generated · vdna compare ./batch cityscapes --save batch-1
    """
    from vdnacli import oneoff
    from vdnacli.cli import oneoff as cli_oneoff
    from vdnacli.cli.common import settings
    from vdnacli.distances import METRICS, parse_neuron_specs

    s = settings(registry=registry, offline=offline or None)
    out = Output(json=json, quiet=quiet)
    cat = open_catalog(s.registry, create=True)
    req = cli_oneoff.request(s, like=like, extractor=extractor, save=save, limit=limit, seed=seed, device=device,
                             workers=workers, kinds=[METRICS.get(metric, "hist")])
    if mask or ignore:  # a wrong mask name fails before anything is computed
        cat.get_mask(mask or ignore)
    sides, computed, notes = oneoff.resolve_pair(cat, [a, b], req,
                                                 cli_oneoff.progress_for(not quiet and not json))
    for n in notes:
        out.note(n)
    cli_oneoff.report_computed(out, computed)
    meta = sides[0].meta if not isinstance(sides[0], str) else cat.registry.meta(sides[0])
    lay, neu, w = resolve_focus(cat, mask, ignore, split_csv(layer), parse_neuron_specs(neuron), meta)
    r = note = None
    if ci:
        c, r, note = cat.compare_ci(sides[0], sides[1], metric, lay, neu, w, permutations, seed)
    else:
        c = cat.compare(sides[0], sides[1], metric, lay, neu, w)
    c.a, c.b = a, b
    if note:
        out.warn(f"no interval: {note}")
    for warning in c.warnings:
        out.warn(warning)
    if plot:
        from vdnacli.distances import METRICS
        from vdnacli.plots import compare_figure

        kind = METRICS.get(metric, "hist")
        ranges = None  # bins -> activations on the panels' top axes
        if kind == "hist":
            ranges = cat.settings(sides[0])[1] if isinstance(sides[0], str) else sides[0].ranges
        compare_figure(c, cat.load(sides[0], [kind]), cat.load(sides[1], [kind]), plot, ranges=ranges)
        out.note(f"wrote {plot}")
    if json:
        data = {"a": a, "b": b, "metric": c.metric, "distance": c.distance, "per_layer": c.per_layer,
                "top_neurons": [{"layer": l, "neuron": i, "distance": d} for l, i, d in c.top_neurons(top)]}
        if computed:
            data["computed"] = cli_oneoff.computed_json(
                computed, [side for side, x in zip("ab", sides) if not isinstance(x, str)])
        if ci:
            data.update(r.as_dict() if r is not None else dict(NO_INTERVAL, note=note))
        out.emit_json(data)
        return
    if r is not None:
        out.print(f"{c.metric} distance between {c.a} and {c.b}: {fmt_sig(c.distance)}"
                  + {"emd": " (bin units, mean over neurons)", "fd": " (Fréchet per layer, mean over layers)"}.get(
                      c.metric, " (mean over neurons)"))
        render_ci(out, r, top)
        return
    render_comparison(out, c, top)


def nearest_cmd(
    name: Annotated[str, typer.Argument(help=OperandHelp, show_default=False)],
    top: Annotated[int, typer.Option("--top", "-k", help="How many entries to return.", min=1)] = 5,
    metric: MetricOpt = "emd",
    layer: LayerOpt = None,
    neuron: NeuronOpt = None,
    exact: Annotated[bool, typer.Option("--exact", help="Brute force: compare with every entry (same answer, slower).")] = False,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    ci: CIOpt = False,
    like: LikeOpt = None,
    extractor: ExtractorOpt = None,
    save: SaveOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    offline: OfflineOpt = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """The entries closest to NAME, ascending by distance.

    EMD queries prune with per-entry sketches, then re-rank with the exact EMD: the
    result is exactly the brute-force top K. With --ci (entries made with --shards): each
    row's 95 % interval, and whether its distance is distinguishable from the next row's.

    NAME may be images instead of an entry: their DNA is computed with --like's settings (else
    the extractor's defaults), not registered (--save NAME keeps it), and compared with the
    entries made the same way; the others are skipped.

    Example: vdna nearest mydata --top 5 --ci · vdna nearest ./new-images --like cityscapes
    """
    from vdnacli import oneoff
    from vdnacli.cli import oneoff as cli_oneoff
    from vdnacli.cli.common import settings
    from vdnacli.distances import METRICS, parse_neuron_specs

    s = settings(registry=registry, offline=offline or None)
    out = Output(json=json, quiet=quiet)
    cat = open_catalog(s.registry)
    req = cli_oneoff.request(s, like=like, extractor=extractor, save=save, limit=limit, seed=seed, device=device,
                             workers=workers, kinds=[METRICS.get(metric, "hist")])
    if mask or ignore:  # a wrong mask name fails before anything is computed
        cat.get_mask(mask or ignore)
    query, computed, notes = oneoff.resolve_one(cat, name, req,
                                                cli_oneoff.progress_for(not quiet and not json))
    for n in notes:
        out.note(n)
    cli_oneoff.report_computed(out, [computed] if computed else [])
    meta = cat.registry.meta(query) if isinstance(query, str) else query.meta
    lay, neu, w = resolve_focus(cat, mask, ignore, split_csv(layer), parse_neuron_specs(neuron), meta)
    ranked, skipped = oneoff.nearest(cat, query, top, metric, lay, neu, exact=exact, weights=w,
                                     saved=computed.saved if computed else None)
    if skipped:
        out.note(f"skipped {plural(len(skipped), 'entry')} not comparable with {name} "
                 f"(other extractor, settings or kind): {', '.join(skipped[:5])}")
    if ci:
        _render_ranked_ci(out, name, metric, cat.rank_ci(query, ranked, metric, lay, neu, w), json)
        return
    if json:
        out.emit_json([{"name": n, "distance": d} for n, d in ranked])
        return
    vmax = max((d for _, d in ranked), default=0.0)
    out.table(f"nearest to {name} ({metric})", ["#", "name", "distance", ""],
              [[i + 1, n, d, bar(d, vmax)] for i, (n, d) in enumerate(ranked)], numeric={0, 2})


def _render_ranked_ci(out: Output, name: str, metric: str, rows, json: bool) -> None:
    def verdict(r):
        return {True: "yes", False: "no", None: "—"}[r.distinct_from_next]

    if json:
        out.emit_json([{"name": r.name, "distance": r.distance,
                        "ci": [r.interval.lo, r.interval.hi] if r.interval else None,
                        "noise_floor": r.interval.noise_floor if r.interval else None,
                        "distinct_from_next": r.distinct_from_next, **({"note": r.note} if r.note else {})}
                       for r in rows])
        return
    for r in rows:
        if r.note:
            out.warn(f"{r.name}: no interval ({r.note})")
    out.table(f"nearest to {name} ({metric}), with 95 % intervals", ["#", "name", "distance", "95 % interval",
                                                                     "noise floor", "distinct from next"],
              [[i + 1, r.name, r.distance,
                f"[{r.interval.lo:.4f}, {r.interval.hi:.4f}]" if r.interval else "—",
                r.interval.noise_floor if r.interval else None, verdict(r)] for i, r in enumerate(rows)],
              numeric={0, 2, 4})


def matrix_cmd(
    names: Annotated[Optional[list[str]], typer.Argument(help="Entries (default: all).")] = None,
    metric: MetricOpt = "emd",
    layer: LayerOpt = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    plot: PlotOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Pairwise distance matrix between entries.

    Example: vdna matrix demo-digits-a demo-faces-a demo-photos-a --csv
    """
    from vdnacli.errors import ConfigError

    cat = open_catalog(registry)
    names = names or cat.names()
    if not names:
        raise ConfigError("the registry is empty: nothing to compare")
    lay, neu, w = resolve_focus(cat, mask, ignore, split_csv(layer), None, cat.registry.meta(names[0]))
    with progress_bar(not quiet and not json and not as_csv, f"{metric} matrix", unit="pairs") as update:
        m = cat.matrix(names, metric, lay, neu, w, progress=update)
    out = Output(json=json, quiet=quiet)
    if plot:
        from vdnacli.plots import matrix_figure

        matrix_figure(names, m, metric, plot)
        out.note(f"wrote {plot}")
    if json:
        out.emit_json({"names": names, "metric": metric, "matrix": m.tolist()})
    elif as_csv:
        w = csv.writer(sys.stdout)
        w.writerow([""] + names)
        for n, row in zip(names, m):
            w.writerow([n] + [f"{v:.6g}" for v in row])
    else:
        out.table(f"{metric} distances", [""] + names, [[n] + list(map(float, row)) for n, row in zip(names, m)],
                  numeric=set(range(1, len(names) + 1)))


def rank_transfer_cmd(
    target: Annotated[list[str], typer.Option("--target", help="Target dataset (repeatable).")],
    sources: Annotated[Optional[list[str]], typer.Option("--sources", help="Candidate sources, comma-separated (default: all others).")] = None,
    layer: LayerOpt = None,
    metric: MetricOpt = "emd",
    reference: Annotated[Optional[Path], typer.Option("--reference", help="CSV of observed transfer scores: header "
                                                      "source,<target1>,..., one row per source. Higher is better "
                                                      "(accuracy, mIoU) unless --lower-is-better.")] = None,
    lower_is_better: Annotated[bool, typer.Option("--lower-is-better", help="The --reference scores are errors or "
                                                  "losses: the lowest is the best transfer.")] = False,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Rank candidate source datasets for each target by DNA distance (paper sec. 5.5).

    Uses the extractor's last layer unless --layer is given. With --reference, also
    scores the ranking: discrepancy d (Eq. 8) and Spearman's rho (+1: the closest source
    transferred best). Every target weighs the same in d (its mean over ranks first, then the
    mean over targets), also when some of its reference cells are empty. Every name given
    (targets, sources, the reference's rows and columns) must be an entry.

    Example: vdna rank-transfer --target mydata --sources a,b,c --reference miou.csv
    """
    from vdnacli import transfer

    cat = open_catalog(registry)
    layers = split_csv(layer)
    transfer.check_names(target, cat.names(), "--target")
    lay, neu, w = resolve_focus(cat, mask, ignore, layers, None, cat.registry.meta(target[0]))
    if mask or ignore:
        layers = lay or [l for l in neu]
    out = Output(json=json)
    ref = transfer.read_reference(reference) if reference else None  # a bad file fails before any work
    skipped: dict[str, list[str]] = {}
    rankings = transfer.rank(cat, target, split_csv(sources), lay, metric, neu, w, skipped=skipped)
    for t, left_out in skipped.items():
        out.note(f"{t}: left out {plural(len(left_out), 'entry')} not comparable with it "
                 f"(other extractor, bins or kind): {', '.join(left_out[:5])}")
    ev = None
    if ref is not None:
        transfer.check_reference(ref, rankings, cat.names(), reference.name)
        ev = transfer.evaluate(rankings, ref, higher_is_better=not lower_is_better)
    if json:
        out.emit_json({
            "rankings": {t: [{"name": n, "distance": d} for n, d in r] for t, r in rankings.items()},
            "discrepancy": ev.discrepancy if ev else None,
            "spearman": ev.spearman if ev else None,
            "per_target": ev.per_target if ev else None,
            "layers": layers or "last",
            "metric": metric,
            "higher_is_better": not lower_is_better if ev else None,
        })
        return
    for t, r in rankings.items():
        used = ", ".join(layers) if layers else f"last layer ({transfer.default_layer(cat, t)})"
        vmax = max((d for _, d in r), default=0.0)
        out.table(f"sources for {t} — {metric} on {used}, closest first", ["#", "source", "distance", ""],
                  [[i + 1, n, d, bar(d, vmax)] for i, (n, d) in enumerate(r)], numeric={0, 2})
    if ev:
        better = "lower" if lower_is_better else "higher"
        out.print(f"against {reference.name} ({better} is better): discrepancy d = {fmt_sig(ev.discrepancy)}, "
                  f"Spearman rho = {fmt_sig(ev.spearman)}"
                  + ("" if ev.spearman is not None else " (needs two sources with distinct scores)"))


def _write_sheet(out: Output, sheet, scores, source: Path, title: str) -> None:
    from vdnacli.plots import sheet_figure
    from vdnacli.preprocess import decode
    from vdnacli.sources import list_images

    refs = {r.name: r for r in list_images(source)}
    sheet_figure(scores, lambda n: decode(refs[n].read_bytes()), sheet, title=title)
    out.note(f"wrote {sheet}")


def _render_scores(out: Output, title: str, scores, top, bottom, json: bool):
    n = len(scores)
    if top is not None or bottom is not None:
        picked = (scores[: top or 0]) + (scores[n - (bottom or 0):] if bottom else [])
        seen, rows = set(), []
        for r in picked:
            if r[0] not in seen:
                seen.add(r[0])
                rows.append(r)
    else:
        rows = scores
    if json:
        out.emit_json([{"image": name, "distance": d} for name, d in rows])
        return
    vmax = max((d for _, d in rows), default=0.0)
    rank = {name: i + 1 for i, (name, _) in enumerate(scores)}
    out.table(title, ["rank", "image", "distance", ""], [[rank[nm], nm, d, bar(d, vmax)] for nm, d in rows],
              numeric={0, 2})


def score_cmd(
    source: Annotated[Path, typer.Argument(help="Images to rank: folder, image, .txt list or .zip.")],
    against: Annotated[str, typer.Option("--against", help="Dataset DNA (registry name) to score against.")],
    top: Annotated[Optional[int], typer.Option("--top", help="Show only the N best images.", min=0)] = None,
    bottom: Annotated[Optional[int], typer.Option("--bottom", help="Show only the N worst images.", min=0)] = None,
    layer: LayerOpt = None,
    neuron: NeuronOpt = None,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
    ranges: Annotated[Optional[Path], typer.Option("--ranges", help="Ranges file the DNA was computed with.")] = None,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    sheet: SheetOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Rank the images of SOURCE by the EMD of each image's DNA to a dataset DNA, best first.

    Example: vdna score ./generated --against ffhq --top 10 --bottom 10
    """
    from vdnacli.extras import require_compute

    require_compute("vdna score")  # before the imports that need it
    from vdnacli.cli.common import settings
    from vdnacli.distances import parse_neuron_specs
    from vdnacli.scoring import score_images
    from vdnacli.sources import list_images

    s = settings(registry=registry, device=device)
    cat = open_catalog(s.registry)
    reference = cat.get(against)
    lay, neu, w = resolve_focus(cat, mask, ignore, split_csv(layer), parse_neuron_specs(neuron), reference.meta)
    refs = list_images(source)
    from vdnacli.pipeline import Run

    with progress_bar(not quiet and not json, f"scoring {source.name}") as update:
        scores, report = score_images(refs, reference, s.device, lay, neu, ranges_path=ranges,
                                      run=Run(batch_size=16, workers=s.workers, progress=update), weights_per_neuron=w)
    out = Output(json=json, quiet=quiet)
    if report.failed:
        out.warn(f"skipped {plural(len(report.failed), 'unreadable image')}: " + "; ".join(f"{n} ({r})" for n, r in report.failed[:5]))
    if sheet:
        _write_sheet(out, sheet, scores, source, f"{source.name} scored against {against}")
    _render_scores(out, f"images of {source.name} by EMD to {against} (closest first)", scores, top, bottom, json)


def similar_cmd(
    image: Annotated[Path, typer.Argument(help="The reference image.")],
    source: Annotated[Path, typer.Option("--in", help="Images to rank: folder, .txt list or .zip.")],
    top: Annotated[Optional[int], typer.Option("--top", min=0)] = None,
    bottom: Annotated[Optional[int], typer.Option("--bottom", min=0)] = None,
    extractor: Annotated[Optional[str], typer.Option("--extractor", "-e")] = None,
    layer: LayerOpt = None,
    neuron: NeuronOpt = None,
    device: Annotated[Optional[str], typer.Option("--device")] = None,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    sheet: SheetOpt = None,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Rank images by the EMD of their DNA to the DNA of one reference image (paper Fig. 6).

    Example: vdna similar query.jpg --in ./photos --top 5 --mask hats
    """
    from vdnacli.extras import require_compute

    require_compute("vdna similar")  # before the imports that need it
    from vdnacli.cli.common import settings
    from vdnacli.distances import parse_neuron_specs
    from vdnacli.scoring import similar_images

    s = settings(extractor=extractor, device=device, registry=registry)
    lay, neu, w = split_csv(layer), parse_neuron_specs(neuron), None
    if mask or ignore:
        from vdnacli.extractors import get_spec

        cat = open_catalog(s.registry)
        m = cat.get_mask(mask or ignore)
        s = settings(extractor=extractor or m.extractor, device=device, registry=registry)
        spec = get_spec(s.extractor)
        lay, neu, w = resolve_focus(cat, mask, ignore, lay, neu,
                                    {"extractor": spec.name, "layers": [list(x) for x in spec.layers]})
    from vdnacli.pipeline import Run

    with progress_bar(not quiet and not json, f"similar in {source.name}") as update:
        scores, report = similar_images(image, source, s.extractor, s.device, s.bins, lay, neu,
                                        run=Run(batch_size=16, workers=s.workers, progress=update),
                                        weights_per_neuron=w)
    out = Output(json=json, quiet=quiet)
    if report.failed:
        out.warn(f"skipped {plural(len(report.failed), 'unreadable image')}")
    if sheet:
        _write_sheet(out, sheet, scores, source, f"{source.name} by similarity to {image.name}")
    _render_scores(out, f"images of {source.name} closest to {image.name}", scores, top, bottom, json)


def register(app: typer.Typer) -> None:
    app.command("score")(score_cmd)
    app.command("similar")(similar_cmd)
    app.command("compare")(compare_cmd)
    app.command("nearest")(nearest_cmd)
    app.command("matrix")(matrix_cmd)
    app.command("rank-transfer")(rank_transfer_cmd)
