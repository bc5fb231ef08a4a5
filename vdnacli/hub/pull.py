"""`pull`: bring the DNAs (and masks) of a Hub repo into the registry, verified, all or nothing.

1. The revision is resolved to one commit with `repo_info(files_metadata=True)` (offline: the HF
   cache, with `scan_cache_dir`); every name in the answer is validated (registry.names).
2. The selected files are downloaded at that commit, in parallel, with `snapshot_download`
   (`allow_patterns` = exactly those files), into the standard HF cache; a guard on the HTTP
   client refuses commit ids and ETags unsafe as cache paths (hub.cache).
3. Each file is checked against the listing's checksum (sha256 of LFS files, git blob id
   otherwise); a mismatch evicts the cached copy.
4. Every DNA and mask is parsed with caps from its own metadata (no array larger than its
   neurons x bins allow is read) and sane numbers; all of them before anything is written.
5. The DNAs go in with one `Registry.put_many` (all or nothing, crash-safe), then the masks
   with another; each entry is conditional on the version seen in step 4's plan.
"""
from __future__ import annotations

import glob
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from registry import RegistryError, layout, names
from vdnacli import __version__
from vdnacli import dna as dna_mod
from vdnacli.errors import ConfigError, FormatError, IncompatibleDNAError, VdnaError
from vdnacli.hub.cache import HubContext, guard_session, hub_context, remember_ref
from vdnacli.hub.card import DNA_DIR, MASK_DIR
from vdnacli.hub.errors import (
    HubError,
    HubIntegrityError,
    HubNotFoundError,
    HubOfflineError,
    hub_errors,
    network_errors,
)
from vdnacli.hub.listing import Listing, cached_listing, remote_listing, verify_file

REPO_TYPES = ("dataset", "model", "space")
MAX_WORKERS = 8  # parallel downloads
DEFAULT_ENDPOINT = "https://huggingface.co"


# -- what a repo holds ---------------------------------------------------------------------
@dataclass
class _Item:
    kind: str  # "dna" | "mask"
    fmt: str  # "vdna-entry" | "upstream-vdna"
    key: str  # path in the repo without its extension
    files: list[str]
    explicit: bool = False  # named exactly by --path
    name: str = ""


def discover(paths: Sequence[str], select: str | None = None) -> list[_Item]:
    """DNAs and masks among a repo's files; `select` (--path) keeps a file, a pair stem or a folder."""
    present = set(paths)
    sel = select.strip().strip("/") if select else None
    items = []
    for p in sorted(present):
        if p.endswith(".h5"):
            if p.startswith(MASK_DIR + "/"):
                items.append(_Item("mask", "vdna-entry", p[:-3], [p]))
            elif p.startswith(DNA_DIR + "/") or p == sel:
                items.append(_Item("dna", "vdna-entry", p[:-3], [p]))
        elif p.endswith(".json") and p[:-5] + ".npz" in present:
            items.append(_Item("dna", "upstream-vdna", p[:-5], [p, p[:-5] + ".npz"]))
    if sel:
        items = [i for i in items if sel in i.files or i.key == sel or i.key.startswith(sel + "/")]
        for i in items:
            i.explicit = sel in i.files or i.key == sel
    return items


def safe_name(text: str) -> str:
    """An entry name made from a repo path (anything outside the name alphabet becomes '-')."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-._+")[:128].rstrip("-._+")
    if name.endswith(".h5"):
        name = name[:-3] + "-h5"
    return names.entry_name(name or "dna")


def _assign_names(items: list[_Item], name: str | None) -> None:
    dnas = [i for i in items if i.kind == "dna"]
    if name is not None:
        names.entry_name(name)
        if len(dnas) != 1:
            listed = ", ".join(i.key for i in dnas[:6]) + (" …" if len(dnas) > 6 else "")
            raise ConfigError(f"--name needs exactly one DNA, the selection holds {len(dnas)} ({listed}); "
                              "pick one with --path")
        dnas[0].name = name
    for kind in ("dna", "mask"):
        group = [i for i in items if i.kind == kind and not i.name]
        stems = Counter(i.key.rsplit("/", 1)[-1] for i in group)
        for i in group:
            stem = i.key.rsplit("/", 1)[-1]
            i.name = safe_name(stem if stems[stem] == 1 else i.key)
        taken = Counter(i.name for i in items if i.kind == kind)
        clash = [n for n, c in taken.items() if c > 1]
        if clash:
            raise ConfigError(f"several {kind}s of the repo map to the entry name '{clash[0]}': pull them one at a "
                              "time with --path and --name")


# -- reports -------------------------------------------------------------------------------
@dataclass
class PulledEntry:
    name: str
    kind: str  # "dna" | "mask"
    format: str
    status: str  # "added" | "replaced" | "unchanged"
    extractor: str | None
    num_images: int | None
    kinds: list[str]
    files: dict[str, str]  # path in repo -> sha256


@dataclass
class PullReport:
    repo_id: str
    repo_type: str
    revision: str  # the commit
    requested_revision: str | None
    from_cache: bool
    offline: bool
    entries: list[PulledEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["entries"] = [dict(e.__dict__) for e in self.entries]
        return d


def check_request(repo_id: str, repo_type: str, revision: str | None) -> None:
    """The user's repo id, type and revision, validated before any request or file."""
    if repo_type not in REPO_TYPES:
        raise ConfigError(f"unknown repo type '{repo_type}': use one of {', '.join(REPO_TYPES)}")
    try:
        names.repo_id(repo_id)
        if revision is not None:
            names.revision(revision)
    except names.InvalidNameError as e:
        raise ConfigError(str(e)) from None


# -- pull ----------------------------------------------------------------------------------
@dataclass
class _Loaded:
    item: _Item
    meta: dict
    obj: object  # a DNA, or the arrays of a mask
    files: dict[str, str]
    status: str = "added"
    stamp: tuple | None = None  # version of the existing entry the plan saw (None: absent)


def pull(catalog, repo_id: str, path: str | None = None, name: str | None = None, revision: str | None = None,
         repo_type: str = "dataset", offline: bool = False, replace: bool = False, progress=None) -> PullReport:
    """Bring the DNAs (and masks) of a Hub repo, or those `path` selects, into the registry.

    Nothing is written unless every selected file downloads, matches the Hub's checksum and
    parses; entries already pulled from the same files are left as they are ("unchanged").
    `progress(bytes done, bytes in all)` follows the downloads (huggingface_hub's own bars are
    then not drawn).
    """
    check_request(repo_id, repo_type, revision)
    ctx = hub_context(offline)
    report = PullReport(repo_id, repo_type, "", revision, False, ctx.offline)
    with hub_errors(ctx, repo_id, repo_type, revision):
        if not ctx.offline:
            guard_session()
        listing = _listing(ctx, repo_id, repo_type, revision, report)
        report.revision, report.from_cache = listing.commit, listing.from_cache
        items = discover(list(listing.files), path)
        if not any(i.kind == "dna" for i in items) and not (path and items):
            raise _nothing_found(repo_id, repo_type, listing, path, ctx)
        _assign_names(items, name)
        # upstream pairs may hold activation ranges etc.: read their JSON first, skip the others' arrays
        heads = [i.files[0] for i in items if i.fmt == "upstream-vdna"]
        fetched = _fetch_verified(ctx, repo_id, repo_type, listing, heads, progress)
        items = [i for i in items
                 if i.fmt != "upstream-vdna" or _upstream_is_dna(fetched[i.files[0]][0], i, repo_id, report)]
        rest = [f for i in items for f in i.files if f not in fetched]
        fetched.update(_fetch_verified(ctx, repo_id, repo_type, listing, rest, progress))
        if not listing.from_cache and listing.storage is not None:
            remember_ref(listing.storage, revision, listing.commit)
        loaded = _load_all(items, fetched, listing, repo_id, repo_type, report, ctx)
    _plan_writes(catalog, loaded, replace)
    _write_all(catalog, loaded)
    for ld in loaded:
        m = ld.meta
        report.entries.append(PulledEntry(
            name=ld.item.name, kind=ld.item.kind, format=ld.item.fmt, status=ld.status, extractor=m.get("extractor"),
            num_images=m.get("num_images") if ld.item.kind == "dna" else None,
            kinds=list(m.get("kinds", [])) if ld.item.kind == "dna" else [m.get("kind", "")], files=ld.files))
    return report


def _listing(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None, report: PullReport) -> Listing:
    if ctx.offline:
        return cached_listing(ctx, repo_id, repo_type, revision)
    from huggingface_hub import HfApi

    try:
        api = HfApi(endpoint=ctx.endpoint, library_name="vdna", library_version=__version__)
        return remote_listing(api, repo_id, repo_type, revision)
    except network_errors() as e:  # offline-first: fall back to a cached copy of the same revision
        try:
            listing = cached_listing(ctx, repo_id, repo_type, revision)
        except HubOfflineError:
            raise e from None
        report.warnings.append(f"{ctx.shown_endpoint} unreachable ({type(e).__name__}): used the cached copy of "
                               f"commit {listing.commit[:12]}")
        return listing


def _nothing_found(repo_id: str, repo_type: str, listing: Listing, path: str | None, ctx: HubContext) -> HubError:
    where = f"{repo_type} repo '{repo_id}' (commit {listing.commit[:12]})"
    if listing.from_cache and ctx.offline:
        return HubOfflineError(f"the cached copy of {where} holds no DNA files{' at ' + repr(path) if path else ''}: "
                               f"pull it once online{' with --path ' + path if path else ''}")
    if path:
        others = [i.key for i in discover(list(listing.files)) if i.kind == "dna"]
        hint = f"DNAs there: {', '.join(others[:8])}" if others else "it holds no DNA files at all"
        return HubNotFoundError(f"nothing matches --path {path!r} in {where}; {hint}")
    return HubNotFoundError(f"{where} holds no DNA files (neither {DNA_DIR}/<name>.h5 nor upstream <stem>.json + "
                            f"<stem>.npz pairs): check the repo id, --repo-type and --revision")


def _fetch_verified(ctx: HubContext, repo_id: str, repo_type: str, listing: Listing,
                    files: list[str], progress=None) -> dict[str, tuple[Path, str]]:
    """Each file at the listed commit (downloaded in parallel, or from the cache), checked: path and sha256."""
    if not files:
        return {}
    if listing.from_cache:
        local = {f: listing.local[f] for f in files}
    else:
        local = _download(ctx, repo_id, repo_type, listing, files, progress)
    return {f: (local[f], verify_file(local[f], listing.files[f], ctx, repo_id)) for f in files}


def _forwarding_tqdm(progress):
    """A tqdm class for huggingface_hub that draws nothing and passes the bytes of its byte
    bars to `progress(done, total)` (files bars, and the separate transfer bar, are silent)."""
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class Forward(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            self._forward = kwargs.get("unit") == "B" and not str(kwargs.get("name", "")).endswith(".transfer")
            self._bytes = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self._forward and n:
                self._bytes += int(n)
                progress(self._bytes, int(self.total) if self.total else None)
            return super().update(n)

    return Forward


def _download(ctx: HubContext, repo_id: str, repo_type: str, listing: Listing, files: list[str],
              progress=None) -> dict[str, Path]:
    from huggingface_hub import snapshot_download

    with warnings.catch_warnings():  # a full cache is reported as one error line when the write fails
        warnings.filterwarnings("ignore", message="Not enough free disk space", category=UserWarning)
        snap = Path(snapshot_download(
            repo_id, repo_type=repo_type, revision=listing.commit, cache_dir=str(ctx.cache_dir), endpoint=ctx.endpoint,
            allow_patterns=[glob.escape(f) for f in files], max_workers=MAX_WORKERS, library_name="vdna",
            library_version=__version__, tqdm_class=_forwarding_tqdm(progress) if progress is not None else None))
    if snap.name != listing.commit:
        raise HubIntegrityError(f"huggingface_hub stored {repo_id} as commit {snap.name[:40]!r}, not the listed "
                                f"{listing.commit}: run the pull again")
    listing.storage = snap.parent.parent
    out = {}
    for f in files:
        p = snap / f
        if not p.is_file():
            raise HubNotFoundError(f"{f} of {repo_id} was not downloaded (it disappeared from the Hub?); run the "
                                   "pull again")
        out[f] = p
    return out


def _load_all(items: list[_Item], fetched: dict[str, tuple[Path, str]], listing: Listing, repo_id: str,
              repo_type: str, report: PullReport, ctx: HubContext) -> list[_Loaded]:
    """Parse and validate every selected DNA and mask; raise before anything is written."""
    local = {f: p for f, (p, _) in fetched.items()}
    pulled = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = []
    for item in items:
        where = f"{item.files[0]} in {repo_id}"
        if item.kind == "mask":
            loaded = _load_mask(item, local, where, report)
            if loaded is None:
                continue
            meta, obj = loaded
        else:
            obj = _load_dna(item, local, where)
            meta = obj.meta
        _check_extractor(meta, f"{item.kind} '{item.key}' of {repo_id}", report.warnings)
        origin = {"kind": "hub", "repo_id": repo_id, "repo_type": repo_type, "revision": listing.commit,
                  "requested_revision": report.requested_revision,
                  "files": {f: fetched[f][1] for f in item.files}, "format": item.fmt, "pulled": pulled}
        if ctx.shown_endpoint != DEFAULT_ENDPOINT:
            origin["endpoint"] = ctx.shown_endpoint  # never the user:password of a private mirror
        if meta.get("origin") is not None:
            origin["published_origin"] = meta["origin"]
        meta["origin"] = origin
        meta["name"] = item.name
        out.append(_Loaded(item, meta, obj, origin["files"]))
    if not out:
        raise HubNotFoundError(f"{repo_type} repo '{repo_id}' holds no DNA this vdna can import "
                               f"({'; '.join(report.warnings) or 'nothing importable'})")
    return out


def _upstream_is_dna(json_path: Path, item: _Item, repo_id: str, report: PullReport) -> bool:
    """Upstream pairs also hold activation ranges or layer Gaussians: skip those (an error if asked for)."""
    import json

    where = f"{item.files[0]} in {repo_id}"
    try:
        if json_path.stat().st_size > 16 << 20:
            raise FormatError(f"{where} is too large for a DNA's JSON ({json_path.stat().st_size:,} bytes)")
        kind = json.loads(json_path.read_text()).get("type")
    except (ValueError, OSError, AttributeError, RecursionError):
        raise FormatError(f"{where} is not a JSON object") from None
    from vdnacli.interop import TYPES

    if kind in TYPES:
        return True
    if item.explicit:
        raise FormatError(f"{where} is an upstream '{kind}' file; vdna imports {', '.join(TYPES)} DNAs only")
    report.warnings.append(f"skipped {item.key}: upstream '{kind}' files are not DNAs vdna can import")
    return False


def _load_dna(item: _Item, local: dict[str, Path], where: str):
    """One DNA, validated: sizes within the caps its metadata allows, sane numbers, consistent arrays."""
    from vdnacli.integrity import entry_caps, refuse_insane

    if item.fmt == "upstream-vdna":
        from vdnacli.interop import import_upstream

        try:
            dna = import_upstream(local[item.files[0]])
        except VdnaError as e:
            raise FormatError(f"{where}: {e}") from None
    else:
        meta, arrays = _read_entry_file(local[item.files[0]], where, entry_caps)
        if meta.get("format", "vdna-dna") != "vdna-dna":
            raise FormatError(f"{where} is a {meta.get('format')!r} entry, not a DNA")
        refuse_insane(meta, arrays, where)
        hashes = arrays.get("images/hashes")
        if hashes is not None and (hashes.dtype.kind != "u" or hashes.itemsize != 1 or hashes.ndim != 2
                                   or hashes.shape[1] != 16):
            raise FormatError(f"{where}: images/hashes must be a uint8 [n, 16] array")
        try:
            dna = dna_mod.from_arrays(meta, arrays)
        except (FormatError, TypeError, ValueError, KeyError) as e:
            raise FormatError(f"{where}: {e}") from None
    refuse_insane(dna.meta, {f"hist/{l}": h for l, h in (dna.hist or {}).items()}, where)
    return dna


def _read_entry_file(path: Path, where: str, caps) -> tuple[dict, dict]:
    try:
        return layout.read_entry(path, verify=True, caps=caps)
    except RegistryError as e:
        raise FormatError(f"{where} is not a valid vdna entry ({e})") from None
    except MemoryError:
        raise FormatError(f"{where} is too large to read in the memory available") from None


def _load_mask(item: _Item, local: dict[str, Path], where: str, report: PullReport):
    from vdnacli.integrity import entry_caps

    try:
        from vdnacli.masks import Mask
    except ImportError:  # masks arrive with a later release
        report.warnings.append(f"skipped mask {item.key}: this vdna cannot store masks")
        return None
    meta, arrays = _read_entry_file(local[item.files[0]], where, entry_caps)
    if meta.get("format") != "vdna-mask":
        raise FormatError(f"{where} is not a mask entry")
    try:
        Mask.from_entry(meta, arrays)
    except VdnaError as e:
        raise FormatError(f"{where}: {e}") from None
    return meta, arrays


def _check_extractor(meta: dict, what: str, warnings: list[str]) -> None:
    """Refuse data whose extractor name is ours but whose network is not; note unknown extractors."""
    from vdnacli.extractors import get_spec

    ext = meta.get("extractor")
    try:
        spec = get_spec(str(ext))
    except VdnaError:
        warnings.append(f"{what}: extractor '{ext}' is not available in this vdna; it can be compared only with "
                        "DNAs of the same extractor")
        return
    try:
        layers = [(str(l), int(n)) for l, n in meta.get("layers", [])]
    except (TypeError, ValueError):
        raise FormatError(f"{what}: malformed layer list") from None
    ours = [(str(l), int(n)) for l, n in spec.layers]
    if layers != ours:
        raise IncompatibleDNAError(
            f"{what} says extractor '{ext}' but has {_layers_text(layers)} where this vdna's '{ext}' has "
            f"{_layers_text(ours)}: it could never be compared with DNAs computed here; ask the publisher which "
            "vdna version made it, or pull it with a vdna that defines that extractor the same way")
    ws = meta.get("weights_sha256")
    if ws and spec.weights.sha256 and ws != spec.weights.sha256:
        warnings.append(f"{what}: computed with other '{ext}' weights (sha256 {str(ws)[:12]}… vs "
                        f"{spec.weights.sha256[:12]}…); comparisons with DNAs computed here will be refused")


def _layers_text(layers: list[tuple[str, int]]) -> str:
    shown = ", ".join(l for l, _ in layers[:4]) + (", …" if len(layers) > 4 else "")
    return f"{len(layers)} layers / {sum(n for _, n in layers)} neurons ({shown})"


def _same_pull(existing: dict | None, origin: dict) -> bool:
    eo = (existing or {}).get("origin") or {}
    return (eo.get("kind") == "hub" and eo.get("repo_id") == origin["repo_id"]
            and eo.get("repo_type") == origin["repo_type"] and eo.get("files") == origin["files"])


def _registry_for(catalog, kind: str):
    return catalog.registry if kind == "dna" else catalog.masks


def _plan_writes(catalog, loaded: list[_Loaded], replace: bool) -> None:
    """Decide added / replaced / unchanged for each entry and remember the version seen; refuse
    conflicts before writing anything."""
    for ld in loaded:
        reg = _registry_for(catalog, ld.item.kind)
        ld.stamp = reg.stamp(ld.item.name)
        existing = reg.meta(ld.item.name) if ld.stamp is not None else None
        if existing is None:
            ld.status = "added"
        elif _same_pull(existing, ld.meta["origin"]):
            ld.status = "unchanged"
        elif replace:
            ld.status = "replaced"
        else:
            raise HubError(f"an entry named '{ld.item.name}' already exists ({_describe_origin(existing)}): pull "
                           "with --replace to overwrite it, or --name (with --path) to choose another name")


def _describe_origin(meta: dict) -> str:
    o = meta.get("origin") or {}
    if o.get("kind") == "hub":
        return f"pulled from {o.get('repo_id')} at {str(o.get('revision'))[:12]}"
    return f"from {o.get('kind', 'unknown origin')}"


def _write_all(catalog, loaded: list[_Loaded]) -> None:
    """The DNAs in one group commit, then the masks in another: all or nothing for each, and
    each entry only if it is still the version the plan saw (else EntryChangedError)."""
    from vdnacli.catalog import Catalog

    for kind in ("dna", "mask"):
        todo = [ld for ld in loaded if ld.item.kind == kind and ld.status != "unchanged"]
        if todo:  # a DNA's stored arrays include the sketch, computed here, never taken from the file
            items = [(ld.item.name, *(Catalog.entry(ld.obj) if kind == "dna" else (ld.meta, ld.obj))) for ld in todo]
            _registry_for(catalog, kind).put_many(items, replace=True, expect={ld.item.name: ld.stamp for ld in todo})
