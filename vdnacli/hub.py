"""Pull DNAs (and masks) from the Hugging Face Hub into the registry; push them there.

Published layout (documented in docs/hub.md):
  README.md          dataset card written by `push`: one marked section per DNA and mask
  dnas/<name>.h5     a DNA in the registry's own entry format (registry/layout.py)
  masks/<name>.h5    a mask (vdnacli/masks.py) in the same entry format
Upstream vdna 0.1.1 pairs (<stem>.json + <stem>.npz) anywhere in a repo are pulled too.

A pull resolves the revision to one commit, downloads the selected files at that commit
into the standard HF cache, checks each file against the Hub's metadata (sha256 of LFS
files, git blob id of the others), parses and validates every DNA, and only then writes
the entries, one Catalog.put each: a failed pull leaves the registry as it was. Offline
(`offline=True` or HF_HUB_OFFLINE=1, read at call time) uses the cache only, and checks
each cached file against the checksum its cache blob is named by.

Tokens come only from huggingface_hub itself (HF_TOKEN or `hf auth login`).
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from registry import Registry, RegistryError, validate_name
from registry import layout
from vdnacli import __version__
from vdnacli import dna as dna_mod
from vdnacli.errors import ConfigError, FormatError, IncompatibleDNAError, VdnaError

REPO_TYPES = ("dataset", "model", "space")
DNA_DIR, MASK_DIR, CARD = "dnas", "masks", "README.md"
UPSTREAM_KINDS = ("histogram", "gaussian")
REQUEST_TIMEOUT = 30  # seconds for metadata calls; downloads use huggingface_hub's own
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
# keys that name files or folders on the publisher's machine: published only with --include-filenames
_FILENAME_KEYS = {"source_name", "source", "filename", "filenames", "file_name", "path", "paths"}
_NEVER_PUBLISHED = {"endpoint"}  # e.g. the URL of a private Hub mirror a DNA was pulled from


class HubError(VdnaError):
    """A pull or push that cannot be done; the message names the next step."""


class HubNotFoundError(HubError):
    """Repo, revision or DNA files missing."""


class HubAuthError(HubError):
    """Private or gated repo without a (sufficient) token, or a push without a write token."""


class HubOfflineError(HubError):
    """Offline mode without a cached copy, or a push while offline."""


class HubNetworkError(HubError):
    """The Hub cannot be reached."""


class HubIntegrityError(HubError):
    """A downloaded file does not match the Hub's checksum."""


# -- where: endpoint, cache and offline mode, read at call time ----------------------------
@dataclass(frozen=True)
class HubContext:
    endpoint: str
    cache_dir: Path
    offline: bool

    def repo_url(self, repo_id: str, repo_type: str) -> str:
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
        return f"{self.endpoint}/{prefix}{repo_id}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_context(offline: bool = False) -> HubContext:
    """Endpoint, cache folder and offline mode from the environment *now*.

    huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import; reading
    them here too (and passing endpoint/cache_dir/local_files_only explicitly) makes the
    variables and the --offline flag work within one process.
    """
    from huggingface_hub import constants

    env = os.environ
    endpoint = (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if env.get("HF_HUB_CACHE"):
        cache = env["HF_HUB_CACHE"]
    elif env.get("HF_HOME"):
        cache = os.path.join(env["HF_HOME"], "hub")
    else:
        cache = constants.HF_HUB_CACHE
    off = bool(offline) or _truthy(env.get("HF_HUB_OFFLINE")) or bool(constants.HF_HUB_OFFLINE)
    return HubContext(endpoint=endpoint, cache_dir=Path(os.path.expandvars(cache)).expanduser(), offline=off)


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return get_token() is not None
    except Exception:  # a broken token file is reported by the request that needs it
        return False


class _Never(Exception):
    """Stands for an exception class this huggingface_hub version does not have."""


class _HfErrors:
    """huggingface_hub's exception classes, looked up by name so older releases still work."""

    def __getattr__(self, name: str):
        import huggingface_hub.errors as errors
        import huggingface_hub.utils as utils

        return getattr(errors, name, None) or getattr(utils, name, None) or _Never


def _hf_errors() -> _HfErrors:
    return _HfErrors()


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of whichever HTTP stack this huggingface_hub uses."""
    kinds: list[type[BaseException]] = []
    for mod in ("httpx2", "httpx"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "TransportError"):
            kinds.append(m.TransportError)
    req = sys.modules.get("requests")
    if req is not None:
        kinds += [req.exceptions.ConnectionError, req.exceptions.Timeout]
    return tuple(kinds) or (ConnectionError,)


@contextmanager
def _hub_errors(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None, pushing: bool = False):
    """Translate huggingface_hub's exceptions into one-line errors that say what to do."""
    hf = _hf_errors()
    url = ctx.repo_url(repo_id, repo_type)
    login = "set HF_TOKEN or run 'hf auth login'"
    try:
        yield
    except VdnaError:
        raise
    except hf.GatedRepoError:
        if _has_token():
            raise HubAuthError(f"{repo_id} is a gated repo and your account has no access yet: "
                               f"accept its conditions at {url}, then run the command again") from None
        raise HubAuthError(f"{repo_id} is a gated repo: accept its conditions at {url} and authenticate "
                           f"({login})") from None
    except hf.RepositoryNotFoundError:
        hint = ("your token has no access to it" if _has_token() else f"if it is private, authenticate ({login})")
        raise HubNotFoundError(f"no {repo_type} repo '{repo_id}' on {ctx.endpoint}: check the name and --repo-type; "
                               f"{hint}") from None
    except hf.RevisionNotFoundError:
        raise HubNotFoundError(f"{repo_type} repo '{repo_id}' has no revision '{revision}': give a branch, tag or "
                               f"commit that exists (see {url})") from None
    except hf.RemoteEntryNotFoundError as e:
        raise HubNotFoundError(f"a file of {repo_id} disappeared from the Hub while pulling ({_first_line(e)}); "
                               "run the pull again") from None
    except hf.OfflineModeIsEnabled:
        raise HubOfflineError("offline mode is on (HF_HUB_OFFLINE=1 when vdna started); unset it to reach the Hub, "
                              "or use --offline to read the cache") from None
    except hf.LocalEntryNotFoundError as e:
        if ctx.offline:
            raise HubOfflineError(_no_cache_message(ctx, repo_id, repo_type, revision)) from None
        raise HubNetworkError(f"cannot reach {ctx.endpoint} ({_first_line(e.__cause__ or e)}): check your network "
                              "or HF_ENDPOINT, or use --offline for a copy already in the cache") from None
    except hf.HfHubHTTPError as e:
        raise _http_error(e, repo_id, pushing, login) from None
    except hf.HFValidationError as e:
        raise ConfigError(f"invalid repo id or revision: {_first_line(e)}") from None
    except _network_errors() as e:
        raise HubNetworkError(f"cannot reach {ctx.endpoint} ({type(e).__name__}: {_first_line(e)}): check your "
                              "network or HF_ENDPOINT, or use --offline for a copy already in the cache") from None


def _http_error(e, repo_id: str, pushing: bool, login: str) -> HubError:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401:
        if not _has_token():
            what = "pushing needs a token with write access" if pushing else f"{repo_id} needs authentication"
            return HubAuthError(f"{what}: {login}")
        return HubAuthError("the Hub rejected your token (401): check HF_TOKEN or run 'hf auth login' again")
    if status == 403:
        need = "a token with write access to it" if pushing else "access to it"
        return HubAuthError(f"access to {repo_id} denied (403): you need {need} ({login})")
    if status == 412:
        return HubError(f"{repo_id} changed while pushing (someone else committed): run the push again")
    if status is not None and status >= 500:
        return HubNetworkError(f"the Hub failed ({status}) on {repo_id}: try again later")
    return HubError(f"the Hub refused the request on {repo_id} ({status}): {_first_line(e)}")


def _first_line(e) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return type(e).__name__


def _no_cache_message(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None) -> str:
    return (f"no cached copy of {repo_type} repo '{repo_id}' (revision {revision or 'main'}) in {ctx.cache_dir}: "
            f"run 'vdna pull {repo_id}' once with network access, then --offline works")


# -- checksums ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says one file is: the checksum to hold the download to."""

    path: str
    size: int | None = None
    blob_id: str | None = None  # git blob sha1 (regular files)
    lfs_sha256: str | None = None  # LFS files


def file_digests(path: Path) -> tuple[str, str, int]:
    """(sha256, git blob sha1, size) of a file, in one pass."""
    size = os.path.getsize(path)
    sha, git = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            git.update(chunk)
    return sha.hexdigest(), git.hexdigest(), size


def _verify(local: Path, expected: RemoteFile, ctx: HubContext, repo_id: str) -> str:
    """sha256 of `local` after checking it against `expected`; evicts a bad cached copy."""
    sha, git, size = file_digests(local)
    if expected.lfs_sha256:
        ok = sha == expected.lfs_sha256.lower() and (expected.size is None or size == expected.size)
        want = f"sha256 {expected.lfs_sha256}"
    elif expected.blob_id:
        ok = git == expected.blob_id.lower()
        want = f"git blob {expected.blob_id}"
    else:
        raise HubIntegrityError(f"{expected.path} in {repo_id}: the Hub gave no checksum for it, so it cannot be "
                                "verified; pull it again online")
    if not ok:
        _evict(local, ctx)
        raise HubIntegrityError(f"{expected.path} in {repo_id} does not match the Hub's checksum ({want}); the "
                                "cached copy was removed and the registry left unchanged: run the pull again")
    return sha


def _evict(local: Path, ctx: HubContext) -> None:
    """Remove a bad file (snapshot link and blob) from the HF cache so a retry downloads it again."""
    root = os.path.realpath(ctx.cache_dir)
    for p in (Path(os.path.realpath(local)), local):
        try:
            if os.path.commonpath([root, os.path.realpath(p.parent)]) == root:
                p.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass


# -- the files of one revision: online from the Hub, offline from the cache ---------------
@dataclass
class Listing:
    commit: str
    files: dict[str, RemoteFile]
    from_cache: bool


def _storage_folder(ctx: HubContext, repo_id: str, repo_type: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return ctx.cache_dir / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


def _remote_listing(api, repo_id: str, repo_type: str, revision: str | None) -> Listing:
    info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True, timeout=REQUEST_TIMEOUT)
    if not info.sha:
        raise HubError(f"the Hub did not say which commit '{revision or 'main'}' of {repo_id} is; try again")
    files = {}
    for s in info.siblings or []:
        lfs = s.lfs["sha256"] if s.lfs else None
        files[s.rfilename] = RemoteFile(s.rfilename, s.size, s.blob_id, lfs)
    return Listing(commit=info.sha, files=files, from_cache=False)


def _cached_listing(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None) -> Listing:
    """The files of a revision already in the HF cache, each checked against its blob's name (its etag)."""
    storage = _storage_folder(ctx, repo_id, repo_type)
    rev = revision or "main"
    if _HEX40.match(rev):
        commit = rev
    else:
        ref = storage / "refs" / rev
        commit = ref.read_text().strip() if ref.is_file() else ""
    snap = storage / "snapshots" / commit if commit else None
    if snap is None or not snap.is_dir():
        raise HubOfflineError(_no_cache_message(ctx, repo_id, repo_type, revision))
    files = {}
    for p in sorted(snap.rglob("*")):
        if p.is_dir():
            continue
        rel = p.relative_to(snap).as_posix()
        etag = Path(os.path.realpath(p)).name if p.is_symlink() else ""
        files[rel] = RemoteFile(rel, None, etag if _HEX40.match(etag) else None, etag if _HEX64.match(etag) else None)
    return Listing(commit=commit, files=files, from_cache=True)


def _remember_ref(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None, commit: str) -> None:
    """Record revision -> commit in the cache (refs/<revision>) so --offline finds this revision later."""
    rev = revision or "main"
    if rev == commit:
        return
    ref = _storage_folder(ctx, repo_id, repo_type) / "refs" / rev
    try:
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, ref)
    except OSError:
        pass  # a read-only cache still pulls; only --offline later needs the ref


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


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-._+")[:128].rstrip("-._+")
    if name.endswith(".h5"):
        name = name[:-3] + "-h5"
    return name or "dna"


def _assign_names(items: list[_Item], name: str | None) -> None:
    dnas = [i for i in items if i.kind == "dna"]
    if name is not None:
        validate_name(name)
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
            i.name = _safe_name(stem if stems[stem] == 1 else i.key)
        names = Counter(i.name for i in items if i.kind == kind)
        clash = [n for n, c in names.items() if c > 1]
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


@dataclass
class PushReport:
    name: str
    repo_id: str
    repo_type: str
    revision: str  # the branch
    commit: str
    url: str
    created: bool
    files: dict[str, str]  # path in repo -> sha256
    masks: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # metadata kept private
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _check_revision(revision: str | None) -> None:
    if revision is not None and (not revision.strip() or ".." in revision.split("/") or revision.startswith("/")):
        raise ConfigError(f"invalid revision {revision!r}: give a branch, tag or commit")


def _check_repo_type(repo_type: str) -> None:
    if repo_type not in REPO_TYPES:
        raise ConfigError(f"unknown repo type '{repo_type}': use one of {', '.join(REPO_TYPES)}")


# -- pull ----------------------------------------------------------------------------------
@dataclass
class _Loaded:
    item: _Item
    obj: object  # DNA, or (meta, arrays) of a mask
    meta: dict
    files: dict[str, str]
    status: str = "added"


def pull(catalog, repo_id: str, path: str | None = None, name: str | None = None, revision: str | None = None,
         repo_type: str = "dataset", offline: bool = False, replace: bool = False) -> PullReport:
    """Bring the DNAs (and masks) of a Hub repo, or those `path` selects, into the registry.

    Nothing is written unless every selected file downloads, matches the Hub's checksum and
    parses; entries already pulled from the same files are left as they are ("unchanged").
    """
    _check_repo_type(repo_type)
    _check_revision(revision)
    ctx = hub_context(offline)
    report = PullReport(repo_id, repo_type, "", revision, False, ctx.offline)
    with _hub_errors(ctx, repo_id, repo_type, revision):
        listing = _listing(ctx, repo_id, repo_type, revision, report)
        report.revision, report.from_cache = listing.commit, listing.from_cache
        items = discover(list(listing.files), path)
        if not any(i.kind == "dna" for i in items) and not (path and items):
            raise _nothing_found(repo_id, repo_type, listing, path, ctx)
        _assign_names(items, name)
        # upstream pairs may hold activation ranges etc.: read their JSON first, skip the others' arrays
        heads = [i.files[0] for i in items if i.fmt == "upstream-vdna"]
        fetched = _fetch_verified(ctx, repo_id, repo_type, listing, heads)
        items = [i for i in items
                 if i.fmt != "upstream-vdna" or _upstream_is_dna(fetched[i.files[0]][0], i, repo_id, report)]
        rest = [f for i in items for f in i.files if f not in fetched]
        fetched.update(_fetch_verified(ctx, repo_id, repo_type, listing, rest))
        if not listing.from_cache:
            _remember_ref(ctx, repo_id, repo_type, revision, listing.commit)
    loaded = _load_all(items, fetched, listing, repo_id, repo_type, report, ctx.endpoint)
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
        return _cached_listing(ctx, repo_id, repo_type, revision)
    from huggingface_hub import HfApi

    try:
        return _remote_listing(HfApi(endpoint=ctx.endpoint), repo_id, repo_type, revision)
    except _network_errors() as e:  # offline-first: fall back to a cached copy of the same revision
        try:
            listing = _cached_listing(ctx, repo_id, repo_type, revision)
        except HubOfflineError:
            raise e from None
        report.warnings.append(f"{ctx.endpoint} unreachable ({type(e).__name__}): used the cached copy of commit "
                               f"{listing.commit[:12]}")
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
                    files: list[str]) -> dict[str, tuple[Path, str]]:
    """Download each file at the listed commit (or find it in the cache) and check it: path and sha256."""
    snap = _storage_folder(ctx, repo_id, repo_type) / "snapshots" / listing.commit
    out = {}
    for f in files:
        if listing.from_cache:
            local = snap / f
        else:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(repo_id, f, repo_type=repo_type, revision=listing.commit,
                                         cache_dir=str(ctx.cache_dir), endpoint=ctx.endpoint))
        out[f] = (local, _verify(local, listing.files[f], ctx, repo_id))
    return out


def _load_all(items: list[_Item], fetched: dict[str, tuple[Path, str]], listing: Listing, repo_id: str,
              repo_type: str, report: PullReport, endpoint: str) -> list[_Loaded]:
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
            meta, arrays = loaded
            obj = (meta, arrays)
        else:
            obj = _load_dna(item, local, where)
            meta = obj.meta
        _check_extractor(meta, f"{item.kind} '{item.key}' of {repo_id}", report.warnings)
        origin = {"kind": "hub", "repo_id": repo_id, "repo_type": repo_type, "revision": listing.commit,
                  "requested_revision": report.requested_revision,
                  "files": {f: fetched[f][1] for f in item.files}, "format": item.fmt, "pulled": pulled}
        if endpoint != "https://huggingface.co":
            origin["endpoint"] = endpoint
        if meta.get("origin") is not None:
            origin["published_origin"] = meta["origin"]
        meta["origin"] = origin
        out.append(_Loaded(item, obj, meta, origin["files"]))
    if not out:
        raise HubNotFoundError(f"{repo_type} repo '{repo_id}' holds no DNA this vdna can import "
                               f"({'; '.join(report.warnings) or 'nothing importable'})")
    return out


def _upstream_is_dna(json_path: Path, item: _Item, repo_id: str, report: PullReport) -> bool:
    """Upstream pairs also hold activation ranges or layer Gaussians: skip those (an error if asked for)."""
    import json

    where = f"{item.files[0]} in {repo_id}"
    try:
        kind = json.loads(json_path.read_text()).get("type")
    except (ValueError, OSError, AttributeError):
        raise FormatError(f"{where} is not a JSON object") from None
    if kind in UPSTREAM_KINDS:
        return True
    if item.explicit:
        raise FormatError(f"{where} is an upstream '{kind}' file; vdna imports histogram and gaussian DNAs only")
    report.warnings.append(f"skipped {item.key}: upstream '{kind}' files are not DNAs vdna can import")
    return False


def _load_dna(item: _Item, local: dict[str, Path], where: str):
    if item.fmt == "upstream-vdna":
        from vdnacli.interop import import_upstream

        try:
            return import_upstream(local[item.files[0]])
        except VdnaError as e:
            raise FormatError(f"{where}: {e}") from None
    meta, arrays = _read_entry_file(local[item.files[0]], where)
    if meta.get("format", "vdna-dna") != "vdna-dna":
        raise FormatError(f"{where} is a {meta.get('format')!r} entry, not a DNA")
    hashes = arrays.get("images/hashes")
    if hashes is not None and (hashes.dtype.kind != "u" or hashes.itemsize != 1 or hashes.ndim != 2
                               or hashes.shape[1] != 16):
        raise FormatError(f"{where}: images/hashes must be a uint8 [n, 16] array")
    try:
        if int(meta.get("num_images", 0)) < 0:
            raise FormatError(f"{where}: negative image count")
        return dna_mod.from_arrays(meta, arrays)
    except (FormatError, TypeError, ValueError) as e:
        raise FormatError(f"{where}: {e}") from None


def _read_entry_file(path: Path, where: str) -> tuple[dict, dict]:
    try:
        return layout.read_entry(path, verify=True)
    except RegistryError as e:
        raise FormatError(f"{where} is not a valid vdna entry ({e})") from None


def _load_mask(item: _Item, local: dict[str, Path], where: str, report: PullReport):
    try:
        from vdnacli.masks import Mask
    except ImportError:  # masks arrive with a later release
        report.warnings.append(f"skipped mask {item.key}: this vdna cannot store masks")
        return None
    meta, arrays = _read_entry_file(local[item.files[0]], where)
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
        warnings.append(f"{what}: computed with other '{ext}' weights (sha256 {ws[:12]}… vs "
                        f"{spec.weights.sha256[:12]}…); comparisons with DNAs computed here will be refused")


def _layers_text(layers: list[tuple[str, int]]) -> str:
    names = ", ".join(l for l, _ in layers[:4]) + (", …" if len(layers) > 4 else "")
    return f"{len(layers)} layers / {sum(n for _, n in layers)} neurons ({names})"


def _same_pull(existing: dict | None, origin: dict) -> bool:
    eo = (existing or {}).get("origin") or {}
    return (eo.get("kind") == "hub" and eo.get("repo_id") == origin["repo_id"]
            and eo.get("repo_type") == origin["repo_type"] and eo.get("files") == origin["files"])


def _masks_registry(catalog):
    return getattr(catalog, "masks", None)


def _plan_writes(catalog, loaded: list[_Loaded], replace: bool) -> None:
    """Decide added / replaced / unchanged for each entry; refuse conflicts before writing anything."""
    for ld in loaded:
        reg = catalog.registry if ld.item.kind == "dna" else _masks_registry(catalog)
        if reg is None:
            raise HubError("this registry cannot store masks; pull the DNAs alone with --path")
        existing = reg.meta(ld.item.name) if ld.item.name in reg else None
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
    """One put per entry; on any failure (or Ctrl-C) undo the puts already done."""
    done: list[tuple[_Loaded, object]] = []
    try:
        for ld in loaded:
            if ld.status == "unchanged":
                continue
            replace = ld.status == "replaced"
            if ld.item.kind == "dna":
                previous = catalog.get(ld.item.name) if replace else None
                catalog.put(ld.item.name, ld.obj, replace=replace)
            else:
                reg = _masks_registry(catalog)
                previous = reg.read(ld.item.name) if replace else None
                meta, arrays = ld.obj
                reg.put(ld.item.name, dict(meta, name=ld.item.name), arrays, replace=replace)
            done.append((ld, previous))
    except BaseException:
        for ld, previous in reversed(done):
            try:
                _undo(catalog, ld, previous)
            except Exception:
                pass
        raise


def _undo(catalog, ld: _Loaded, previous) -> None:
    if ld.item.kind == "dna":
        if previous is None:
            catalog.remove(ld.item.name)
        else:
            catalog.put(ld.item.name, previous, replace=True)
        return
    reg = _masks_registry(catalog)
    if previous is None:
        reg.remove(ld.item.name)
    else:
        reg.put(ld.item.name, *previous, replace=True)


# -- push ----------------------------------------------------------------------------------
def _looks_local(value: str) -> bool:
    home = str(Path.home())
    return (value.startswith(("/", "~", "\\\\", "file:")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))
            or (len(home) > 1 and home in value))


def public_meta(meta: dict, include_filenames: bool = False) -> tuple[dict, list[str]]:
    """A copy of `meta` fit to publish, and the fields kept back.

    Local paths never leave the machine; file and folder names (origin.source_name, …) only
    with `include_filenames`, and then as base names.
    """
    dropped: list[str] = []

    def clean(value, where: str, parent_key: str | None):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                here = f"{where}.{k}" if where else str(k)
                if (k in _NEVER_PUBLISHED or (k in _FILENAME_KEYS and not include_filenames)) and v is not None:
                    dropped.append(here)
                    continue
                out[k] = clean(v, here, k)
            return out
        if isinstance(value, list):
            return [clean(v, f"{where}[{i}]", parent_key) for i, v in enumerate(value)]
        if isinstance(value, str) and _looks_local(value):
            if include_filenames and parent_key in _FILENAME_KEYS:
                return Path(value.rstrip("/\\")).name or None
            dropped.append(where)
            return None
        return value

    out = clean(copy.deepcopy(meta), "", None)
    out.pop("name", None)
    return out, dropped


def _select_masks(catalog, dna, with_masks, include_filenames: bool) -> list[tuple[str, dict, dict]]:
    """The masks to publish with a DNA: all masks made for its network (True) or the named ones."""
    if not with_masks:
        return []
    try:
        from vdnacli.masks import Mask
    except ImportError:
        raise HubError("this vdna cannot store masks yet; push without --with-masks") from None
    reg = _masks_registry(catalog)
    explicit = not isinstance(with_masks, bool)
    names = list(with_masks) if explicit else (reg.names() if reg is not None else [])
    out = []
    for n in names:
        if reg is None:
            raise HubError("this registry holds no masks")
        meta, arrays = reg.read(n)
        mask = Mask.from_entry(meta, arrays)
        try:
            mask.check(dna.meta)
        except IncompatibleDNAError:
            if explicit:
                raise
            continue
        pm, _ = public_meta(meta, include_filenames)
        out.append((n, pm, arrays))
    return out


def push(catalog, name: str, repo_id: str, private: bool = False, revision: str | None = None,
         include_filenames: bool = False, with_masks: bool | Sequence[str] = False,
         repo_type: str = "dataset") -> PushReport:
    """Publish one DNA (and, with `with_masks`, the masks made for its network) to a Hub repo.

    Uploads dnas/<name>.h5 (and masks/<mask>.h5) plus the dataset card, in one commit on
    `revision` (a branch, created if missing), then checks the Hub's checksums of the commit.
    """
    _check_repo_type(repo_type)
    _check_revision(revision)
    ctx = hub_context()
    if ctx.offline:
        raise HubOfflineError("pushing needs the network but offline mode is on (HF_HUB_OFFLINE / VDNA_OFFLINE / "
                              "offline in vdna.yaml): turn it off and push again")
    dna = catalog.get(name, shards=True)
    meta, dropped = public_meta(dna.meta, include_filenames)
    masks = _select_masks(catalog, dna, with_masks, include_filenames)
    if not _has_token():
        raise HubAuthError("pushing needs a Hugging Face token with write access: set HF_TOKEN or run "
                           "'hf auth login'")
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=ctx.endpoint)
    branch = revision or "main"
    report = PushReport(name, repo_id, repo_type, branch, "", ctx.repo_url(repo_id, repo_type), False, {},
                        [m[0] for m in masks], dropped)
    if with_masks is True and not masks:
        report.warnings.append(f"no mask in the registry is made for {dna.meta.get('extractor')}; pushed the DNA alone")
    with tempfile.TemporaryDirectory(prefix="vdna-push-") as tmp:
        stage = _stage(Path(tmp), name, dna, meta, masks)
        digests = {p: file_digests(f) for p, f in stage.items()}
        report.files = {p: d[0] for p, d in digests.items()}
        with _hub_errors(ctx, repo_id, repo_type, branch, pushing=True):
            parent, card, report.created, warn = _prepare_repo(api, ctx, repo_id, repo_type, branch, private)
            report.warnings += warn
            dna_sha = report.files[f"{DNA_DIR}/{name}.h5"]
            sections = [("dna", name, _dna_section(name, meta, dna_sha, include_filenames))]
            sections += [("mask", m, _mask_section(m, mm, report.files[f"{MASK_DIR}/{m}.h5"])) for m, mm, _ in masks]
            card = render_card(card, repo_id, repo_type, sections)
            ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in stage.items()]
            ops.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode()))
            info = api.create_commit(repo_id, ops, commit_message=f"vdna push {name}",
                                     commit_description=f"Published with vdna {__version__}.", repo_type=repo_type,
                                     revision=branch, parent_commit=parent)
            report.commit = info.oid
            _verify_published(api, repo_id, repo_type, info.oid, digests)
    return report


def _stage(tmp: Path, name: str, dna, meta: dict, masks) -> dict[str, Path]:
    """Write the files to publish with the registry's own writer (same format, checksums, sketches)."""
    from vdnacli.catalog import Catalog

    stage = Catalog(tmp / "stage")
    shards = dna.shards.restrict(("hist", "gauss")) if dna.shards is not None else None  # the kinds staged here
    stage.put(name, dna_mod.DNA(meta=meta, hist=dna.hist, gauss=dna.gauss, image_hashes=dna.image_hashes,
                                shards=shards))
    files = {f"{DNA_DIR}/{name}.h5": stage.registry.entries_dir / f"{name}.h5"}
    if masks:
        mreg = Registry(tmp / "stage-masks")
        for m, mmeta, arrays in masks:
            mreg.put(m, dict(mmeta, name=m), arrays)
            files[f"{MASK_DIR}/{m}.h5"] = mreg.entries_dir / f"{m}.h5"
    return files


def _prepare_repo(api, ctx: HubContext, repo_id: str, repo_type: str, branch: str, private: bool):
    """Create the repo / branch when missing; return (parent commit, current card, created, warnings)."""
    from huggingface_hub import hf_hub_download

    hf = _hf_errors()
    warnings, created = [], False
    try:
        info = api.repo_info(repo_id, repo_type=repo_type, timeout=REQUEST_TIMEOUT)
    except hf.GatedRepoError:
        raise
    except hf.RepositoryNotFoundError:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.repo_info(repo_id, repo_type=repo_type, timeout=REQUEST_TIMEOUT)
        created = True
    if private and not created and info.private is False:
        warnings.append(f"{repo_id} already exists and is public: --private applies only to new repos")
    try:
        if branch != "main":
            info = api.repo_info(repo_id, repo_type=repo_type, revision=branch, timeout=REQUEST_TIMEOUT)
    except hf.RevisionNotFoundError:
        api.create_branch(repo_id, branch=branch, repo_type=repo_type)
        info = api.repo_info(repo_id, repo_type=repo_type, revision=branch, timeout=REQUEST_TIMEOUT)
    card = None
    if any(s.rfilename == CARD for s in info.siblings or []):
        p = hf_hub_download(repo_id, CARD, repo_type=repo_type, revision=info.sha, cache_dir=str(ctx.cache_dir),
                            endpoint=ctx.endpoint)
        card = Path(p).read_text(encoding="utf-8", errors="replace")
    return info.sha, card, created, warnings


def _verify_published(api, repo_id: str, repo_type: str, commit: str, digests: dict[str, tuple[str, str, int]]) -> None:
    info = api.repo_info(repo_id, repo_type=repo_type, revision=commit, files_metadata=True, timeout=REQUEST_TIMEOUT)
    remote = {s.rfilename: s for s in info.siblings or []}
    for p, (sha, git, size) in digests.items():
        s = remote.get(p)
        ok = s is not None and ((s.lfs["sha256"] == sha) if s.lfs else (s.blob_id == git))
        if not ok:
            raise HubIntegrityError(f"after the push, the Hub's checksum of {p} in {repo_id} (commit {commit[:12]}) "
                                    "does not match the uploaded file: push again")


# -- the dataset card ----------------------------------------------------------------------
def _card_header(repo_id: str, repo_type: str) -> str:
    flag = "" if repo_type == "dataset" else f" --repo-type {repo_type}"
    pull_one = f"vdna pull {repo_id}{flag} --path {DNA_DIR}/NAME.h5"
    pull_all = f"vdna pull {repo_id}{flag}".ljust(len(pull_one))
    return f"""---
tags:
- vdna
- visual-dna
---

# Visual DNAs

[Visual DNAs](https://arxiv.org/abs/2304.10036) (Ramtoula et al., CVPR 2023): for every neuron of a frozen
network, the distribution of its activations over a set of images. Published with `vdna` {__version__}.

```bash
{pull_all}  # every DNA (and mask) in this repo
{pull_one}  # one of them
```

`{DNA_DIR}/<name>.h5` are vdna registry entries (HDF5: per-layer integer histograms `hist/<layer>` and/or
Gaussian sums `gauss/<layer>/*`, JSON metadata in the `meta` attribute, sha256 of every array in `checksums`);
`{MASK_DIR}/<name>.h5` are neuron masks in the same format. They hold no images and no file names: only
counts, and 16-byte truncated sha256 hashes of the image files (`images/hashes`, to avoid counting an image
twice when DNAs are merged).
"""


def _md(value) -> str:
    if isinstance(value, dict):
        value = ", ".join(f"{k}={_md_plain(v)}" for k, v in value.items())
    elif isinstance(value, list):
        value = ", ".join(_md_plain(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_plain(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_md_plain(x) for x in v) + "]"
    return str(v)


def _table(rows: list[tuple[str, object]]) -> str:
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {k} | {_md(v) if v is not None else '—'} |" for k, v in rows]
    return "\n".join(lines)


def _dna_section(name: str, meta: dict, sha256: str, include_filenames: bool) -> str:
    layers = meta.get("layers", [])
    rows = [
        ("file", f"`{DNA_DIR}/{name}.h5`"),
        ("file sha256", f"`{sha256}`"),
        ("extractor", f"`{meta.get('extractor')}`"),
        ("weights sha256", f"`{meta.get('weights_sha256')}`" if meta.get("weights_sha256") else "unknown"),
        ("ranges sha256", f"`{meta.get('ranges_sha256')}`" if meta.get("ranges_sha256") else "unknown"),
        ("distributions", meta.get("kinds", [])),
        ("bins", meta.get("bins")),
        ("images", meta.get("num_images")),
        ("images sha256", f"`{meta.get('images_sha256')}`" if meta.get("images_sha256") else None),
        ("layers", f"{len(layers)} ({sum(int(n) for _, n in layers):,} neurons): "
                   + ", ".join(f"{l} {n}" for l, n in layers)),
        ("preprocessing", meta.get("preprocessing", {})),
        ("precision", meta.get("precision")),
        ("computed", f"{meta.get('created')} with {meta.get('tool', 'vdna')} {meta.get('tool_version')}"),
    ]
    origin = meta.get("origin") or {}
    if origin.get("kind"):
        src = origin.get("kind")
        if include_filenames and origin.get("source_name"):
            src += f" `{origin['source_name']}`"
        rows.append(("origin", src))
    return f"## DNA `{name}`\n\n{_table(rows)}\n"


def _mask_section(name: str, meta: dict, sha256: str) -> str:
    rows = [
        ("file", f"`{MASK_DIR}/{name}.h5`"),
        ("file sha256", f"`{sha256}`"),
        ("kind", meta.get("kind")),
        ("extractor", f"`{meta.get('extractor')}`"),
        ("weights sha256", f"`{meta.get('weights_sha256')}`" if meta.get("weights_sha256") else "unknown"),
        ("neurons selected", meta.get("neurons_selected")),
    ]
    return f"## Mask `{name}`\n\n{_table(rows)}\n"


def render_card(existing: str | None, repo_id: str, repo_type: str, sections: list[tuple[str, str, str]]) -> str:
    """The card with each (kind, name, markdown) section replaced in place or appended.

    Sections sit between `<!-- vdna:KIND:NAME:begin/end -->` markers, so pushing another DNA
    to the same repo adds its section and keeps the others (and any text written by hand).
    """
    text = existing if existing and existing.strip() else _card_header(repo_id, repo_type)
    for kind, name, body in sections:
        begin, end = f"<!-- vdna:{kind}:{name}:begin -->", f"<!-- vdna:{kind}:{name}:end -->"
        block = f"{begin}\n{body.rstrip()}\n{end}\n"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block
    return text


def iter_card_sections(card: str) -> Iterator[tuple[str, str]]:
    """(kind, name) of every vdna section in a card."""
    for m in re.finditer(r"<!-- vdna:(\w+):([A-Za-z0-9._+-]+):begin -->", card):
        yield m.group(1), m.group(2)
