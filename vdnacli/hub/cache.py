"""Where the hub works: endpoint, HF cache and offline mode (read at call time), the guard on
what the Hub answers, and the cached copies of repos (`scan_cache_dir`).

huggingface_hub turns three strings of a Hub's HTTP answers into cache paths without checking
them: the commit id (X-Repo-Commit: snapshots/<commit>, .no_exist/<commit>) and the ETag
(X-Linked-Etag / ETag: blobs/<etag>). A mirror answering `../../x` there would make it write
outside the cache. `guard_session()` adds a response hook to huggingface_hub's shared HTTP
client that refuses such answers (registry.names: 40 hex digits, a plain hex name) before the
library uses them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry import names
from vdnacli import env
from vdnacli.hub.errors import HubIntegrityError, HubOfflineError, from_hub, no_cache_message, redact


@dataclass(frozen=True)
class HubContext:
    endpoint: str  # as given (may carry user:password for a private mirror): used for requests only
    cache_dir: Path
    offline: bool

    @property
    def shown_endpoint(self) -> str:
        """The endpoint without credentials: what is printed and recorded."""
        return redact(self.endpoint)

    def repo_url(self, repo_id: str, repo_type: str) -> str:
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")
        return f"{self.shown_endpoint}/{prefix}{repo_id}"


def hub_context(offline: bool = False) -> HubContext:
    """Endpoint, cache folder and offline mode from the environment *now* (see vdnacli.env)."""
    try:
        from huggingface_hub import constants

        lib_offline = bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        lib_offline = False
    return HubContext(endpoint=env.hf_endpoint(), cache_dir=env.hf_cache_dir(),
                      offline=env.is_offline(offline) or lib_offline)


# -- the guard -------------------------------------------------------------------------------
def _normalized_etag(value: str) -> str:
    return value.strip().lstrip("W/").strip('"')  # as huggingface_hub normalizes it before use


def check_hub_headers(headers) -> None:
    """Raise HubIntegrityError if a Hub answer carries a commit id or ETag unsafe as a cache path."""
    commit = headers.get("X-Repo-Commit")
    try:
        if commit is not None:
            names.commit_sha(commit.strip(), "commit id (X-Repo-Commit)")
            tag = headers.get("X-Linked-Etag") or headers.get("ETag")
            if tag is not None:
                names.etag(_normalized_etag(tag), "ETag")
        elif headers.get("X-Linked-Etag") is not None:
            names.etag(_normalized_etag(headers["X-Linked-Etag"]), "ETag (X-Linked-Etag)")
        if headers.get("X-Xet-Hash") is not None:
            names.etag(headers["X-Xet-Hash"].strip(), "Xet hash")
    except names.InvalidNameError as e:
        raise HubIntegrityError(f"the Hub endpoint answered an unsafe name: {e}; nothing was written (check "
                                "HF_ENDPOINT)") from None


def _response_hook(response) -> None:
    check_hub_headers(response.headers)


def guard_session() -> None:
    """Install the response hook on huggingface_hub's shared HTTP client (idempotent; re-done at each
    pull or push, since the library recreates its client after a fork or close)."""
    from huggingface_hub import get_session

    session = get_session()
    hooks = getattr(session, "event_hooks", None)  # httpx-style client (huggingface_hub >= 1.0)
    if hooks is None:
        hooks = getattr(session, "hooks", None)  # requests-style session (older releases)
    if hooks is None or "response" not in hooks:
        raise HubIntegrityError("this huggingface_hub's HTTP client cannot be guarded; upgrade huggingface_hub")
    if _response_hook not in hooks["response"]:
        hooks["response"].append(_response_hook)


# -- the cache ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedRevision:
    commit: str
    storage: Path  # the repo's folder in the cache
    files: dict[str, tuple[Path, str]]  # path in repo -> (snapshot path, blob name = etag at download time)


def cached_revision(ctx: HubContext, repo_id: str, repo_type: str, revision: str | None) -> CachedRevision:
    """A revision of a repo in the HF cache, found with `scan_cache_dir`; every name checked."""
    from huggingface_hub import scan_cache_dir

    rev = revision or "main"
    try:
        info = scan_cache_dir(ctx.cache_dir)
    except Exception:  # noqa: BLE001  CacheNotFound (no cache at all) or an unreadable one
        raise HubOfflineError(no_cache_message(ctx, repo_id, repo_type, revision)) from None
    for repo in info.repos:
        if repo.repo_id != repo_id or repo.repo_type != repo_type:
            continue
        for r in repo.revisions:
            if r.commit_hash == rev or rev in r.refs:
                commit = from_hub(names.commit_sha, r.commit_hash, "cached commit id")
                snap = Path(r.snapshot_path)
                files = {}
                for f in r.files:
                    rel = from_hub(names.repo_path, Path(f.file_path).relative_to(snap).as_posix(), "")
                    files[rel] = (Path(f.file_path), Path(f.blob_path).name)
                return CachedRevision(commit, Path(repo.repo_path), files)
    raise HubOfflineError(no_cache_message(ctx, repo_id, repo_type, revision))


def remember_ref(storage: Path, revision: str | None, commit: str) -> None:
    """Record revision -> commit (refs/<revision>) so --offline finds this revision later; both names
    are validated, and a cache that cannot be written only costs that."""
    rev = names.revision(revision or "main")
    names.commit_sha(commit)
    if rev == commit:
        return
    ref = storage / "refs" / rev
    try:
        if ref.is_file() and ref.read_text().strip() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.write_text(commit)
        os.replace(tmp, ref)
    except OSError:
        pass


def evict(local: Path, cache_dir: Path) -> None:
    """Remove a bad file (snapshot link and blob) from the HF cache so that a retry downloads it again;
    never a path outside the cache."""
    root = os.path.realpath(cache_dir)
    for p in (Path(os.path.realpath(local)), local):
        try:
            if os.path.commonpath([root, os.path.realpath(p.parent)]) == root:
                p.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass
