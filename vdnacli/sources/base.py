"""What every image source yields: items of (identity, bytes), from random-access refs or
streamed units, with the options that shape them.

Two shapes, one contract:
  * refs: a list of `Ref`, each read on its own (files, zip members, URLs, table cells
    that name a file): random access, so decode workers take them by index and `--limit` picks a
    seeded subset of the list.
  * units: a list of `Unit` streamed in order (tar shards, parquet row groups, videos,
    Python iterables): each yields its image items and is read front to back, once. Units
    are split across decode workers and torchrun ranks; with fewer units than consumers,
    every consumer walks every unit and keeps every n-th image (skipped members are not
    read where the container allows it).

An item's name is what reports show (relative, printable, no absolute path, no URL
credentials); its digest (16 bytes) is what `--append` compares: sha256 of the bytes
unless the source gives another (pixels in memory, video frames).
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from vdnacli.errors import ConfigError, SourceError

MAX_FILE_BYTES = 1 << 30  # larger "images" (files, members, cells, downloads) are refused unread (1 GiB)

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif",
}
VIDEO_EXTENSIONS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v"}
TABLE_EXTENSIONS = {".parquet", ".csv", ".jsonl"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class Item(NamedTuple):
    """One image as a source yields it: bytes, or the reason it cannot be had."""

    name: str
    data: bytes | None = None
    digest: bytes | None = None  # None: sha256(data)[:16]
    error: str | None = None


@dataclass(frozen=True)
class SourceOptions:
    """How a source is read; one value from the command line to the pipeline.

    column: the table column holding images, bytes, paths or URLs (default: the first image
    column of a parquet file, or the one obvious column of a CSV/JSONL). split: the Hub
    dataset split (default: train, when the repo has one). every / fps: video frame
    sampling (every N-th frame, or F frames per second; default every frame). url_*: HTTP
    timeout per request (s), retries after a failed attempt, and parallel downloads per
    process. offline: Hub datasets from the HF cache only.
    """

    column: str | None = None
    split: str | None = None
    every: int | None = None
    fps: float | None = None
    url_timeout: float = 30.0
    url_retries: int = 2
    url_concurrency: int = 16
    offline: bool = False

    def __post_init__(self):
        if self.every is not None and self.fps is not None:
            raise ConfigError("--every and --fps cannot be combined: sample by frame count or by time")
        if self.every is not None and self.every < 1:
            raise ConfigError("--every must be at least 1")
        if self.fps is not None and not (self.fps > 0 and np.isfinite(self.fps)):
            raise ConfigError("--fps must be a positive number")
        if not (self.url_timeout > 0 and np.isfinite(self.url_timeout)):
            raise ConfigError("--url-timeout must be a positive number of seconds")
        if not 0 <= self.url_retries <= 10:
            raise ConfigError("--url-retries must be between 0 and 10")
        if not 1 <= self.url_concurrency <= 256:
            raise ConfigError("--url-concurrency must be between 1 and 256")


# -- names ----------------------------------------------------------------------------------
def printable(name: str) -> str:
    """A file name as text that can always be printed: undecodable bytes as \\xNN."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def is_tar(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES)


def is_table(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in TABLE_EXTENSIONS


def is_url(text: str) -> bool:
    """scheme://... with a scheme of two letters or more (C:\\ is a Windows path, not a URL)."""
    head, sep, _ = text.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").replace("-", "").replace(".", "").isalnum()


def public_url(url: str) -> str:
    """A URL as it may be shown or recorded: no user:password@, no query string or fragment
    (signed URLs carry their secrets there); "?…" marks a dropped query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return printable(url.split("?")[0].split("@")[-1])
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    out = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return printable(out + ("?…" if parts.query else ""))


def display_path(text: str) -> str:
    """A path from a list or table as reports show it: relative as given, absolute as its name."""
    return printable(os.path.basename(text) if os.path.isabs(text) else text)


# -- reading local files ----------------------------------------------------------------------
def read_regular_file(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of sane size; OSError (readable strerror) for anything else.

    O_NONBLOCK: opening a FIFO must not wait for a writer; fstat decides before reading."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "folder" if stat.S_ISDIR(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
            raise OSError(errno.EINVAL, f"not a regular file ({kind})")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"file too large ({st.st_size >> 20} MiB)")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # grew while being read
            raise OSError(errno.EFBIG, "file too large")
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_regular_file(path: str) -> None:
    """OSError unless `path` is a regular file (a FIFO or device given as a shard or table
    would block or never end)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")


# -- open archives, one per process ------------------------------------------------------------
class Handles:
    """Open containers (zip archives) kept per process: opened on first use in each decode
    worker, reused for every member, closed at the end of a run. A forked worker never
    uses its parent's handle (they would share one file offset): the pid decides."""

    def __init__(self, limit: int = 16):
        self.limit = limit
        self.pid = os.getpid()
        self.open: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str, opener: Callable):
        with self.lock:
            if self.pid != os.getpid():  # a fresh worker: forget (do not close) the parent's handles
                self.pid, self.open = os.getpid(), OrderedDict()
            h = self.open.get(key)
            if h is None:
                h = opener()
                self.open[key] = h
                while len(self.open) > self.limit:
                    _, old = self.open.popitem(last=False)
                    old.close()
            else:
                self.open.move_to_end(key)
            return h

    def close_all(self) -> None:
        with self.lock:
            if self.pid == os.getpid():
                for h in self.open.values():
                    try:
                        h.close()
                    except OSError:
                        pass
            self.open = OrderedDict()
            self.pid = os.getpid()


HANDLES = Handles()


# -- refs: random access ---------------------------------------------------------------------
class Ref:
    """One image read on its own. Subclasses set `name` and implement read_bytes(); read()
    may also give the digest. `remote` refs are fetched in parallel by the pipeline."""

    name: str
    remote = False

    def read_bytes(self) -> bytes:
        raise NotImplementedError

    def read(self) -> Item:
        return Item(self.name, self.read_bytes())


@dataclass(frozen=True)
class FailedRef(Ref):
    """An entry known unreadable when listed (a folder that cannot be listed, a missing shard)."""

    name: str
    error: str

    def read_bytes(self) -> bytes:
        raise OSError(errno.EIO, self.error)

    def read(self) -> Item:
        return Item(self.name, error=self.error)


# -- units: streamed ---------------------------------------------------------------------------
Want = Callable[[int], bool]


class Unit:
    """A stream of images read front to back (a tar shard, a parquet row group, a video).

    items(want) yields, in order, one Item per image position p for which want(p) is true,
    and calls want exactly once per image position, before reading that image's bytes (so
    unwanted images cost as little as the container allows). A failure of the whole unit
    (cannot open, truncated) is one Item with an error, yielded only when `report` is true.
    count() is the number of image positions (it may read the whole unit)."""

    name: str

    def count(self) -> int:
        seen = [0]
        for _ in self.items(counting(lambda p: False, seen), report=False):
            pass
        return seen[0]

    def known_count(self) -> int | None:
        """The count when it is cheap (metadata), else None."""
        return None

    def items(self, want: Want | None, report: bool = True) -> Iterator[Item]:
        raise NotImplementedError


@dataclass(frozen=True)
class FailedUnit(Unit):
    """A unit known unusable when listed (a shard a brace pattern names that does not exist)."""

    name: str
    error: str

    def count(self) -> int:
        return 0

    def known_count(self) -> int | None:
        return 0

    def items(self, want: Want | None, report: bool = True) -> Iterator[Item]:
        if report:
            yield Item(self.name, error=self.error)


def counting(want: Want | None, counter: list[int]) -> Want:
    """want, counting the positions asked about in counter[0]."""
    def ask(p: int) -> bool:
        counter[0] = p + 1
        return want is None or want(p)
    return ask


# -- a source ------------------------------------------------------------------------------------
@dataclass
class Source:
    """What `vdna add` reads: refs (random access) or units (streamed), and its provenance.

    origin: the public description a DNA records (kind and public identity: repo + commit,
    shard names, table name + column); never a local absolute path or URL credentials.
    in_process: a one-shot Python iterable; it cannot be split across worker processes.
    concurrency: SourceOptions.url_concurrency.
    """

    kind: str
    origin: dict
    refs: list | None = None
    units: list | None = None
    keep: list | None = None  # per unit: frozenset of kept positions (a --limit subset), or None
    part: tuple[int, int] = (0, 1)  # (rank, world) of a torchrun shard
    in_process: bool = False
    label: str = ""
    concurrency: int = 16  # remote refs (URLs, Hub files) fetched at once, over all decode workers

    def __post_init__(self):
        if (self.refs is None) == (self.units is None):
            raise ValueError("a Source has refs or units")

    @classmethod
    def of_refs(cls, refs: Sequence, kind: str = "images", origin: dict | None = None, label: str = "") -> "Source":
        return cls(kind, origin if origin is not None else {"kind": kind}, refs=list(refs), label=label)

    @property
    def streamed(self) -> bool:
        return self.units is not None

    def __len__(self) -> int:
        return len(self.refs) if self.refs is not None else len(self.units)

    @property
    def total(self) -> int | None:
        """The number of images, when known without reading the data."""
        if self.refs is not None:
            return len(self.refs)
        if self.keep is not None:
            n = sum(len(k) for k in self.keep)
        else:
            counts = [u.known_count() for u in self.units]
            if any(c is None for c in counts):
                return None
            n = sum(counts)
        if self.part[1] > 1:  # this rank's share, about
            n = -(-n // self.part[1])
        return n

    def select(self, limit: int | None, seed: int = 0) -> "Source":
        """A seeded random subset of `limit` images (all of them when there are fewer).
        Streamed sources count their images first (for tar shards: one read of the headers)."""
        if limit is None:
            return self
        if limit < 1:
            raise SourceError("--limit must be at least 1")
        rng = np.random.default_rng(seed)
        if self.refs is not None:
            if limit >= len(self.refs):
                return self
            pick = rng.choice(len(self.refs), size=limit, replace=False)
            return _replace(self, refs=[self.refs[i] for i in sorted(pick)])
        counts = [u.known_count() for u in self.units]
        counts = [c if c is not None else u.count() for c, u in zip(counts, self.units)]
        total = sum(counts)
        if limit >= total:
            return self
        pick = np.sort(rng.choice(total, size=limit, replace=False))
        starts = np.concatenate([[0], np.cumsum(counts)])
        units, keep = [], []
        for i, u in enumerate(self.units):
            lo, hi = np.searchsorted(pick, [starts[i], starts[i + 1]])
            if hi > lo:
                units.append(u)
                keep.append(frozenset(int(p - starts[i]) for p in pick[lo:hi]))
        return _replace(self, units=units, keep=keep)

    def shard(self, rank: int, world: int) -> "Source":
        """This torchrun rank's share: every world-th ref, or a part of the streamed units."""
        if world <= 1:
            return self
        if self.refs is not None:
            return _replace(self, refs=self.refs[rank::world])
        return _replace(self, part=(rank, world))

    def iter_items(self, worker: int = 0, workers: int = 1) -> Iterator[Item]:
        """The items of decode worker `worker` of `workers` (within this rank's part)."""
        rank, world = self.part
        me, n = rank * workers + worker, world * workers
        units = self.units
        keeps = self.keep or [None] * len(units)
        if n == 1 or len(units) >= n:
            for i in range(me, len(units), n):
                keep = keeps[i]
                yield from units[i].items(keep.__contains__ if keep is not None else None, report=True)
            return
        seen = [0]  # fewer units than consumers: every consumer walks every unit, keeps every n-th image
        for i, u in enumerate(units):
            keep = keeps[i]

            def want(p: int, keep=keep) -> bool:
                if keep is not None and p not in keep:
                    return False
                mine = seen[0] % n == me
                seen[0] += 1
                return mine

            yield from u.items(want, report=i % n == me)


def _replace(src: Source, **changes) -> Source:
    from dataclasses import replace

    return replace(src, **changes)
