"""Datasets on the Hugging Face Hub: `hf://datasets/ORG/NAME[@REVISION][/PATH]`.

The revision (default main) is resolved once to a commit; every file is then read at that
commit through huggingface_hub's download into the standard HF cache (so a second run, and
`--offline` / HF_HUB_OFFLINE=1, read the cache; files are fetched by the decode worker that
reads them, not all up front). The DNA's origin records repo, requested revision, commit,
split, column and the files read.

Which files: those under PATH (a file, a folder or a glob), then those of the split
(--split, default train when the repo has one): a path segment named like the split, or a
file name starting with `<split>-` or `<split>.` (the layouts `datasets` writes:
data/train-00000-of-00004.parquet, train/..., <config>/train/...). Of those, parquet tables
if there are any, else tar shards, else image files, else CSV/JSONL tables.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from vdnacli.errors import ConfigError, SourceError
from vdnacli.sources.base import Ref, Source, SourceOptions, is_image, is_tar, printable, read_regular_file

PREFIX = "hf://datasets/"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_FILES_RECORDED = 1000


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str | None
    path: str


def parse(spec: str) -> HubSpec:
    """hf://datasets/ORG/NAME[@REVISION][/PATH]; a revision holding '/' is written %2F."""
    if not spec.startswith(PREFIX):
        raise ConfigError(f"{spec}: Hub datasets are written hf://datasets/ORG/NAME[@REVISION][/PATH]")
    parts = spec[len(PREFIX):].split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(f"{spec}: give the dataset as hf://datasets/ORG/NAME")
    org, name, rest = parts[0], parts[1], parts[2:]
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
        revision = unquote(revision)
        if not revision or ".." in revision.split("/") or revision.startswith("/"):
            raise ConfigError(f"{spec}: invalid revision {revision!r}")
    repo_id = f"{org}/{name}"
    if not _REPO.match(repo_id):
        raise ConfigError(f"{spec}: invalid repo id {repo_id!r}")
    path = "/".join(rest).strip("/")
    check_repo_path(path, spec)
    return HubSpec(repo_id, revision, path)


def check_repo_path(path: str, where: str) -> None:
    """A path inside a repo: relative, no '..', no backslash or control character."""
    if not path:
        return
    if path.startswith("/") or "\\" in path or ".." in path.split("/") or any(ord(c) < 32 for c in path):
        raise SourceError(f"{where}: invalid path in repo {path!r}")


@dataclass(frozen=True)
class HubFile:
    """One file of a repo at one commit, downloaded into the HF cache on first use."""

    repo_id: str
    commit: str
    path: str
    endpoint: str
    cache_dir: str
    from_cache: bool
    revision: str | None = None  # the branch or tag asked for: remembered in the cache for --offline

    @property
    def name(self) -> str:
        return printable(self.path)

    def download(self) -> str:
        """The file's path in the HF cache, downloaded first unless the listing came from the
        cache (then `local_files_only`: the library resolves the cache, nothing is fetched)."""
        from huggingface_hub import hf_hub_download

        try:
            local = hf_hub_download(self.repo_id, self.path, repo_type="dataset", revision=self.commit,
                                    cache_dir=self.cache_dir, endpoint=self.endpoint, local_files_only=self.from_cache)
        except Exception as e:  # huggingface_hub and its HTTP stack raise many types
            if self.from_cache:
                raise OSError(errno.ENOENT, f"{self.path} is not in the HF cache (commit {self.commit[:12]})") from None
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise OSError(errno.EIO, f"cannot download {self.path}: {text}") from None
        if not self.from_cache and self.revision and self.revision != self.commit:
            from vdnacli.hub.cache import remember_ref

            # <storage>/snapshots/<commit>/<path>: revision -> commit, so --offline finds it later
            remember_ref(Path(local).parents[len(PurePosixPath(self.path).parts) + 1], self.revision, self.commit)
        return local

    def sibling_ref(self, text: str, name: str) -> Ref:
        """A file named by a cell of this table: relative to the table's folder in the repo."""
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(self.path), text))
        check_repo_path(rel, self.path)
        return HubImageRef(name, HubFile(self.repo_id, self.commit, rel, self.endpoint, self.cache_dir,
                                         self.from_cache, self.revision))


@dataclass(frozen=True)
class HubImageRef(Ref):
    name: str
    file: HubFile
    remote = True

    def read_bytes(self) -> bytes:
        return read_regular_file(self.file.download())


def _split_matches(path: str, split: str) -> bool:
    segs = path.split("/")
    base = segs[-1]
    return split in segs[:-1] or base.startswith(split + "-") or base.startswith(split + ".") or \
        base.startswith(split + "_")


def _splits_present(paths: list[str]) -> list[str]:
    found = []
    for s in ("train", "validation", "valid", "val", "test"):
        if any(_split_matches(p, s) for p in paths):
            found.append(s)
    return found


def _under(paths: list[str], sel: str) -> list[str]:
    if not sel:
        return paths
    if any(c in sel for c in "*?["):
        return [p for p in paths if fnmatch.fnmatchcase(p, sel)]
    return [p for p in paths if p == sel or p.startswith(sel + "/")]


def _listing(repo_id: str, revision: str | None, offline: bool):
    """(Hub context, listing) of a dataset repo through the Hub package's own verbs (errors,
    offline-first fallback to the cache, the guard on the Hub's answers)."""
    from huggingface_hub import HfApi

    from vdnacli import __version__
    from vdnacli.hub.cache import guard_session, hub_context, remember_ref
    from vdnacli.hub.errors import HubOfflineError, hub_errors, network_errors
    from vdnacli.hub.listing import cached_listing, remote_listing

    ctx = hub_context(offline)
    with hub_errors(ctx, repo_id, "dataset", revision):
        if ctx.offline:
            return ctx, cached_listing(ctx, repo_id, "dataset", revision)
        guard_session()
        try:
            api = HfApi(endpoint=ctx.endpoint, library_name="vdna", library_version=__version__)
            listing = remote_listing(api, repo_id, "dataset", revision)
        except network_errors() as e:  # offline-first: a cached copy of the same revision will do
            try:
                return ctx, cached_listing(ctx, repo_id, "dataset", revision)
            except HubOfflineError:
                raise e from None
        if listing.storage is not None:
            remember_ref(listing.storage, revision, listing.commit)
        return ctx, listing


def hub_source(spec: str, options: SourceOptions) -> Source:
    from vdnacli.sources.archive import TarShard
    from vdnacli.sources.table import TableFile, table_source

    hs = parse(spec)
    ctx, listing = _listing(hs.repo_id, hs.revision, options.offline)
    where = f"dataset {hs.repo_id} (commit {listing.commit[:12]})"
    paths = sorted(p for p in listing.files if not p.startswith("."))
    chosen = _under(paths, hs.path)
    if not chosen:
        raise SourceError(f"nothing matches {hs.path!r} in {where}" if hs.path else f"{where} holds no files")
    split = options.split
    if split is None:
        present = _splits_present(chosen)
        split = "train" if "train" in present else None
    if split is not None:
        in_split = [p for p in chosen if _split_matches(p, split)]
        if not in_split:
            present = _splits_present(chosen)
            raise SourceError(f"no split '{split}' in {where}"
                              + (f"; splits there: {', '.join(present)}" if present else "; it has no split folders"))
        chosen = in_split
    groups = {
        "parquet": [p for p in chosen if p.lower().endswith(".parquet")],
        "tar": [p for p in chosen if is_tar(p)],
        "images": [p for p in chosen if is_image(p)],
        "text": [p for p in chosen if p.lower().endswith((".csv", ".jsonl"))],
    }
    kind = next((k for k in ("parquet", "tar", "images", "text") if groups[k]), None)
    if kind is None:
        raise SourceError(f"no parquet, tar, image, CSV or JSONL files in {where}"
                          + (f" under {hs.path!r}" if hs.path else "") + (f" for split '{split}'" if split else ""))
    files = [HubFile(hs.repo_id, listing.commit, p, ctx.endpoint, str(ctx.cache_dir), listing.from_cache,
                     hs.revision or "main")
             for p in groups[kind]]
    origin = {"kind": "hf", "repo": hs.repo_id, "revision": hs.revision or "main", "commit": listing.commit,
              "split": split, "path": hs.path or None, "files": [f.path for f in files[:_MAX_FILES_RECORDED]],
              "files_total": len(files)}
    label = f"hf://datasets/{hs.repo_id}"
    if kind == "tar":
        return Source("hf", origin, units=[TarShard(f.name, f, options) for f in files], label=label)
    if kind == "images":
        return Source("hf", origin, refs=[HubImageRef(f.name, f) for f in files], label=label)
    refs, units, column = [], [], None
    for f in files:
        try:
            r, u, o = table_source(TableFile(f.name, hub=f), _with_column(options, column))
        except OSError as e:
            raise SourceError(f"{where}: {e.strerror or e}") from None
        column = o["column"]  # every file of the split is read with the first file's column
        refs += r or []
        units += u or []
        if u is not None and kind == "parquet":  # streamed: the other files are opened by the workers
            from vdnacli.sources.table import ParquetPart

            rest = files[files.index(f) + 1 :]
            units += [ParquetPart(g.name, TableFile(g.name, hub=g), column, units[0].kind, options=options)
                      for g in rest]
            break
    origin["column"] = column
    if units:
        return Source("hf", origin, units=units, label=label)
    return Source("hf", origin, refs=refs, label=label)


def _with_column(options: SourceOptions, column: str | None) -> SourceOptions:
    if column is None or options.column is not None:
        return options
    from dataclasses import replace

    return replace(options, column=column)
