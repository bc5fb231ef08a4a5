"""Commands that watch data over time: drift (a batch against a reference) and plan (how many images)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vdnacli.cli.common import open_catalog, resolve_focus, settings, split_csv
from vdnacli.cli.options import (IgnoreOpt, JsonOpt, LayerOpt, MaskOpt, MetricOpt, NeuronOpt, OfflineOpt,
                                 PermutationsOpt, QuietOpt, RegistryOpt, SeedOpt)
from vdnacli.cli.output import Output, fmt_sig
from vdnacli.text import plural
from vdnacli.cli.uncertainty import render_ci


def drift_cmd(
    reference: Annotated[str, typer.Argument(help="Reference entry (made with --shards).")],
    source: Annotated[Path, typer.Argument(help="The new images: folder (recursive), image, .txt list of paths, or .zip.")],
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level of the same-distribution test.")] = 0.01,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Also require the distance above the noise "
                                                       "floor to exceed D (smaller differences do not matter to you).",
                                                       show_default=False)] = None,
    save: Annotated[Optional[str], typer.Option("--save", help="Also register the batch's DNA under this name.",
                                                show_default=False)] = None,
    metric: MetricOpt = "emd",
    layer: LayerOpt = None,
    neuron: NeuronOpt = None,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use a random subset of N images.")] = None,
    permutations: PermutationsOpt = 999,
    seed: SeedOpt = 0,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    offline: OfflineOpt = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Has a batch of images drifted from a reference? Exits 0 (no drift), 1 (drift), 2 (error).

    Computes SOURCE with REFERENCE's settings and shard count (as --like), then compares.
    Drift: the shard permutation test rejects "one distribution" at --alpha (and, with
    --threshold D, the distance above the noise floor exceeds D).

    Example: vdna drift prod-ref ./batch-2024-06 --alpha 0.01 --save batch-2024-06
    """
    from vdnacli.cli.app import error_exit
    from vdnacli.extras import require_compute

    error_exit(2)
    require_compute("vdna drift")  # before the imports that need it
    from vdnacli.cli.progress import progress_bar
    from vdnacli.distances import parse_neuron_specs
    from vdnacli.drift import drift

    s = settings(registry=registry, device=device, offline=offline or None)
    cat = open_catalog(s.registry)
    out = Output(json=json, quiet=quiet)
    lay, neu, w = resolve_focus(cat, mask, ignore, split_csv(layer), parse_neuron_specs(neuron),
                                cat.registry.meta(reference))
    with progress_bar(not quiet and not json, f"drift {Path(source).name}") as update:
        r = drift(cat, reference, source, alpha, threshold, metric, lay, neu, w, permutations, seed, save, s.device,
                  s.batch_size, s.workers, s.offline, limit, update)
    for note in r.notes:
        out.note(note)
    if r.failed:
        out.warn(f"skipped {plural(len(r.failed), 'unreadable image')}: " + "; ".join(f"{n} ({why})" for n, why in r.failed[:5]))
    if json:
        out.emit_json(r.as_dict())
    else:
        out.print(f"{'DRIFT' if r.drift else 'no drift'}: {r.source} ({plural(r.images, 'image')}) against {reference} — {r.reason}")
        out.print(f"{r.result.metric} distance: {fmt_sig(r.result.overall.distance)}")
        render_ci(out, r.result, top=10)
        if r.saved:
            out.note(f"registered the batch as {r.saved}")
    if r.drift:
        raise typer.Exit(1)


def plan_cmd(
    reference: Annotated[str, typer.Argument(help="Reference entry (made with --shards).")],
    precision: Annotated[float, typer.Option("--precision", help="Relative precision wanted: 0.02 = ±2 % of the distance.")] = 0.02,
    distance: Annotated[Optional[float], typer.Option("--distance", help="The distance to REFERENCE you expect to measure "
                                                      "(default: the median distance to the other entries).",
                                                      show_default=False)] = None,
    metric: MetricOpt = "emd",
    layer: LayerOpt = None,
    neuron: NeuronOpt = None,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    seed: SeedOpt = 0,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """How many images a DNA needs for its distance to REFERENCE to be within ±precision.

    Measured on REFERENCE's shards: how the distance between two samples of its images falls
    with their size, extrapolated. Assumes the new images vary as much as the reference's.

    Example: vdna plan cityscapes --precision 0.02
    """
    from vdnacli.distances import parse_neuron_specs
    from vdnacli.drift import plan

    cat = open_catalog(registry)
    lay, neu, w = resolve_focus(cat, mask, ignore, split_csv(layer), parse_neuron_specs(neuron),
                                cat.registry.meta(reference))
    p = plan(cat, reference, precision, distance, metric, lay, neu, w, seed)
    out = Output(json=json)
    if json:
        out.emit_json(p.as_dict())
        return
    pct = f"±{precision * 100:g} %"
    if p.images is None:
        out.print(f"a {metric} distance of {p.distance:.4g} to {reference} cannot be measured to {pct} with this "
                  f"reference: its own {p.reference_images} images are too few (it needs about "
                  f"{p.reference_needed(p.distance)})")
    else:
        out.print(f"to measure a {metric} distance of {p.distance:.4g} to {reference} ({p.distance_source}) within "
                  f"{pct}: about {p.images} images")
    out.print(f"noise floor of n images against the reference's {p.reference_images}: "
              f"{p.kappa:.4g} x (1/n + 1/{p.reference_images})^{p.beta:.3g} (fitted on {len(p.points)} shard pairs)")
    if p.rows:
        out.table(f"images needed for {pct}, by the distance you measure", ["entry", "distance", "images"],
                  [[r.name, r.distance, r.images if r.images is not None else "not reachable"] for r in p.rows],
                  numeric={1, 2})


def register(app: typer.Typer) -> None:
    app.command("drift")(drift_cmd)
    app.command("plan")(plan_cmd)
