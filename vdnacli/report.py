"""A catalog you can see: one self-contained HTML page (or plain text) about every DNA.

`build_report` gathers what the page shows; `render_html` and `render_text` lay it out.

* Entries are grouped by what can be compared: DNAs made with the same extractor, weights,
  activation ranges, bins and layers (`search.comparable_meta`, the rule `compare` applies)
  share a group; DNAs without histograms form groups of their own, by extractor. Nothing
  is hidden: an entry that cannot be read is listed with its problem.
* Within a group, every pairwise EMD is computed exactly (`pairwise.emd_matrix`: each value
  `compare()`'s to the last bit, so the page agrees with `vdna nearest` and `vdna matrix`),
  with its per-layer parts; the matrix is shown in clustered order (`clustering.leaf_order`).
* Each entry's card: its thumbnails, provenance, nearest 5, and per layer its EMD to its
  nearest next to the median EMD to the rest of its group (which layers make it close).

The page is one file: inline CSS, JS and images (data: URIs), a Content-Security-Policy that
forbids every fetch, no external font or script; it opens from disk. At 500 entries it stays
under 10 MB: the thumbnails per card shrink to fit a budget.
"""
from __future__ import annotations

import base64
import fnmatch
import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Callable, Sequence

import numpy as np

from registry import RegistryError
from vdnacli import __version__
from vdnacli.clustering import leaf_order
from vdnacli.distances import make_selection
from vdnacli.errors import ConfigError, NotFoundError, VdnaError, did_you_mean
from vdnacli.integrity import meta_problem

NEAREST = 5
THUMBS_PER_CARD = 16
THUMBS_BUDGET = 6 << 20  # bytes of thumbnails (base64) on one page
Progress = Callable[[str, int, int], None]  # (group title, pairs done, pairs total)


@dataclass
class Entry:
    name: str
    meta: dict
    size_bytes: int | None
    problem: str | None = None
    group: int | None = None
    thumbnails: object | None = None  # vdnacli.thumbnails.Thumbnails


@dataclass
class Group:
    title: str
    names: list[str]  # clustered order when distances exist, else by name
    focus: str  # which neurons the distances use
    pairwise: object | None = None  # vdnacli.pairwise.PairwiseEMD (names in `pairwise.names` order)
    note: str | None = None

    @property
    def has_distances(self) -> bool:
        return self.pairwise is not None


@dataclass
class CatalogReport:
    registry: str
    generated: str
    entries: list[Entry]
    groups: list[Group]
    mask: str | None = None
    layers: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def entry(self, name: str) -> Entry:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, Entry]:
        if not hasattr(self, "_index"):
            self._index = {e.name: e for e in self.entries}
        return self._index

    def neighbours(self, name: str, k: int = NEAREST) -> list[tuple[str, float]]:
        """The k nearest entries of `name` in its group, ascending (ties by name)."""
        e = self.entry(name)
        if e.group is None or not self.groups[e.group].has_distances:
            return []
        pw = self.groups[e.group].pairwise
        i = pw.names.index(name)
        return [(pw.names[j], d) for j, d in pw.nearest(i, k)]

    def profile(self, name: str) -> tuple[str, list[tuple[str, float, float]]] | None:
        """(nearest, [(layer, EMD to the nearest, median EMD to the rest of the group)])."""
        nb = self.neighbours(name, 1)
        if not nb:
            return None
        pw = self.groups[self.entry(name).group].pairwise
        i, j = pw.names.index(name), pw.names.index(nb[0][0])
        rows = []
        for layer, m in pw.per_layer.items():
            rows.append((layer, float(m[i, j]), float(np.median(np.delete(m[i], i)))))
        return nb[0][0], rows


# -- gathering ------------------------------------------------------------------------
def select_names(all_names: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    """Entry names matching any of `patterns` (exact names or shell globs), sorted."""
    if not patterns:
        return sorted(all_names)
    chosen = set()
    for p in patterns:
        hits = fnmatch.filter(all_names, p)
        if not hits:
            raise NotFoundError(f"no entry matches '{p}'{did_you_mean(p, all_names)}; see 'vdna list'")
        chosen.update(hits)
    return sorted(chosen)


def _group_key(meta: dict) -> tuple:
    return (meta.get("extractor"), meta.get("bins"), json.dumps(meta.get("layers")))


def _groups_of(entries: list[Entry]) -> list[list[Entry]]:
    """Comparable groups: every pair inside a group passes `search.comparable_meta` (the rule
    `compare` applies). Unknown digests match anything, so comparability is not transitive:
    entries with the same fields and digests form a class, and a class joins the first group
    all of whose classes it can be compared with."""
    from vdnacli.search import _sha_rows, _shas_match, compat_key

    classes: dict[tuple, list[Entry]] = {}
    without: dict[str, list[Entry]] = {}
    for e in entries:
        if "hist" not in e.meta.get("kinds", []):
            without.setdefault(str(e.meta.get("extractor")), []).append(e)
            continue
        shas = _sha_rows(e.meta)
        classes.setdefault((compat_key(e.meta), shas.tobytes()), []).append(e)
    with_hist: list[list[tuple]] = []  # groups of (key, shas, members)
    for (key, raw), members in classes.items():
        shas = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 32)
        for g in with_hist:
            if all(k == key and _shas_match(shas, s) for k, s, _ in g):
                g.append((key, shas, members))
                break
        else:
            with_hist.append([(key, shas, members)])
    groups = [sorted((e for _, _, m in g for e in m), key=lambda e: e.name) for g in with_hist]
    groups.sort(key=lambda g: (-len(g), g[0].name))
    return groups + [without[k] for k in sorted(without)]


def _title(members: list[Entry], all_groups: list[list[Entry]]) -> str:
    m = members[0].meta
    ext = str(m.get("extractor"))
    if "hist" not in m.get("kinds", []):
        return f"{ext} · no histograms"
    title = f"{ext} · {m.get('bins')} bins"
    same = [g for g in all_groups if g[0].meta.get("extractor") == ext and "hist" in g[0].meta.get("kinds", [])]
    if len(same) > 1:  # several groups of one extractor: say what differs
        title += f" · weights {str(m.get('weights_sha256'))[:8]} · ranges {str(m.get('ranges_sha256'))[:8]}"
    return title


def _selection(meta: dict, layers, mask_obj, mask_name: str | None):
    """(selection, weights, focus text, note) for one group, applying --layer / --mask
    where the group's extractor has them (a note says where they do not apply)."""
    stored = {str(l): int(n) for l, n in meta["layers"]}
    total = sum(stored.values())
    note = None
    use_layers = layers
    if layers and not set(layers) <= set(stored):
        note = f"layer(s) {', '.join(sorted(set(layers) - set(stored)))} not in {meta.get('extractor')}: all layers used"
        use_layers = None
    neurons = weights = None
    if mask_obj is not None:
        try:
            mask_obj.check(meta)
            use_layers, neurons, weights = mask_obj.focus(use_layers)
        except VdnaError as e:
            note = f"mask '{mask_name}' does not apply here ({str(e).split(';')[0]}): all neurons used"
    sel = make_selection(stored, use_layers, neurons)
    count = sum(stored[l] if idx is None else len(idx) for l, idx in sel.items())
    if mask_obj is not None and note is None:
        focus = f"mask '{mask_name}': {count:,} of {total:,} neurons" + (" (weighted EMD)" if weights else "")
    elif use_layers:
        focus = f"layer{'s' if len(sel) > 1 else ''} {', '.join(sel)}: {count:,} of {total:,} neurons"
    else:
        focus = f"all {total:,} neurons"
    return sel, weights, focus, note


def build_report(catalog, entries: Sequence[str] | None = None, layers: Sequence[str] | None = None,
                 mask: str | None = None, ignore: str | None = None, progress: Progress | None = None,
                 memory_bytes: int = 512 << 20) -> CatalogReport:
    """Everything the report shows, computed from the catalog (`entries`: names or globs)."""
    from vdnacli.pairwise import EntryLoadError, emd_matrix

    if mask and ignore:
        raise ConfigError("use either --mask or --ignore, not both")
    mask_obj = None
    if mask or ignore:
        mask_obj = catalog.get_mask(mask or ignore)
        if (mask_obj.kind == "focus") != bool(mask):
            want = "--mask" if mask_obj.kind == "focus" else "--ignore"
            raise ConfigError(f"'{mask or ignore}' is a {mask_obj.kind} mask: pass it with {want}")
    names = select_names(catalog.names(), entries)
    items: list[Entry] = []
    for name in names:
        try:
            meta = catalog.registry.meta(name)
            size = catalog.registry.file_size(name)
        except RegistryError as e:
            items.append(Entry(name, {}, None, problem=str(e)))
            continue
        bad = meta_problem(meta)
        items.append(Entry(name, meta if not bad else {}, size, problem=bad))
    report = CatalogReport(registry=catalog.root.name, generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           entries=items, groups=[], mask=mask or ignore, layers=list(layers) if layers else None)
    if not items:
        report.notes.append("the registry is empty: add DNAs with 'vdna add NAME FOLDER' (or try 'vdna demo')")
    members_all = _groups_of([e for e in items if e.problem is None])
    for members in members_all:
        title = _title(members, members_all)
        gi = len(report.groups)
        for e in members:
            e.group = gi
        if "hist" not in members[0].meta.get("kinds", []):
            report.groups.append(Group(title, [e.name for e in members], "—",
                                       note="no histograms: EMD needs DNAs added with --kind hist"))
            continue
        sel, weights, focus, note = _selection(members[0].meta, layers, mask_obj, mask or ignore)
        group = Group(title, [e.name for e in members], focus, note=note)
        report.groups.append(group)
        while len(group.names) >= 2:
            try:
                cb = (lambda d, t, _t=title: progress(_t, d, t)) if progress else None
                pw = emd_matrix(catalog, group.names, sel, weights, cb, memory_bytes)
            except EntryLoadError as e:  # damaged since listed: show it as such, compare the rest
                bad = report.entry(e.name)
                bad.problem, bad.group = str(e), None
                group.names = [n for n in group.names if n != e.name]
                continue
            order = leaf_order(pw.distance)
            group.pairwise = pw
            group.names = [pw.names[i] for i in order]
            break
    for e in items:
        if e.problem is None:
            try:
                e.thumbnails = catalog.thumbnails(e.name)
            except (VdnaError, RegistryError) as err:
                report.notes.append(f"{e.name}: thumbnails not shown ({err})")
    return report


# -- formatting -------------------------------------------------------------------------
def fmt_distance(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _origin(meta: dict) -> str:
    o = meta.get("origin") or {}
    kind = o.get("kind")
    if kind == "images":
        src = f"images from {o.get('source_name')}" if o.get("source_name") else "images"
        if o.get("limit"):
            src += f" (random {o['limit']}, seed {o.get('seed')})"
        return src
    if kind == "merge":
        return "merge of " + ", ".join(map(str, o.get("parts") or []))
    if kind:
        details = ", ".join(f"{k} {v}" for k, v in o.items() if k != "kind" and v not in (None, "") and k != "file_sha256")
        return f"{kind}" + (f" ({details})" if details else "")
    return "—"


def _created(meta: dict) -> str:
    c = str(meta.get("created") or "")
    return c[:16].replace("T", " ") if c else "—"


# -- text -------------------------------------------------------------------------------
def render_text(report: CatalogReport, width: int = 100) -> str:
    """The report for a terminal: catalog table, groups in clustered order, each entry's
    nearest and per-layer profile."""
    lines = [f"vdna catalog report: {len(report.entries)} DNA(s) in registry '{report.registry}' "
             f"({len(report.groups)} group(s); generated {report.generated}, vdna {__version__})",
             "distances: EMD in bin units (mean over the neurons compared), exact", ""]
    rows = [["name", "images", "extractor", "created", "size", "nearest", "EMD"]]
    for e in report.entries:
        nb = report.neighbours(e.name, 1) if e.problem is None else []
        if e.problem:
            rows.append([e.name, "—", "BROKEN", e.problem[:60], "", "", ""])
            continue
        rows.append([e.name, str(e.meta.get("num_images", "—")), str(e.meta.get("extractor")), _created(e.meta),
                     human_bytes(e.size_bytes), nb[0][0] if nb else "—", fmt_distance(nb[0][1]) if nb else "—"])
    lines += _columns(rows, numeric={1, 4, 6})
    for g in report.groups:
        lines += ["", f"== {g.title}: {len(g.names)} DNA(s); distances over {g.focus}"]
        if g.note:
            lines.append(f"   note: {g.note}")
        if not g.has_distances:
            lines.append("   " + ", ".join(g.names) + ("" if len(g.names) > 1 else "  (nothing to compare with)"))
            continue
        lines.append("   clustered order: " + " ".join(g.names))
        if len(g.names) <= 12:
            pw = g.pairwise
            idx = [pw.names.index(n) for n in g.names]
            mrows = [[""] + g.names]
            for a in idx:
                mrows.append([pw.names[a]] + ["·" if a == b else fmt_distance(pw.distance[a, b]) for b in idx])
            lines += ["   " + l for l in _columns(mrows, numeric=set(range(1, len(g.names) + 1)))]
        else:
            lines.append("   (matrix of more than 12 DNAs: see the HTML report or 'vdna matrix --csv')")
    lines.append("")
    for e in report.entries:
        if e.problem:
            lines.append(f"{e.name}: BROKEN ({e.problem})")
            continue
        m = e.meta
        lines.append(f"{e.name}: {m.get('num_images')} images, {m.get('extractor')}, {','.join(m.get('kinds', []))}, "
                     f"created {_created(m)}, {_origin(m)}"
                     + (f", {len(e.thumbnails)} thumbnails" if e.thumbnails else ""))
        nb = report.neighbours(e.name)
        if nb:
            lines.append("  nearest: " + " · ".join(f"{n} {fmt_distance(d)}" for n, d in nb))
            prof = report.profile(e.name)
            lines.append(f"  per layer vs {prof[0]} (median over the group): "
                         + " · ".join(f"{l} {fmt_distance(d)} ({fmt_distance(med)})" for l, d, med in prof[1]))
    for n in report.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def _columns(rows: list[list[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


# -- HTML -------------------------------------------------------------------------------
def _asset(name: str) -> str:
    return resources.files("vdnacli").joinpath("report_assets", name).read_text(encoding="utf-8")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _anchor(name: str) -> str:
    return "entry-" + name  # entry names are [A-Za-z0-9._+-]: valid in ids and fragments


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def _heatmap_data(g: Group) -> dict:
    pw = g.pairwise
    idx = [pw.names.index(n) for n in g.names]
    m = pw.distance[np.ix_(idx, idx)]
    iu = np.triu_indices(len(idx), 1)
    upper = m[iu]
    vmax = float(np.percentile(upper, 98)) if upper.size else 1.0
    return {"names": g.names, "values": [_sig(v) for v in upper.tolist()], "vmax": _sig(vmax or 1.0),
            "vmin": _sig(float(upper.min())) if upper.size else 0.0}


def thumbs_per_card(report: CatalogReport, limit: int = THUMBS_PER_CARD, budget: int = THUMBS_BUDGET) -> int:
    """How many thumbnails each card shows: `limit`, fewer when the page's budget needs it."""
    kept = [e.thumbnails for e in report.entries if e.thumbnails]
    if not kept or limit <= 0:
        return 0
    per_image = 4 / 3 * sum(t.nbytes for t in kept) / sum(len(t) for t in kept) + 40  # base64 + <img> markup
    k = int(max(1, min(limit, budget // (per_image * len(kept)))))
    return k if k == limit or k < 8 else k - k % 8  # whole rows of the 8-column grid


def render_html(report: CatalogReport, thumbnails: int = THUMBS_PER_CARD, budget: int = THUMBS_BUDGET) -> str:
    per_card = thumbs_per_card(report, thumbnails, budget)
    groups = [g for g in report.groups]
    data = {"groups": [_heatmap_data(g) if g.has_distances else None for g in groups]}
    body = [_header(report), _catalog_table(report), _distances(report), _cards(report, per_card)]
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = f"vdna catalog · {report.registry}"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{_e(title)}</title>\n<style>\n{_asset('report.css')}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n<div id=\"tip\" role=\"tooltip\" hidden></div>\n"
        f"<script type=\"application/json\" id=\"report-data\">{payload}</script>\n"
        f"<script>\n{_asset('report.js')}</script>\n</body></html>\n"
    )


def _header(report: CatalogReport) -> str:
    n = len(report.entries)
    broken = sum(1 for e in report.entries if e.problem)
    focus = []
    if report.mask:
        focus.append(f"mask <b>{_e(report.mask)}</b>")
    if report.layers:
        focus.append("layers <b>" + _e(", ".join(report.layers)) + "</b>")
    sub = (f"{n} DNA{'s' if n != 1 else ''} in {len(report.groups)} group{'s' if len(report.groups) != 1 else ''}"
           + (f" · <span class=\"bad\">{broken} unreadable</span>" if broken else "")
           + " · distances: exact EMD in bin units" + (" · " + ", ".join(focus) if focus else "")
           + f" · generated {_e(report.generated[:16].replace('T', ' '))} UTC by vdna {_e(__version__)}")
    notes = "".join(f"<p class=\"note\">{_e(x)}</p>" for x in report.notes)
    return (f"<header class=\"top\"><div class=\"wrap\"><h1>Catalog <span class=\"reg\">{_e(report.registry)}</span></h1>"
            f"<p class=\"sub\">{sub}</p><nav><a href=\"#catalog\">Catalog</a><a href=\"#distances\">Distances</a>"
            f"<a href=\"#entries\">Entries</a><input id=\"filter\" type=\"search\" placeholder=\"Filter by name…\" "
            f"aria-label=\"Filter entries by name\"></nav>{notes}</div></header>")


def _catalog_table(report: CatalogReport) -> str:
    head = ("<thead><tr><th data-type=\"text\" aria-sort=\"ascending\">Name</th><th data-type=\"num\">Images</th>"
            "<th data-type=\"text\">Extractor</th><th data-type=\"text\">Created</th><th data-type=\"num\">Size</th>"
            "<th data-type=\"text\">Group</th><th data-type=\"text\">Nearest</th><th data-type=\"num\">EMD</th>"
            "</tr></thead>")
    rows = []
    for e in report.entries:
        a = _anchor(e.name)
        if e.problem:
            rows.append(f"<tr data-name=\"{_e(e.name)}\" class=\"broken\"><td data-v=\"{_e(e.name)}\">"
                        f"<a href=\"#{_e(a)}\">{_e(e.name)}</a></td><td data-v=\"-1\">—</td>"
                        f"<td colspan=\"6\" class=\"bad\" data-v=\"\">unreadable: {_e(e.problem)}</td></tr>")
            continue
        m = e.meta
        nb = report.neighbours(e.name, 1)
        g = report.groups[e.group] if e.group is not None else None
        near = (f"<a href=\"#{_e(_anchor(nb[0][0]))}\" class=\"nb\">{_e(nb[0][0])}</a>" if nb else "—")
        rows.append(
            f"<tr data-name=\"{_e(e.name)}\"><td data-v=\"{_e(e.name)}\"><a href=\"#{_e(a)}\">{_e(e.name)}</a></td>"
            f"<td class=\"num\" data-v=\"{int(m.get('num_images') or 0)}\">{int(m.get('num_images') or 0):,}</td>"
            f"<td data-v=\"{_e(m.get('extractor'))}\">{_e(m.get('extractor'))}</td>"
            f"<td data-v=\"{_e(m.get('created') or '')}\">{_e(_created(m))}</td>"
            f"<td class=\"num\" data-v=\"{e.size_bytes or 0}\">{_e(human_bytes(e.size_bytes))}</td>"
            f"<td data-v=\"{e.group if e.group is not None else 999999}\">{_e(g.title if g else '—')}</td>"
            f"<td data-v=\"{_e(nb[0][0] if nb else '~')}\">{near}</td>"
            f"<td class=\"num\" data-v=\"{nb[0][1] if nb else 'Infinity'}\">{fmt_distance(nb[0][1]) if nb else '—'}</td></tr>")
    return (f"<section id=\"catalog\" class=\"wrap\"><h2>Catalog</h2><p class=\"hint\">Click a column to sort. "
            f"EMD: distance to the nearest DNA of the same group (0 = identical distributions).</p>"
            f"<div class=\"table-wrap\"><table id=\"catalog-table\">{head}<tbody>{''.join(rows)}</tbody></table></div>"
            f"</section>")


def _distances(report: CatalogReport) -> str:
    parts = []
    for gi, g in enumerate(report.groups):
        note = f"<p class=\"note\">{_e(g.note)}</p>" if g.note else ""
        head = f"<h3>{_e(g.title)} <span class=\"count\">{len(g.names)} DNA{'s' if len(g.names) != 1 else ''}</span></h3>"
        if g.has_distances:
            parts.append(
                f"<div class=\"group\" id=\"group-{gi}\">{head}<p class=\"hint\">Exact EMD over {_e(g.focus)}, rows and "
                f"columns in clustered order: dark blocks are groups of alike DNAs. Hover a cell for its value, "
                f"click it to open the row's entry.</p>{note}"
                f"<div class=\"heat\"><canvas class=\"heatmap\" data-group=\"{gi}\" role=\"img\" "
                f"aria-label=\"distance matrix of {_e(g.title)}\"></canvas><div class=\"legend\" data-group=\"{gi}\">"
                f"</div>{_closest_pairs(g)}</div></div>")
        else:
            why = "nothing to compare with" if len(g.names) == 1 and not g.note else ""
            links = ", ".join(f"<a href=\"#{_e(_anchor(n))}\">{_e(n)}</a>" for n in g.names)
            parts.append(f"<div class=\"group\" id=\"group-{gi}\">{head}{note}<p class=\"hint\">{links}"
                         f"{' — ' + why if why else ''}</p></div>")
    return f"<section id=\"distances\" class=\"wrap\"><h2>Distances</h2>{''.join(parts)}</section>"


def _closest_pairs(g: Group, k: int = 5) -> str:
    pw = g.pairwise
    n = len(pw.names)
    iu = np.triu_indices(n, 1)
    vals = pw.distance[iu]
    order = np.argsort(vals, kind="stable")[:k]  # ties: in row order
    items = "".join(f"<li><a href=\"#{_e(_anchor(pw.names[iu[0][t]]))}\">{_e(pw.names[iu[0][t]])}</a> ↔ "
                    f"<a href=\"#{_e(_anchor(pw.names[iu[1][t]]))}\">{_e(pw.names[iu[1][t]])}</a> "
                    f"<span class=\"d\">{fmt_distance(float(vals[t]))}</span></li>" for t in order)
    return f"<div class=\"pairs\"><h4>Most alike</h4><ol>{items}</ol></div>"


def _cards(report: CatalogReport, per_card: int) -> str:
    cards = [_card(report, e, per_card) for e in report.entries]
    return f"<section id=\"entries\" class=\"wrap\"><h2>Entries</h2><div class=\"cards\">{''.join(cards)}</div></section>"


def _card(report: CatalogReport, e: Entry, per_card: int) -> str:
    a = _anchor(e.name)
    if e.problem:
        return (f"<article class=\"card broken\" id=\"{_e(a)}\" data-name=\"{_e(e.name)}\"><h3>{_e(e.name)}</h3>"
                f"<p class=\"bad\">unreadable: {_e(e.problem)}</p><p class=\"hint\">run 'vdna verify'</p></article>")
    m = e.meta
    g = report.groups[e.group]
    thumbs = ""
    if e.thumbnails and per_card:
        t = e.thumbnails.take(per_card)
        imgs = "".join(f"<img src=\"data:{t.mime(i)};base64,{base64.b64encode(b).decode()}\" alt=\"\" width=\"64\" "
                       f"height=\"64\" loading=\"lazy\">" for i, b in enumerate(t.images))
        more = f"<span class=\"hint\">{len(t)} of {m.get('num_images')} images, chosen by content hash</span>"
        thumbs = f"<div class=\"thumbs\">{imgs}</div>{more}"
    else:
        thumbs = "<div class=\"thumbs empty\">no thumbnails kept</div>"
    prov = [
        ("images", f"{int(m.get('num_images') or 0):,}"),
        ("extractor", m.get("extractor")),
        ("kinds", ", ".join(m.get("kinds", [])) + (f" · {m.get('bins')} bins" if m.get("bins") else "")),
        ("origin", _origin(m)),
        ("created", f"{_created(m)} (vdna {m.get('tool_version', '?')})"),
        ("preprocessing", _preprocessing(m)),
        ("size", human_bytes(e.size_bytes)),
        ("images sha256", (str(m.get("images_sha256"))[:16] + "…") if m.get("images_sha256") else "—"),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in prov)
    nbs = report.neighbours(e.name)
    if nbs:
        top = max(d for _, d in nbs) or 1.0
        lis = "".join(f"<li><a class=\"nb\" href=\"#{_e(_anchor(n))}\">{_e(n)}</a><span class=\"bar\"><i style=\"width:"
                      f"{100 * d / top:.1f}%\"></i></span><span class=\"d\">{fmt_distance(d)}</span></li>" for n, d in nbs)
        near = f"<div class=\"near\"><h4>Nearest</h4><ol>{lis}</ol></div>"
    else:
        near = f"<div class=\"near\"><h4>Nearest</h4><p class=\"hint\">{_e(g.note or 'no other DNA in its group')}</p></div>"
    prof = report.profile(e.name)
    profile = _profile_svg(*prof) if prof else ""
    return (f"<article class=\"card\" id=\"{_e(a)}\" data-name=\"{_e(e.name)}\"><header><h3>{_e(e.name)}</h3>"
            f"<span class=\"badge\">{_e(g.title)}</span></header>{thumbs}<div class=\"cols\"><dl>{dl}</dl>{near}</div>"
            f"{profile}</article>")


def _preprocessing(m: dict) -> str:
    p = m.get("preprocessing") or {}
    bits = [f"{p['size']} px" if p.get("size") else None, f"crop {p['crop']}" if p.get("crop") else None,
            p.get("decoder"), m.get("precision") if m.get("precision") not in (None, "fp32") else None]
    return ", ".join(b for b in bits if b) or "—"


def _profile_svg(nearest: str, rows: list[tuple[str, float, float]]) -> str:
    label_w, bar_w, row_h, value_w = 64, 240, 16, 96
    top = max(max(d, med) for _, d, med in rows) or 1.0
    h = row_h * len(rows) + 4
    parts = []
    for k, (layer, d, med) in enumerate(rows):
        y = 2 + k * row_h
        w = bar_w * d / top
        x_med = label_w + bar_w * med / top
        parts.append(
            f"<text x=\"{label_w - 6}\" y=\"{y + 11}\" class=\"lbl\">{_e(layer[:10])}</text>"
            f"<rect x=\"{label_w}\" y=\"{y + 3}\" width=\"{bar_w}\" height=\"9\" class=\"track\"/>"
            f"<rect x=\"{label_w}\" y=\"{y + 3}\" width=\"{max(w, 0.5):.1f}\" height=\"9\" class=\"val\"><title>"
            f"{_e(layer)}: EMD {fmt_distance(d)} to {_e(nearest)}, median {fmt_distance(med)} to the group</title></rect>"
            f"<line x1=\"{x_med:.1f}\" x2=\"{x_med:.1f}\" y1=\"{y + 1}\" y2=\"{y + 14}\" class=\"med\"/>"
            f"<text x=\"{label_w + bar_w + 6}\" y=\"{y + 11}\" class=\"num\">{fmt_distance(d)} / {fmt_distance(med)}</text>")
    width = label_w + bar_w + value_w
    return (f"<div class=\"profile\"><h4>Per layer</h4><p class=\"key\"><i class=\"kv\"></i>EMD to its nearest, "
            f"<a class=\"nb\" href=\"#{_e(_anchor(nearest))}\">{_e(nearest)}</a><i class=\"km\"></i>median EMD to the "
            f"others: a bar short of its tick marks a layer that makes the two alike</p>"
            f"<svg viewBox=\"0 0 {width} {h}\" width=\"{width}\" height=\"{h}\" role=\"img\" "
            f"aria-label=\"per-layer EMD\">{''.join(parts)}</svg></div>")
