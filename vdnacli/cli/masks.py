"""`vdna mask ...`: sensitive-neuron focus masks and learned ignore-weights."""
from __future__ import annotations

from typing import Annotated

import typer

from vdnacli.cli.common import open_catalog, split_csv
from vdnacli.cli.options import JsonOpt, LayerOpt, QuietOpt, RegistryOpt
from vdnacli.cli.output import Output, human_bytes

app = typer.Typer(help="Attribute masks: focus on, or ignore, the neurons sensitive to an attribute.",
                  no_args_is_help=True)


@app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="Mask name.")],
    with_: Annotated[list[str], typer.Option("--with", help="DNA(s) of images WITH the attribute (summed).")],
    without: Annotated[list[str], typer.Option("--without", help="DNA(s) of images WITHOUT it (summed).")],
    top: Annotated[int, typer.Option("--top", help="Keep the K most sensitive neurons.")] = 50,
    metric: Annotated[str, typer.Option("--metric", help="emd or nfd.")] = "emd",
    layer: LayerOpt = None,
    replace: Annotated[bool, typer.Option("--replace")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Keep the K neurons whose distributions differ most between the two sides (A.5).

    Example: vdna mask create hats --with celeba-hat --without celeba-nohat --top 20
    """
    from vdnacli.masks import create_focus_mask

    cat = open_catalog(registry)
    kind = "hist" if metric == "emd" else "gauss"
    mask = create_focus_mask([cat.get(n, [kind]) for n in split_csv(with_) or []],
                             [cat.get(n, [kind]) for n in split_csv(without) or []], top, metric, split_csv(layer))
    mask.info.update({"with": split_csv(with_), "without": split_csv(without)})
    cat.put_mask(name, mask, replace=replace)
    out = Output(json=json)
    rows = mask.info["most_sensitive"]
    if json:
        out.emit_json({"name": name, "kind": "focus", "top": top, "most_sensitive": rows})
        return
    out.print(f"mask {name}: the {top} neurons most sensitive to {'+'.join(split_csv(with_))} vs {'+'.join(split_csv(without))}")
    out.table("most sensitive neurons", ["layer", "neuron", metric], [[r["layer"], r["neuron"], r["sensitivity"]] for r in rows[:10]],
              numeric={1, 2})


def _parse_pairs(pairs: list[str]) -> dict[str, list[tuple[str, str]]]:
    from vdnacli.errors import ConfigError

    out: dict[str, list[tuple[str, str]]] = {}
    for p in pairs:
        attr, eq, rest = p.partition("=")
        w, colon, wo = rest.partition(":")
        if not (attr and eq and w and colon and wo):
            raise ConfigError(f"--pair expects ATTR=WITH:WITHOUT (e.g. hat=hat-1:nohat-1), got {p!r}")
        out.setdefault(attr, []).append((w, wo))
    return out


@app.command("learn")
def learn_cmd(
    name: Annotated[str, typer.Argument(help="Mask name.")],
    ignore: Annotated[str, typer.Option("--ignore", help="Attribute the distance must ignore.")],
    pair: Annotated[list[str], typer.Option("--pair", help="ATTR=WITH:WITHOUT, DNA names of one labelled pair (repeatable).")],
    metric: Annotated[str, typer.Option("--metric", help="emd or nfd.")] = "emd",
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (paper: 1e-5).")] = 1e-5,
    patience: Annotated[int, typer.Option("--patience", help="Early stopping: steps without held-out improvement.")] = 50,
    max_steps: Annotated[int, typer.Option("--max-steps")] = 20000,
    holdout: Annotated[float, typer.Option("--holdout", help="Fraction of each attribute's pairs held out.")] = 0.25,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    replace: Annotated[bool, typer.Option("--replace")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Learn per-neuron weights so that EMD_W ignores one attribute but keeps the others (Eq. 6-7).

    Example: vdna mask learn no-border --ignore border --pair border=b1:p1 --pair border=b2:p2 --pair noise=n1:p1 --pair noise=n2:p2
    """
    from vdnacli.extras import require_compute

    require_compute("vdna mask learn")  # before the imports that need it
    from vdnacli.masks import learn_ignore_mask

    cat = open_catalog(registry)
    kind = "hist" if metric == "emd" else "gauss"
    named = _parse_pairs(pair)
    cache: dict = {}

    def get(n):
        if n not in cache:
            cache[n] = cat.get(n, [kind])
        return cache[n]

    pairs = {a: [(get(w), get(wo)) for w, wo in items] for a, items in named.items()}
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mask, report = learn_ignore_mask(pairs, ignore, metric, lr=lr, patience=patience, max_steps=max_steps,
                                     holdout=holdout, seed=seed, device=device)
    mask.info["pair_names"] = {a: [f"{w}:{wo}" for w, wo in items] for a, items in named.items()}
    cat.put_mask(name, mask, replace=replace)
    out = Output(json=json)
    if json:
        out.emit_json({"name": name, "kind": "ignore", "ignore": ignore, "delta_a": report.delta_a,
                       "mean_abs_delta_b": report.mean_abs_delta_b, "steps": report.steps,
                       "best_step": report.best_step, "pairs": report.pairs})
        return
    out.print(f"mask {name}: ignores '{ignore}' — held-out Delta_a = {report.delta_a:.3f} (1 = ignored), "
              f"mean |Delta_b| = {report.mean_abs_delta_b:.3f} (0 = others unchanged), "
              f"{report.steps} steps (best {report.best_step})")


@app.command("list")
def list_cmd(registry: RegistryOpt = None, json: JsonOpt = False):
    """List masks.

    Example: vdna mask list --json
    """
    cat = open_catalog(registry)
    rows = []
    for n, meta, problem in cat.masks.iter_meta():
        meta = meta or {}
        rows.append({"name": n, "kind": meta.get("kind"), "extractor": meta.get("extractor"),
                     "neurons_selected": meta.get("neurons_selected"), "attribute": meta.get("ignore"),
                     "size_bytes": cat.masks.file_size(n), "problem": problem})
    out = Output(json=json)
    if json:
        out.emit_json(rows)
        return
    out.table("masks", ["name", "kind", "extractor", "neurons", "ignores", "size"],
              [[r["name"], r["kind"], r["extractor"], r["neurons_selected"], r["attribute"], human_bytes(r["size_bytes"])]
               for r in rows], numeric={3})


@app.command("show")
def show_cmd(name: str, registry: RegistryOpt = None, json: JsonOpt = False):
    """Show a mask's metadata (and evaluation, for learned masks).

    Example: vdna mask show hats
    """
    import json as _json

    cat = open_catalog(registry)
    meta = cat.mask_meta(name)
    out = Output(json=json)
    if json:
        out.emit_json(meta)
        return
    out.table(f"mask {name}", ["field", "value"],
              [[k, v if not isinstance(v, (dict, list)) else _json.dumps(v)[:200]] for k, v in meta.items()])


@app.command("remove")
def remove_cmd(name: str, registry: RegistryOpt = None, quiet: QuietOpt = False):
    """Remove a mask.

    Example: vdna mask remove hats
    """
    open_catalog(registry).remove_mask(name)
    Output(quiet=quiet).note(f"removed mask {name}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="mask")
