"""One strict validator per kind of outside string that can reach the filesystem.

Every name that comes from a user, a file or a server and ends up in a path goes through
exactly one of these before any I/O: entry and mask names, Hub commit ids, revisions,
repo ids, repo file paths and cache ETags. Each is a full match (`re.fullmatch`, so a
trailing newline never passes, as it would with `$`) on a small alphabet; each returns the
value unchanged or raises InvalidNameError with a message that says what is allowed.
"""
from __future__ import annotations

import re

from registry.errors import InvalidNameError

_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A git ref as the Hub accepts them for branches and tags, or refs/pr/N, or a commit id:
# '/'-separated parts of letters, digits, '.', '_', '-'; no part empty, '.'-led or '.lock'-ending.
_REF_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# Repo file paths: any printable part except separators, '..', '.', drive colons and control characters.
_PATH_PART = re.compile(r"[^/\\:\x00-\x1f\x7f]{1,255}")
_ETAG = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
ENTRY_SUFFIX = ".h5"


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(f"invalid {what} {value!r}: not text")
    return value


def entry_name(name) -> str:
    """An entry or mask name: 1-128 of letters, digits, '.', '_', '+', '-', led by a letter or digit."""
    name = _text(name, "entry name")
    if not _ENTRY.fullmatch(name) or name.endswith(ENTRY_SUFFIX):
        raise InvalidNameError(
            f"invalid entry name {name!r}: use 1-128 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit (and not ending in .h5)"
        )
    return name


def commit_sha(value, what: str = "commit id") -> str:
    """A full git commit id: exactly 40 lowercase hex digits."""
    value = _text(value, what)
    if not _COMMIT.fullmatch(value):
        raise InvalidNameError(f"invalid {what} {value[:80]!r}: a commit id is 40 lowercase hex digits")
    return value


def sha256_hex(value, what: str = "sha256") -> str:
    """A sha256 digest: exactly 64 lowercase hex digits."""
    value = _text(value, what)
    if not _SHA256.fullmatch(value):
        raise InvalidNameError(f"invalid {what} {value[:80]!r}: expected 64 lowercase hex digits")
    return value


def revision(value) -> str:
    """A branch, tag, refs/pr/N or commit id, safe as a relative path (refs/<revision>)."""
    value = _text(value, "revision")
    parts = value.split("/")
    if (len(value) > 255 or not all(_REF_PART.fullmatch(p) for p in parts)
            or any(p.endswith(".lock") or ".." in p for p in parts)):
        raise InvalidNameError(f"invalid revision {value[:80]!r}: give a branch, tag or commit "
                               "(letters, digits, '.', '_', '-' and '/' between parts)")
    return value


def repo_id(value) -> str:
    """A Hub repo id: NAME or NAMESPACE/NAME of letters, digits, '.', '_', '-'."""
    value = _text(value, "repo id")
    parts = value.split("/")
    if (len(parts) > 2 or not all(_REPO_PART.fullmatch(p) for p in parts)
            or any(".." in p or p.endswith(".") for p in parts)):
        raise InvalidNameError(f"invalid repo id {value[:80]!r}: use NAMESPACE/NAME (letters, digits, '.', '_', '-')")
    return value


def repo_path(value) -> str:
    """A file path inside a repo: relative, '/'-separated, no '.' or '..' part, no backslash,
    colon or control character (so it stays inside whatever folder it is joined to)."""
    value = _text(value, "repo file path")
    parts = value.split("/")
    if (not value or len(value) > 1024 or not all(_PATH_PART.fullmatch(p) for p in parts)
            or any(p in (".", "..") for p in parts)):
        raise InvalidNameError(f"invalid repo file path {value[:120]!r}: the Hub lists only relative paths "
                               "without '..', '\\', ':' or control characters")
    return value


def etag(value, what: str = "ETag") -> str:
    """A cache blob name as huggingface_hub derives it from an ETag (quotes and W/ removed)."""
    value = _text(value, what)
    if not _ETAG.fullmatch(value):
        raise InvalidNameError(f"invalid {what} {value[:80]!r}: expected a hex digest")
    return value
