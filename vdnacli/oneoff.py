"""One-off comparisons: image sources compared directly, their DNAs computed on the fly and
registered only when asked (`vdna compare ./a ./b`, `vdna nearest ./dir`).

How an operand is read (the same rule everywhere; docs/cli.md, "One-off comparisons"):

1. `-`, a URL or `hf://...` (anything with `://`), or text that cannot be an entry name (a `/`,
   a leading `.` or `~`, a pattern such as `shard-{000..009}.tar`): a source.
2. An entry of the registry: that entry. When a path of the same name exists too, the entry
   wins and a note says so (write `./NAME` for the path): `vdna add faces faces` followed by
   `vdna compare faces digits` keeps comparing the entries.
3. A path that exists: a source.
4. Anything else: no such entry (EntryNotFoundError).

Settings of a computed side: `like`'s (an entry's record, as `vdna add --like`); else, when the
other side is an entry, that entry's, so the two are comparable; else the extractor's defaults
(the same DNA `vdna add NAME SOURCE --extractor E` stores, shards included).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from registry import EntryExistsError, EntryNotFoundError, RegistryNotFoundError, validate_name
from registry.errors import InvalidNameError
from vdnacli.dna import DNA
from vdnacli.errors import ConfigError


@dataclass(frozen=True)
class Operand:
    """One side of a comparison as given: an entry name, or a source to compute."""

    text: str
    entry: str | None = None  # the registry entry it names
    note: str | None = None  # said to the user (an entry that shadows a path of the same name)

    @property
    def is_source(self) -> bool:
        return self.entry is None

    @property
    def label(self) -> str:
        """How results name it: the entry's name, or the source as written."""
        return self.entry or self.text


def _is_entry_name(text: str) -> bool:
    try:
        validate_name(text)
    except (InvalidNameError, ValueError):
        return False
    return True


def operand(catalog, text: str) -> Operand:
    """Read one operand by the module's rule."""
    text = str(text)
    if text == "-" or "://" in text or not _is_entry_name(text):
        return Operand(text)
    if text in catalog.registry:
        note = None
        if os.path.lexists(text):
            note = f"'{text}' is a registry entry and also a path here: using the entry (write ./{text} for the path)"
        return Operand(text, entry=text, note=note)
    if os.path.lexists(text):
        return Operand(text)
    if not catalog.registry.exists:
        raise RegistryNotFoundError(str(catalog.registry.root))
    raise EntryNotFoundError(text, str(catalog.registry.root), catalog.names())


def operands(catalog, texts: list[str]) -> list[Operand]:
    out = [operand(catalog, t) for t in texts]
    if sum(o.text == "-" for o in out) > 1:
        raise ConfigError("only one side can be read from stdin (-)")
    return out


@dataclass
class Computed:
    """A DNA computed for an operand, with its run's report and the notes for the user."""

    operand: Operand
    dna: DNA
    report: object  # vdnacli.pipeline.ComputeReport
    saved: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class OneOffRequest:
    """How to compute the sources of a one-off question (execution choices and settings)."""

    like: str | None = None  # compute with this entry's settings
    extractor: str | None = None  # else this extractor's defaults (None: the configured default)
    default_extractor: str = "efficientnet-lite0"
    kinds: tuple[str, ...] = ()  # kinds the question needs (added to the defaults, not to --like's)
    shards: int | None = None  # None: as `vdna add` (8, or the --like entry's)
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    workers: int = 2
    offline: bool = False
    save: list[str] = field(default_factory=list)  # names to register the computed sides under, in order
    thumbnails: int = 16  # kept with a saved DNA, as `vdna add`
    source_options: object = None  # vdnacli.sources.SourceOptions


def settings_for(catalog, req: OneOffRequest, entry: str | None = None):
    """(ComputeSettings, ranges, notes) of a computed side: --like's, else `entry`'s (the other
    side), else the extractor's defaults plus the kinds the question needs."""
    from vdnacli.build import resolve_settings
    from vdnacli.shards import DEFAULT_SHARDS

    like = req.like or entry
    if like is not None:
        settings, ranges, notes = resolve_settings(catalog, like=like, extractor=req.extractor, shards=req.shards)
        missing = [k for k in req.kinds if k not in settings.kinds]
        if missing:
            raise ConfigError(f"'{like}' holds no {', '.join(missing)} data: this comparison needs it")
        return settings, ranges, notes
    extractor = req.extractor or req.default_extractor
    from vdnacli.settings import ComputeSettings

    kinds = tuple(dict.fromkeys(ComputeSettings.for_extractor(extractor).kinds + tuple(req.kinds)))
    return resolve_settings(catalog, extractor=extractor, kinds=kinds,
                            shards=DEFAULT_SHARDS if req.shards is None else req.shards)


def check_request(catalog, req: OneOffRequest, computed: int) -> None:
    """Checked before anything is computed: options for computing apply only when something is
    computed, and `--save` names one registry entry per computed side."""
    if computed == 0:
        given = [flag for flag, value in (("--like", req.like), ("--extractor", req.extractor),
                                          ("--limit", req.limit), ("--save", req.save)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to images given instead "
                              "of an entry, and every operand here is a registry entry")
        return
    names = req.save
    if not names:
        return
    if len(names) != computed:
        raise ConfigError(f"{computed} side(s) are computed: give --save {computed} name(s) "
                          f"(first side first, e.g. --save A,B), not {len(names)}")
    if len(set(names)) != len(names):
        raise ConfigError("--save names must differ")
    for n in names:
        validate_name(n)
        if n in catalog.registry:
            raise EntryExistsError(n)


def compute_side(catalog, op: Operand, req: OneOffRequest, settings, ranges, save: str | None = None,
                 progress=None) -> Computed:
    """The DNA of a source operand, read back as the registry would store it (so a one-off
    distance equals the distance between the registered entries, to the last bit); registered
    under `save` when given."""
    from vdnacli.extras import require_compute

    require_compute("comparing images (not registry entries)")  # one clear error in the base install
    from vdnacli import dna as dna_mod
    from vdnacli.api import compute
    from vdnacli.pipeline import ComputeReport
    from vdnacli.sources import SourceOptions, open_source

    options = req.source_options or SourceOptions()
    if req.offline:
        options = dataclasses.replace(options, offline=True)
    source = open_source(op.text, options).select(req.limit, req.seed)
    report = ComputeReport()
    name = save or _label_name(op.text)
    dna = compute(source, settings=settings, ranges=ranges, device=req.device, batch_size=req.batch_size,
                  workers=req.workers, offline=req.offline, report=report, progress=progress, name=name)
    dna.meta["origin"] = {**source.origin, "limit": req.limit, "seed": req.seed if req.limit else None}
    if settings.like:
        dna.meta["origin"]["like"] = settings.like
    if save is not None:
        from vdnacli.build import thumbnails_of

        dna.thumbnails = thumbnails_of(source, dna.image_hashes, req.thumbnails)
        catalog.put(save, dna)
    meta, arrays = catalog.entry(dna)
    stored = dna_mod.from_arrays(meta, arrays)
    stored.meta["name"] = save or op.text
    return Computed(op, stored, report, save)


def _label_name(text: str) -> str:
    """An entry-like name for a DNA never stored (its record's `name`)."""
    base = Path(text.rstrip("/")).name or "source"
    return base if _is_entry_name(base) else "source"


# -- resolving operands -------------------------------------------------------------------
def resolve_pair(catalog, texts: list[str], req: OneOffRequest, progress_for=None):
    """(sides, computed, notes): each operand as an entry name or a computed DNA (in order),
    the Computed sides, and notes on how operands were read."""
    ops = operands(catalog, texts)
    entries = [o.entry for o in ops if o.entry]
    to_compute = [o for o in ops if o.is_source]
    check_request(catalog, req, len(to_compute))
    names = iter(req.save)
    sides: list[str | DNA] = []
    computed: list[Computed] = []
    shared = None  # both sides computed: one set of settings, resolved once
    for o in ops:
        if o.entry:
            sides.append(o.entry)
            continue
        if shared is None:
            shared = settings_for(catalog, req, entries[0] if entries else None)
        settings, ranges, notes = shared
        save = next(names, None)
        with _progress(progress_for, o, settings) as update:
            c = compute_side(catalog, o, req, settings, ranges, save, update)
        c.notes = list(notes) if not computed else []
        computed.append(c)
        sides.append(c.dna)
    return sides, computed, [o.note for o in ops if o.note]


def _progress(progress_for, op, settings):
    from contextlib import nullcontext

    return progress_for(op, settings) if progress_for is not None else nullcontext()


def resolve_one(catalog, text: str, req: OneOffRequest, progress_for=None):
    """(side, Computed or None, notes): one operand as an entry name or a computed DNA (with
    --like's settings, else the extractor's defaults)."""
    op = operand(catalog, text)
    if op.entry:
        check_request(catalog, req, 0)
        return op.entry, None, [op.note] if op.note else []
    check_request(catalog, req, 1)
    settings, ranges, notes = settings_for(catalog, req)
    with _progress(progress_for, op, settings) as update:
        c = compute_side(catalog, op, req, settings, ranges, req.save[0] if req.save else None, update)
    c.notes = list(notes)
    return c.dna, c, []


def nearest(catalog, side, top: int = 5, metric: str = "emd", layers=None, neurons=None, exact: bool = False,
            weights=None, saved: str | None = None):
    """`catalog.nearest` of an entry name or a computed DNA: (ranked, skipped). A computed
    query is compared only with the entries it is comparable with (same extractor, weights,
    ranges, bins, layers); the others are skipped, by name. `saved`: the entry the query was
    just registered as, left out of the answer."""
    ranked, skipped = catalog.nearest(side, top + bool(saved), metric, layers, neurons, exact=exact, weights=weights)
    if saved:
        ranked = [(n, d) for n, d in ranked if n != saved][:top]
        skipped = [n for n in skipped if n != saved]
    return ranked, skipped
