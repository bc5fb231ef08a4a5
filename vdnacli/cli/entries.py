"""Commands that manage entries: list, show, remove, import, export, extractors, verify."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from vdnacli.cli.common import open_catalog
from vdnacli.cli.options import JsonOpt, QuietOpt, RegistryOpt
from vdnacli.cli.output import Output, human_bytes
from vdnacli.text import plural


def list_cmd(registry: RegistryOpt = None, json: JsonOpt = False):
    """List the DNAs in the registry.

    Example: vdna list --json
    """
    out = Output(json=json)
    cat = open_catalog(registry)
    rows = cat.summaries()
    if json:
        out.emit_json([r.as_dict() for r in rows])
        return
    if not rows:
        out.note(f"registry {cat.root} is empty; try 'vdna add NAME FOLDER' or 'vdna demo'")
        return
    out.table(
        f"{plural(len(rows), 'DNA')} in {cat.root}",
        ["name", "extractor", "kinds", "images", "bins", "size", "created"],
        [[r.name, r.extractor, ",".join(r.kinds), r.num_images, r.bins, human_bytes(r.size_bytes),
          (r.created or "")[:19] if not r.problem else f"BROKEN: {r.problem}"] for r in rows],
        numeric={3, 4, 5},
    )


def show_cmd(
    name: str,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also write a PNG overview of the DNA.")] = None,
    sheet: Annotated[Optional[Path], typer.Option("--sheet", help="Also write the contact sheet of its thumbnails "
                                                  "(PNG).", show_default=False)] = None,
    open_sheet: Annotated[bool, typer.Option("--open", help="Open the contact sheet (written to a temporary file "
                                             "unless --sheet is given).")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Show one DNA's metadata: extractor, hashes, layers, preprocessing, image count.

    Example: vdna show demo-faces-a --plot faces.png --sheet faces-sheet.png
    """
    out = Output(json=json)
    cat = open_catalog(registry)
    meta = cat.registry.meta(name)
    if plot:
        from vdnacli.plots import dna_figure

        dna_figure(cat.get(name), plot)
        out.note(f"wrote {plot}")
    if sheet or open_sheet:
        _sheet(cat, name, sheet, open_sheet, out)
    info = {"name": name, **{k: v for k, v in meta.items() if k != "name"}}
    info["size_bytes"] = cat.registry.file_size(name)
    info["recipe"] = _recipe(meta)
    if json:
        out.emit_json(info)
        return
    rows = [[k, v if not isinstance(v, (dict, list)) else _compact(v)] for k, v in info.items() if k != "layers"]
    out.table(f"DNA {name}", ["field", "value"], rows)
    out.table("layers", ["layer", "neurons"], [[l, n] for l, n in meta.get("layers", [])], numeric={1})


def _recipe(meta: dict) -> str:
    """"vdna-0.1.1", "vdnacli" or "custom": which recipe the recorded settings follow."""
    from vdnacli.errors import VdnaError
    from vdnacli.settings import ComputeSettings

    try:
        return ComputeSettings.from_meta(meta).recipe_name()
    except VdnaError:
        return "unknown"


def _sheet(cat, name: str, path: Optional[Path], open_it: bool, out: Output) -> None:
    from vdnacli.errors import VdnaError
    from vdnacli.thumbnails import open_file, write_sheet

    thumbs = cat.thumbnails(name)
    if thumbs is None:
        raise VdnaError(f"'{name}' keeps no thumbnails (added with --thumbnails 0, imported, or by an older vdna); "
                        f"add it again with --replace to keep some")
    if path is None:
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=f"vdna-sheet-{name}-", suffix=".png")
        os.close(fd)
        path = Path(tmp)
    write_sheet(thumbs, path, title=f"{name}: {len(thumbs)} of {cat.registry.meta(name).get('num_images')} images")
    if open_it and open_file(path):
        out.note(f"opened {path}")
    elif open_it:
        out.note(f"wrote {path} (nothing here can open it: open it yourself)")
    else:
        out.note(f"wrote {path}")


def _compact(v) -> str:
    import json as _json

    return _json.dumps(v, separators=(", ", ": "))


def remove_cmd(name: str, registry: RegistryOpt = None, quiet: QuietOpt = False):
    """Remove a DNA from the registry.

    Example: vdna remove old-scan
    """
    cat = open_catalog(registry)
    cat.remove(name)
    Output(quiet=quiet).note(f"removed {name}")


def import_cmd(
    path: Annotated[Path, typer.Argument(help="Upstream pair stem or its .json/.npz file.")],
    name: Annotated[Optional[str], typer.Option("--name", help="Entry name (default: the file stem).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an entry of the same name.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Import a DNA saved by upstream vdna 0.1.1 (<stem>.json + <stem>.npz).

    Example: vdna import downloads/ffhq_mugs
    """
    from registry import EntryExistsError
    from vdnacli.interop import import_upstream

    cat = open_catalog(registry, create=True)
    stem = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    name = name or stem.name
    if not replace and name in cat.registry:
        raise EntryExistsError(name)
    dna = import_upstream(path)
    cat.put(name, dna, replace=replace)
    out = Output(json=json)
    if json:
        out.emit_json({"name": name, "extractor": dna.meta["extractor"], "kinds": dna.kinds, "num_images": dna.num_images})
    else:
        out.print(f"imported {name}: {dna.meta['extractor']}, {plural(dna.num_images, 'image')}, {', '.join(dna.kinds)}")


def export_cmd(
    name: str,
    path: Annotated[Path, typer.Argument(help="Output stem, taken literally (writes STEM.json + STEM.npz), or a folder.")],
    kind: Annotated[Optional[str], typer.Option("--kind", help="hist, gauss or layer-gauss (default: the first the DNA "
                                                "holds, in that order).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing pair.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Export a DNA as the file pair of the paper's code (vdna 0.1.1), which its loader reads.

    Example: vdna export demo-faces-a out/faces --kind gauss
    """
    from vdnacli.interop import export_upstream

    cat = open_catalog(registry)
    dna = cat.get(name)
    target = path / name if path.is_dir() else path
    j, n = export_upstream(dna, target, kind=kind, force=force)
    out = Output(json=json)
    if cat.registry.meta(name).get("shards"):
        out.note(f"the shard DNAs of {name} are not exported: vdna 0.1.1's file pair has no place for them "
                 "(the registry entry, 'vdna push' and 'vdna pull' keep them)")
    if json:
        out.emit_json({"name": name, "json": str(j), "npz": str(n)})
    else:
        out.print(f"wrote {j} and {n}")


def extractors_cmd(json: JsonOpt = False):
    """List feature extractors, their layers, input size and whether weights are local.

    Any timm model also works as timm:<model_name> (not listed). Example: vdna extractors --json
    """
    from vdnacli.extractors import all_specs
    from vdnacli.extractors.loaded import describe

    items = [describe(s) for s in all_specs()]
    out = Output(json=json)
    if json:
        out.emit_json(items)
        return
    out.table("extractors", ["name", "architecture", "layers", "neurons", "size", "weights", "ranges"],
              [[i["name"], i["architecture"], len(i["layers"]), i["neurons"], i["input_size"],
                "local" if i["weights_present"] else "missing", i["ranges_source"]] for i in items],
              numeric={2, 3, 4})
    out.note("any timm model: --extractor timm:<model_name>; missing weights download on first use "
             "(--offline forbids it)")


def verify_cmd(
    repair: Annotated[bool, typer.Option("--repair", help="Delete leftovers of interrupted writes.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Check every entry's checksums, shapes and values; exit 1 if any is damaged (2 or more: an error).

    Example: vdna verify --repair
    """
    from vdnacli.cli.app import error_exit
    from vdnacli.integrity import verify_catalog

    error_exit(2)  # 1 is the answer "damaged"

    report = verify_catalog(open_catalog(registry), repair=repair)
    out = Output(json=json)
    if json:
        out.emit_json(report.as_dict())
    else:
        out.print(f"{plural(report.entries, 'entry')} checked, {len(report.damaged)} damaged, "
                  f"{plural(len(report.leftovers), 'leftover temporary file')}" + (" removed" if report.removed else ""))
        for n, p in report.damaged.items():
            out.print(f"  {n}: {'; '.join(p)}")
        if report.leftovers and not repair:
            out.note("run 'vdna verify --repair' to delete the leftovers")
    if report.damaged:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("show")(show_cmd)
    app.command("remove")(remove_cmd)
    app.command("import")(import_cmd)
    app.command("export")(export_cmd)
    app.command("extractors")(extractors_cmd)
    app.command("verify")(verify_cmd)
