"""`vdna report`: the catalog as one self-contained HTML page, or as text (work in vdnacli.report)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vdnacli.cli.common import open_catalog, split_csv
from vdnacli.cli.options import IgnoreOpt, LayerOpt, MaskOpt, QuietOpt, RegistryOpt
from vdnacli.cli.output import Output


def report_cmd(
    out_path: Annotated[str, typer.Argument(metavar="OUT", help="HTML file to write, or - for text on stdout.")],
    entries: Annotated[Optional[list[str]], typer.Option(
        "--entries", help="Only these entries: names or globs (repeatable or comma-separated).", show_default=False)] = None,
    layer: LayerOpt = None,
    mask: MaskOpt = None,
    ignore: IgnoreOpt = None,
    text: Annotated[bool, typer.Option("--text", help="Write plain text instead of HTML (also when OUT is -).")] = False,
    thumbnails: Annotated[int, typer.Option("--thumbnails", min=0, help="Thumbnails per entry card at most (0 = none; "
                                            "fewer on big catalogs, to keep the page small).")] = 16,
    registry: RegistryOpt = None,
    quiet: QuietOpt = False,
):
    """Write the catalog as one self-contained HTML page (or as text).

    The page: a sortable table, the clustered distance heatmap of each comparable group, and a
    card per entry (thumbnails, provenance, nearest 5, per-layer profile). One file that opens
    from disk and fetches nothing.

    Example: vdna report catalog.html --entries 'city-*' · vdna report - | less
    """
    from vdnacli.cli.progress import progress_bar
    from vdnacli.report import build_report, render_html, render_text

    as_text = text or out_path == "-"
    out = Output(quiet=quiet)
    cat = open_catalog(registry)
    with progress_bar(not quiet, "distances") as update:
        rep = build_report(cat, split_csv(entries), layer, mask, ignore,
                           progress=(lambda _g, done, total: update(done, total)) if update else None)
    page = render_text(rep) if as_text else render_html(rep, thumbnails=thumbnails)
    if out_path == "-":
        sys.stdout.write(page)
        return
    path = Path(out_path)
    if not as_text and path.suffix.lower() not in (".html", ".htm"):
        from vdnacli.errors import ConfigError

        raise ConfigError(f"the report is an HTML page: use a .html file name (got {path.name}), or --text")
    _write(path, page)
    out.note(f"wrote {path} ({len(page.encode()) / 1e6:.1f} MB, {len(rep.entries)} entries"
             f"{'' if as_text else '; open it in a browser'})")


def _write(path: Path, page: str) -> None:
    import os
    import tempfile

    from vdnacli.errors import VdnaError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, path)
    except OSError as e:
        raise VdnaError(f"cannot write {path}: {e.strerror or e}") from None


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
