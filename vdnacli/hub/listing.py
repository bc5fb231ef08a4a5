"""The files of one revision and their checksums: online from `repo_info(files_metadata=True)`,
offline from the HF cache (`scan_cache_dir`); and the check of a local file against them.

Every name in a listing (the commit id, each path, each digest) is validated with
registry.names before it is used: a listing with `dnas/../../x.h5` or a commit `../../x` is one
error line, and nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from registry import names
from vdnacli.hub.cache import HubContext, cached_revision, evict
from vdnacli.hub.errors import HubError, HubIntegrityError, from_hub

REQUEST_TIMEOUT = 30  # seconds for metadata calls; downloads use huggingface_hub's own


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says one file is: the checksum to hold the download to."""

    path: str
    size: int | None = None
    blob_id: str | None = None  # git blob sha1 (regular files)
    lfs_sha256: str | None = None  # LFS files


@dataclass
class Listing:
    commit: str
    files: dict[str, RemoteFile]
    from_cache: bool
    local: dict[str, Path] | None = None  # offline: path in repo -> snapshot file
    storage: Path | None = None  # offline: the repo's folder in the cache


def remote_listing(api, repo_id: str, repo_type: str, revision: str | None) -> Listing:
    info = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True, timeout=REQUEST_TIMEOUT)
    if not info.sha:
        raise HubError(f"the Hub did not say which commit '{revision or 'main'}' of {repo_id} is; try again")
    commit = from_hub(names.commit_sha, info.sha, f"commit id of {repo_id}")
    files = {}
    for s in info.siblings or []:
        path = from_hub(names.repo_path, s.rfilename, "")
        lfs = from_hub(names.sha256_hex, str(s.lfs["sha256"]).lower(), f"sha256 of {path}") if s.lfs else None
        blob = from_hub(names.commit_sha, str(s.blob_id).lower(), f"git blob id of {path}") if s.blob_id else None
        size = s.size if isinstance(s.size, int) and s.size >= 0 else None
        files[path] = RemoteFile(path, size, blob, lfs)
    return Listing(commit=commit, files=files, from_cache=False)


def cached_listing(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None) -> Listing:
    """The files of a revision already in the HF cache, each to be checked against its blob's name
    (the ETag the Hub gave at download time: sha256 for LFS files, git blob id otherwise)."""
    rev = cached_revision(ctx, repo_id, repo_type, revision)
    files, local = {}, {}
    for path, (snap_file, etag) in sorted(rev.files.items()):
        blob = etag if len(etag) == 40 and _is_hex(etag) else None
        lfs = etag if len(etag) == 64 and _is_hex(etag) else None
        files[path] = RemoteFile(path, None, blob, lfs)
        local[path] = snap_file
    return Listing(commit=rev.commit, files=files, from_cache=True, local=local, storage=rev.storage)


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


def file_digests(path: Path) -> tuple[str, str, int]:
    """(sha256, git blob sha1, size) of a file, in one pass."""
    size = os.path.getsize(path)
    sha, git = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            git.update(chunk)
    return sha.hexdigest(), git.hexdigest(), size


def verify_file(local: Path, expected: RemoteFile, ctx: HubContext, repo_id: str) -> str:
    """sha256 of `local` after checking it against `expected`; evicts a bad cached copy."""
    sha, git, size = file_digests(local)
    if expected.lfs_sha256:
        ok = sha == expected.lfs_sha256 and (expected.size is None or size == expected.size)
        want = f"sha256 {expected.lfs_sha256}"
    elif expected.blob_id:
        ok = git == expected.blob_id
        want = f"git blob {expected.blob_id}"
    else:
        raise HubIntegrityError(f"{expected.path} in {repo_id}: the Hub gave no checksum for it, so it cannot be "
                                "verified; pull it again online")
    if not ok:
        evict(local, ctx.cache_dir)
        raise HubIntegrityError(f"{expected.path} in {repo_id} does not match the Hub's checksum ({want}); the "
                                "cached copy was removed and the registry left unchanged: run the pull again")
    return sha
