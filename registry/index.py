"""A consolidated side index: small per-entry arrays stacked in a few HDF5 files per key,
so a scan over thousands of entries reads a few files instead of thousands.

The index is derived data, kept crash-safe and lock-free for readers by never modifying
a file in place:

  <registry>/index/<key>/seg-<seq>.h5   immutable segments: names (bytes [E]),
                                        stamps (int64 [E, 4]), one dataset per field [E, ...]

* Each row records the stamp (inode, size, mtime_ns, ctime_ns) of the entry file it was
  computed from, taken *before* the entry was read; a row counts only while it equals the
  entry's current stamp, so a replaced entry is recomputed, never served stale.
* New rows go into a new segment, written completely in <registry>/tmp, fsynced and
  renamed into place under the registry lock. A process killed at any moment leaves the
  previous set of segments plus, at most, a complete new one; never a torn row.
* Segments are merged size-tiered (a suffix whose rows outnumber the segment before it),
  so each row is rewritten O(log E) times and there are O(log E) segments.
* Readers take no lock: they open the segments they list and keep them open, a
  consistent snapshot even if a compaction deletes the files meanwhile. Rows of a later
  segment override earlier ones.
* A segment that cannot be read is ignored (its rows are recomputed) and deleted by the
  next writer; chunks carry fletcher32 checksums, and a row whose read fails is recomputed
  from its entry. Failing to write (read-only registry, full disk, no permission, busy
  lock) only costs speed: the rows computed for this query are used from memory, and
  nothing is written at all when the disk has too little room left for the segment.

Which rows are current is decided against a `Listing` of every entry's stamp. A full
listing stats every entry file (~6 us each: 0.6 s at 100,000 entries), so the last full
listing is kept in <registry>/index/listing.h5 with the stamp of the entries directory:
every write of the registry renames a file into or out of entries/, which changes that
stamp, so while it is unchanged the cached listing is the current one (see `Listing`).
Names and stamps are handled as numpy arrays (names as fixed-width bytes, sorted and
joined with searchsorted): per-name Python work is what dominated at 100,000 entries.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping

import h5py
import numpy as np

from registry.errors import RegistryError
from registry.layout import entry_stamp, fsync_dir
from registry.lock import FileLock

_NAME_DTYPE = "S128"
_FORMAT = "vdna-index-segment"
_VERSION = 1
_SEG_RE = re.compile(r"^seg-(\d{12})\.h5$")
_MAX_SEGMENTS = 24
_COPY_ROWS = 4096  # rows per block when merging segments (bounded memory)
_LOCK_TIMEOUT = 15.0  # an index write is an optimisation: do not wait long for it
_SPARE_BYTES = 64 << 20  # an index segment is written only if the disk keeps this much free besides it
_LISTING = "listing.h5"
_LISTING_FORMAT = "vdna-index-listing"
_RACY_NS = 2_000_000_000  # a directory changed this recently may change again within its timestamp's tick
_VERIFY_MAX = 10_000  # cached listings up to this size are re-checked entry by entry on a thread


def _unlink_quietly(path: Path) -> None:
    """Remove a file if possible; a read-only or vanished directory is not an error here
    (on a read-only filesystem even unlinking a missing file fails with EROFS)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _now_ns() -> int:
    return time.time_ns()


def _dir_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def encode_names(names) -> np.ndarray:
    """Entry names as fixed-width bytes (registry names are ASCII, at most 128 characters)."""
    return np.array([n.encode("utf-8") for n in names], dtype=_NAME_DTYPE).reshape(-1)


def decode_names(names: np.ndarray) -> list[str]:
    return [n.decode("utf-8", "replace") for n in names.tolist()]


def _stamp_rows(stamps) -> np.ndarray:
    """Stamps as an int64 [n, 4] array, -1 rows where an entry is absent (None)."""
    return np.array([_NO_STAMP if s is None else s for s in stamps], dtype=np.int64).reshape(-1, 4)


_NO_STAMP = (-1, -1, -1, -1)


def _lookup(keys: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the sorted `keys`, found mask) of each of `names`."""
    if keys.size == 0:
        return np.zeros(names.size, dtype=np.int64), np.zeros(names.size, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, names), keys.size - 1)
    return pos, keys[pos] == names


class Listing:
    """Every entry of a registry with the stamp of its file, as of one moment.

    `current(registry)` returns the listing cached in index/listing.h5 when the entries
    directory's own stamp (inode, mtime, ctime) equals the one recorded with it, and
    otherwise lists and stats every entry (and caches the result, best effort). The
    registry only ever changes entries/ by renaming a complete file in (add, replace) or
    out (remove), and each rename updates the directory's mtime and ctime, so an unchanged
    directory stamp means unchanged entries. Two guards:
      * racy timestamps: a directory whose mtime is within 2 s of the listing's start could
        be changed again within the same timestamp tick, so such a listing is not cached;
      * files edited in place behind the registry's back (`cp` over an entry keeps its
        inode and does not touch the directory), which the registry's contract rules out
        but a user can do: `check(name)` re-stats one entry (the search does it for every
        entry it reads in full), and for catalogs of up to _VERIFY_MAX entries `verify()`
        re-stats every entry on a background thread while the caller works, `ok()` saying
        whether every stamp still matched. On a mismatch the caller drops the cache
        (`forget`) and starts again from a full listing. Above _VERIFY_MAX entries the
        thread would cost more than the whole query (100,000 stats: ~1 s here, and its
        100,000 GIL hand-overs slow the caller as much again), so an entry edited in
        place is then noticed when read in full, when the registry next changes, or with
        `nearest --exact`.
    `names_b` (sorted bytes) and `stamps` ([E, 4] int64) are row-aligned.
    """

    def __init__(self, registry, names_b: np.ndarray, stamps: np.ndarray, cached: bool):
        self.registry, self.names_b, self.stamps, self.cached = registry, names_b, stamps, cached
        self._names: list[str] | None = None
        self._checker = None

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = decode_names(self.names_b)
        return self._names

    @property
    def path(self) -> Path:
        return Path(self.registry.root) / "index" / _LISTING

    def stamps_of(self, names_b: np.ndarray) -> np.ndarray:
        """[n, 4] stamps of `names_b`, -1 rows for names not listed."""
        pos, found = _lookup(self.names_b, names_b)
        out = np.full((names_b.size, 4), -1, dtype=np.int64)
        out[found] = self.stamps[pos[found]]
        return out

    def check(self, name: str) -> bool:
        """True when `name`'s file still has the stamp this listing holds for it."""
        pos, found = _lookup(self.names_b, encode_names([name]))
        st = entry_stamp(self.registry.entries_dir / f"{name}.h5")
        return bool(found[0]) and st is not None and tuple(self.stamps[pos[0]].tolist()) == st

    def verify(self) -> None:
        """Start re-stating every entry of a cached listing in the background (see `ok`);
        only up to _VERIFY_MAX entries."""
        if not self.cached or self._checker is not None or self.names_b.size > _VERIFY_MAX:
            return
        prefix = str(self.registry.entries_dir) + os.sep
        names_b, stamps_a, result = self.names_b, self.stamps, [None]

        def run():  # everything per name happens here, off the caller's thread
            same = True
            try:
                for n, want in zip(decode_names(names_b), stamps_a.tolist()):
                    st = os.stat(prefix + n + ".h5")
                    if [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] != want:
                        same = False
                        break
            except OSError:
                same = False
            result[0] = same

        self._checker = (threading.Thread(target=run, name="vdna-listing-check", daemon=True), result)
        self._checker[0].start()

    def ok(self) -> bool:
        """Whether the listing is current: always for a fresh one; for a cached one, whether
        every entry still had its recorded stamp when `verify` looked (waits for it)."""
        if not self.cached or self.names_b.size > _VERIFY_MAX:
            return True
        self.verify()
        thread, result = self._checker
        thread.join()
        return bool(result[0])

    def forget(self) -> None:
        _unlink_quietly(self.path)

    @classmethod
    def current(cls, registry, fresh: bool = False) -> "Listing":
        entries = registry.entries_dir
        before = _dir_stamp(entries)
        path = Path(registry.root) / "index" / _LISTING
        if before is not None and not fresh:
            cached = cls._read(registry, path, before)
            if cached is not None:
                return cached
        start = _now_ns()
        names = registry.names()
        stamps = _stamp_rows(entry_stamp(entries / f"{n}.h5") for n in names)
        names_b = encode_names(names)
        keep = stamps[:, 0] >= 0  # removed while listing
        order = np.argsort(names_b[keep], kind="stable")
        listing = cls(registry, names_b[keep][order], stamps[keep][order], cached=False)
        after = _dir_stamp(entries)
        if before is not None and before == after and max(before[1], before[2]) < start - _RACY_NS:
            listing._write(path, before)
        return listing

    @classmethod
    def _read(cls, registry, path: Path, dir_stamp) -> "Listing | None":
        try:
            with h5py.File(path, "r", locking=False) as f:
                if f.attrs.get("format") != _LISTING_FORMAT or int(f.attrs.get("version", -1)) != _VERSION:
                    return None
                if tuple(int(x) for x in f.attrs["dir_stamp"]) != tuple(dir_stamp):
                    return None
                names_b = f["names"][()]
                stamps = f["stamps"][()]
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            return None  # missing, damaged or of another version: list again
        if (names_b.dtype != np.dtype(_NAME_DTYPE) or names_b.ndim != 1 or stamps.shape != (names_b.size, 4)
                or stamps.dtype != np.int64 or (names_b[1:] <= names_b[:-1]).any()):
            return None
        return cls(registry, names_b, stamps, cached=True)

    def _write(self, path: Path, dir_stamp) -> None:
        """Cache this listing (best effort: a read-only or full registry just lists again next time)."""
        tmp = Path(self.registry.tmp_dir) / f"listing.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.part"
        try:
            if shutil.disk_usage(self.registry.tmp_dir).free < _SPARE_BYTES + 200 * self.names_b.size:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(tmp, "w", locking=False) as f:
                f.attrs["format"] = _LISTING_FORMAT
                f.attrs["version"] = _VERSION
                f.attrs["dir_stamp"] = np.asarray(dir_stamp, dtype=np.int64)
                f.create_dataset("names", data=self.names_b)
                f.create_dataset("stamps", data=self.stamps)
            os.replace(tmp, path)  # no fsync: a torn cache after a crash reads as damaged and is rebuilt
        except (OSError, RuntimeError, ValueError):
            pass
        finally:
            _unlink_quietly(tmp)


class _Segment:
    """One segment: an open read-only HDF5 file, or rows held in memory."""

    def __init__(self, names: np.ndarray, stamps: np.ndarray, file: h5py.File | None = None,
                 data: dict[str, np.ndarray] | None = None, path: Path | None = None):
        self.names, self.stamps, self.file, self.data, self.path = names, stamps, file, data, path
        self._ds: dict[str, h5py.Dataset] = {}

    def __len__(self) -> int:
        return len(self.names)

    def name(self, i: int) -> str:
        return self.names[i].decode("utf-8", "replace")

    def dataset(self, field: str) -> h5py.Dataset:
        if field not in self._ds:  # an h5py lookup by path is not free: once per segment
            self._ds[field] = self.file[field]
        return self._ds[field]

    def read(self, field: str, local: np.ndarray) -> np.ndarray:
        """Rows `local` (sorted, unique) of one field."""
        if self.data is not None:
            return self.data[field][local]
        ds = self.dataset(field)
        if local.size > ds.shape[0] // 4:
            return ds[()][local]
        # One slice per run of consecutive rows: h5py's point selection (ds[list]) builds a
        # union of hyperslabs and is ~20x slower than reading the same rows slice by slice.
        out = np.empty((local.size, *ds.shape[1:]), dtype=ds.dtype)
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, local.size]):
            ds.read_direct(out, np.s_[local[a] : local[a] + (b - a)], np.s_[a:b])
        return out

    def close(self) -> None:
        self._ds = {}
        if self.file is not None:
            try:
                self.file.close()
            except Exception:  # closing a damaged file must not hide the real problem
                pass
            self.file = None


def _latest(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique non-empty names, index of the last occurrence of each)."""
    if names.size and names[0] != b"" and (names[1:] > names[:-1]).all():
        return names, np.arange(names.size)  # one segment (rows are written sorted by name)
    order = np.argsort(names, kind="stable")  # equal names keep their order: the last one is the latest
    ordered = names[order]
    last = np.ones(ordered.size, dtype=bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    last &= ordered != b""
    return ordered[last], order[last]


class SideIndex:
    def __init__(self, registry, key: str, fields: Mapping[str, tuple[tuple[int, ...], str]]):
        """`fields`: name -> (row shape, dtype)."""
        self.registry = registry
        self.key = key
        self.fields = {k: (tuple(int(x) for x in shape), np.dtype(dtype)) for k, (shape, dtype) in fields.items()}
        self.dir = Path(registry.root) / "index" / key
        self._segments: list[_Segment] = []
        self._offsets = np.zeros(1, dtype=np.int64)
        self._keys = np.zeros(0, dtype=_NAME_DTYPE)  # sorted names with a row
        self._krow = np.zeros(0, dtype=np.int64)  # each one's latest row
        self._kstamp = np.zeros((0, 4), dtype=np.int64)  # and that row's stamp
        self._bad: list[Path] = []
        self._compute: Callable | None = None

    # -- snapshot ----------------------------------------------------------------------
    def close(self) -> None:
        for s in getattr(self, "_segments", ()):
            s.close()
        self._segments = []

    def __del__(self):
        self.close()

    def __enter__(self) -> "SideIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _segment_paths(self) -> list[Path]:
        try:
            return sorted(p for p in self.dir.iterdir() if _SEG_RE.match(p.name))
        except FileNotFoundError:
            return []

    def _open_segment(self, path: Path) -> _Segment | None:
        """Open and validate one segment; None (and remembered as bad) when unusable."""
        try:
            f = h5py.File(path, "r", locking=False)
        except FileNotFoundError:
            raise
        except (OSError, RuntimeError):
            self._bad.append(path)
            return None
        try:
            if f.attrs.get("format") != _FORMAT or int(f.attrs.get("version", -1)) != _VERSION:
                raise ValueError("not a segment of this version")
            names = f["names"][()]
            stamps = f["stamps"][()]
            if names.dtype != np.dtype(_NAME_DTYPE) or names.ndim != 1 or stamps.shape != (names.size, 4):
                raise ValueError("stamps do not match names")
            seg = _Segment(names, stamps.astype(np.int64, copy=False), file=f, path=path)
            for k, (shape, dtype) in self.fields.items():
                ds = seg.dataset(k)
                if ds.shape != (names.size, *shape) or ds.dtype != dtype:
                    raise ValueError(f"field {k} has another layout")
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            f.close()
            self._bad.append(path)
            return None
        return seg

    def _load(self) -> None:
        """Open every listed segment; a listing raced by a compaction is retried."""
        for _ in range(20):
            self.close()
            self._bad = []
            segments = []
            try:
                for p in self._segment_paths():
                    s = self._open_segment(p)
                    if s is not None:
                        segments.append(s)
            except FileNotFoundError:
                for s in segments:
                    s.close()
                continue
            self._set_segments(segments)
            return
        self._set_segments([])  # the index is being rewritten continuously: go on without it

    def _set_segments(self, segments: list[_Segment]) -> None:
        self._segments = segments
        self._offsets = np.cumsum([0] + [len(s) for s in segments]).astype(np.int64)
        if not segments:
            self._keys, self._krow = np.zeros(0, dtype=_NAME_DTYPE), np.zeros(0, dtype=np.int64)
            self._kstamp = np.zeros((0, 4), dtype=np.int64)
            return
        names = np.concatenate([s.names for s in segments]) if len(segments) > 1 else segments[0].names
        stamps = np.concatenate([s.stamps for s in segments]) if len(segments) > 1 else segments[0].stamps
        self._keys, self._krow = _latest(names)
        self._kstamp = stamps[self._krow]

    def _match(self, names_b: np.ndarray, stamps: np.ndarray) -> np.ndarray:
        """The row of each name whose stamp equals the given one, else -1."""
        if names_b.size == self._keys.size and np.array_equal(names_b, self._keys):
            pos, found = np.arange(names_b.size), np.ones(names_b.size, dtype=bool)  # the usual case: same names
        else:
            pos, found = _lookup(self._keys, names_b)
        if self._keys.size:
            found &= (self._kstamp[pos] == stamps).all(axis=1)
        return np.where(found, self._krow[pos] if self._keys.size else -1, -1)

    # -- public API --------------------------------------------------------------------
    def sync_rows(self, names_b: np.ndarray, stamps: np.ndarray,
                  compute: Callable[[str], Mapping[str, np.ndarray] | None] | None) -> np.ndarray:
        """Bring the rows of `names_b` (bytes) up to date with their entries' `stamps`
        ([n, 4]; -1 rows for absent entries); returns each name's row, -1 where unusable.
        With `compute` None, only looks (no row is computed)."""
        self._load()
        return self.update(names_b, stamps, compute)

    def update(self, names_b: np.ndarray, stamps: np.ndarray,
               compute: Callable[[str], Mapping[str, np.ndarray] | None] | None) -> np.ndarray:
        """`sync_rows` on the segments already loaded (by a previous sync_rows)."""
        rows = self._match(names_b, stamps)
        if compute is None:
            return rows
        self._compute = compute
        stale = np.flatnonzero((rows < 0) & (stamps[:, 0] >= 0))
        if stale.size:
            fresh = self._compute_rows(decode_names(names_b[stale]), stamps[stale])
            if fresh is not None:
                self._set_segments(self._segments + [fresh])
                self._persist(fresh)
                rows = self._match(names_b, stamps)
        elif self._bad:
            self._persist(None)
        return rows

    def sync(self, names: list[str], compute: Callable[[str], Mapping[str, np.ndarray] | None],
             listing: Listing | None = None) -> dict[str, int]:
        """`sync_rows` for a list of names, stamps from `listing` (else stat'ed here);
        returns {name: row} of the usable rows."""
        names_b = encode_names(names)
        if listing is not None:
            stamps = listing.stamps_of(names_b)
        else:
            stamps = _stamp_rows(entry_stamp(self.registry.entries_dir / f"{n}.h5") for n in names)
        rows = self.sync_rows(names_b, stamps, compute)
        return {n: int(r) for n, r in zip(names, rows.tolist()) if r >= 0}

    def read(self, field: str, rows: list[int] | np.ndarray) -> np.ndarray:
        """Rows of one field, in the order given."""
        shape, dtype = self.fields[field]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, *shape), dtype=dtype)
        if rows.size == 0:
            return out
        seg_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for si in np.unique(seg_of):
            at = np.nonzero(seg_of == si)[0]
            seg = self._segments[si]
            wanted = rows[at] - self._offsets[si]
            if seg.file is not None and at[-1] - at[0] == at.size - 1 and (np.diff(wanted) == 1).all():
                try:  # a run of consecutive rows (a full scan): straight into `out`, no copies
                    seg.dataset(field).read_direct(out, np.s_[wanted[0] : wanted[-1] + 1], np.s_[at[0] : at[-1] + 1])
                    continue
                except (OSError, RuntimeError, ValueError):
                    pass  # damaged chunk: the general path below recomputes the rows
            local, inverse = np.unique(wanted, return_inverse=True)
            try:
                data = seg.read(field, local)
            except (OSError, RuntimeError, ValueError):  # damaged chunk (fletcher32) or vanished file
                data = self._recompute(field, seg, local)
            out[at] = data[inverse]
        return out

    # -- computing and writing rows ----------------------------------------------------
    def _row_values(self, name: str, compute) -> dict[str, np.ndarray] | None:
        values = compute(name)
        if values is None:
            return None
        row = {}
        for k, (shape, dtype) in self.fields.items():
            v = np.asarray(values[k])
            if v.shape != shape or v.dtype.kind not in "biuf":
                return None  # an entry whose derived arrays do not fit: not usable from the index
            row[k] = v.astype(dtype)
        return row

    def _compute_rows(self, names: list[str], stamps: np.ndarray) -> _Segment | None:
        kept, kept_stamps, cols = [], [], {k: [] for k in self.fields}
        for name, stamp in zip(names, stamps):
            row = self._row_values(name, self._compute)
            if row is None:
                continue
            kept.append(name)
            kept_stamps.append(stamp)
            for k in self.fields:
                cols[k].append(row[k])
        if not kept:
            return None
        names_b = encode_names(kept)
        order = np.argsort(names_b, kind="stable")  # rows by name: the union of segments sorts as a few runs
        data = {k: np.stack(cols[k])[order] for k in self.fields}
        return _Segment(names_b[order], np.asarray(kept_stamps, dtype=np.int64).reshape(-1, 4)[order], data=data)

    def _recompute(self, field: str, seg: _Segment, local: np.ndarray) -> np.ndarray:
        shape, dtype = self.fields[field]
        out = np.zeros((local.size, *shape), dtype=dtype)
        for j, i in enumerate(local):
            row = self._row_values(seg.name(i), self._compute) if self._compute else None
            if row is None:
                raise RegistryError(f"index {self.key} is damaged and entry '{seg.name(i)}' cannot be re-read; "
                                    f"delete {self.dir}")
            out[j] = row[field]
        if seg.path is not None:
            self._bad.append(seg.path)
        return out

    def _write_segment(self, path: Path, names, stamps: np.ndarray, fill) -> None:
        """Write a complete segment to `path` and fsync it; `fill(name, dataset)` writes each field."""
        names_b = names if isinstance(names, np.ndarray) else encode_names(names)
        n = names_b.size
        with h5py.File(path, "w", locking=False) as f:
            f.attrs["format"] = _FORMAT
            f.attrs["version"] = _VERSION
            f.create_dataset("names", data=names_b.astype(_NAME_DTYPE))
            f.create_dataset("stamps", data=np.asarray(stamps, dtype=np.int64).reshape(n, 4))
            for k, (shape, dtype) in self.fields.items():
                row_bytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
                per_chunk = max(1, min(n, 4096, (1 << 16) // row_bytes))
                ds = f.create_dataset(k, shape=(n, *shape), dtype=dtype, chunks=(per_chunk, *shape),
                                      fletcher32=True)
                fill(k, ds)
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())

    def _tmp(self) -> Path:
        return self.registry.tmp_dir / f"index-{self.key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.part"

    def _next_path(self) -> Path:
        seqs = [int(_SEG_RE.match(p.name).group(1)) for p in self._segment_paths()]
        return self.dir / f"seg-{max(seqs, default=0) + 1:012d}.h5"

    def _publish(self, tmp: Path) -> Path:
        final = self._next_path()
        os.replace(tmp, final)
        fsync_dir(self.dir)
        return final

    def _room_for(self, rows: int) -> bool:
        """Whether the disk keeps _SPARE_BYTES free after writing a segment of `rows` rows:
        HDF5 must never meet a full disk mid-write."""
        row_bytes = sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for shape, dtype in self.fields.values())
        try:
            free = shutil.disk_usage(self.registry.tmp_dir).free
        except OSError:
            return False
        return free > _SPARE_BYTES + rows * (row_bytes + 160)

    def _persist(self, seg: _Segment | None) -> None:
        """Store new rows as a segment, drop damaged segments, compact (best effort)."""
        tmp = self._tmp()
        try:
            if seg is not None and not self._room_for(len(seg)):
                return
            with FileLock(Path(self.registry.root) / ".lock", timeout=_LOCK_TIMEOUT):
                self.dir.mkdir(parents=True, exist_ok=True)
                if seg is not None:
                    self._write_segment(tmp, seg.names, seg.stamps, lambda k, ds: ds.write_direct(seg.data[k]))
                    self._publish(tmp)
                for p in set(self._bad):
                    _unlink_quietly(p)
                _unlink_quietly(self.dir.parent / f"{self.key}.h5")  # single-file index of earlier versions
                self._compact()
        except (OSError, RuntimeError, ValueError, RegistryError):
            pass  # a cache that cannot be written only costs speed; rows of this query stay in memory
        finally:
            _unlink_quietly(tmp)

    def _compact(self) -> None:
        """Merge the newest segments while they outnumber the one before (lock held)."""
        segs = []
        try:
            for p in self._segment_paths():
                s = self._open_segment(p)
                if s is not None:
                    segs.append(s)
            k = 1
            if len(segs) > _MAX_SEGMENTS:
                k = len(segs)
            else:
                while k < len(segs) and len(segs[-k - 1]) <= sum(len(s) for s in segs[-k:]):
                    k += 1
            if k >= 2 and self._room_for(sum(len(s) for s in segs[-k:])):
                self._merge(segs[-k:])
        finally:
            for s in segs:
                s.close()

    def _merge(self, segs: list[_Segment]) -> None:
        """Rewrite `segs` as one segment of their latest rows that still match their entry."""
        names_all = np.concatenate([s.names for s in segs])
        seg_of = np.repeat(np.arange(len(segs)), [len(s) for s in segs])
        local_of = np.concatenate([np.arange(len(s)) for s in segs])
        _, latest = _latest(names_all)
        prefix = str(self.registry.entries_dir) + os.sep
        current = [entry_stamp(Path(prefix + n + ".h5")) for n in decode_names(names_all[latest])]
        stamps_all = np.concatenate([s.stamps for s in segs])
        alive = latest[(stamps_all[latest] == _stamp_rows(current)).all(axis=1)]
        keep = [np.sort(local_of[alive][seg_of[alive] == si]) for si in range(len(segs))]
        if alive.size:
            names = np.concatenate([segs[si].names[k] for si, k in enumerate(keep)])
            stamps = np.concatenate([segs[si].stamps[k] for si, k in enumerate(keep)])

            def fill(field, ds):
                o = 0
                for s, k in zip(segs, keep):
                    for a in range(0, k.size, _COPY_ROWS):
                        block = k[a: a + _COPY_ROWS]
                        ds[o: o + block.size] = s.dataset(field)[block[0]: block[-1] + 1][block - block[0]]
                        o += block.size

            tmp = self._tmp()
            try:
                self._write_segment(tmp, names, stamps, fill)
                self._publish(tmp)
            finally:
                _unlink_quietly(tmp)
        for s in segs:
            _unlink_quietly(s.path)
        fsync_dir(self.dir)
