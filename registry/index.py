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
from registry.layout import Stamp, entry_stamp, fsync_dir
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
        inode and does not touch the directory): `verify()` re-stats every listed entry on
        a background thread (os.stat releases the GIL) while the caller works with the
        listing, and `ok()` says whether every stamp still matched; when one did not, the
        caller drops the cache (`forget`) and starts again from a full listing.
    """

    def __init__(self, registry, names: list[str], stamps: dict, cached: bool):
        self.registry, self.names, self.stamps, self.cached = registry, names, stamps, cached
        self._checker = None

    @property
    def path(self) -> Path:
        return Path(self.registry.root) / "index" / _LISTING

    def verify(self) -> None:
        """Start re-stating every entry of a cached listing in the background (see `ok`)."""
        if not self.cached or self._checker is not None:
            return
        entries = self.registry.entries_dir
        names, stamps, result = list(self.names), self.stamps, [None]

        def run():
            same = True
            try:
                for n in names:
                    if entry_stamp(entries / f"{n}.h5") != stamps[n]:
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
        if not self.cached:
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
        stamps = {}
        for n in names:
            st = entry_stamp(entries / f"{n}.h5")
            if st is not None:
                stamps[n] = st
        names = [n for n in names if n in stamps]
        listing = cls(registry, names, stamps, cached=False)
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
                raw = f["names"][()]
                stamps = f["stamps"][()]
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            return None  # missing, damaged or of another version: list again
        if stamps.shape != (raw.shape[0], 4):
            return None
        names = [n.decode("utf-8", "replace") for n in raw.tolist()]
        return cls(registry, names, dict(zip(names, map(tuple, stamps.tolist()))), cached=True)

    def _write(self, path: Path, dir_stamp) -> None:
        """Cache this listing (best effort: a read-only or full registry just lists again next time)."""
        tmp = Path(self.registry.tmp_dir) / f"listing.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.part"
        try:
            if shutil.disk_usage(self.registry.tmp_dir).free < _SPARE_BYTES + 200 * len(self.names):
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(tmp, "w", locking=False) as f:
                f.attrs["format"] = _LISTING_FORMAT
                f.attrs["version"] = _VERSION
                f.attrs["dir_stamp"] = np.asarray(dir_stamp, dtype=np.int64)
                f.create_dataset("names", data=np.array([n.encode() for n in self.names], dtype=_NAME_DTYPE))
                f.create_dataset("stamps", data=np.array([self.stamps[n] for n in self.names],
                                                         dtype=np.int64).reshape(len(self.names), 4))
            os.replace(tmp, path)  # no fsync: a torn cache after a crash reads as damaged and is rebuilt
        except (OSError, RuntimeError, ValueError):
            pass
        finally:
            _unlink_quietly(tmp)

class _Segment:
    """One segment: an open read-only HDF5 file, or rows held in memory."""

    def __init__(self, names: list[str], stamps: np.ndarray, file: h5py.File | None = None,
                 data: dict[str, np.ndarray] | None = None, path: Path | None = None):
        self.names, self.stamps, self.file, self.data, self.path = names, stamps, file, data, path

    def __len__(self) -> int:
        return len(self.names)

    def read(self, field: str, local: np.ndarray) -> np.ndarray:
        """Rows `local` (sorted, unique) of one field."""
        if self.data is not None:
            return self.data[field][local]
        ds = self.file[field]
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
        if self.file is not None:
            try:
                self.file.close()
            except Exception:  # closing a damaged file must not hide the real problem
                pass
            self.file = None


class SideIndex:
    def __init__(self, registry, key: str, fields: Mapping[str, tuple[tuple[int, ...], str]]):
        """`fields`: name -> (row shape, dtype)."""
        self.registry = registry
        self.key = key
        self.fields = {k: (tuple(int(x) for x in shape), np.dtype(dtype)) for k, (shape, dtype) in fields.items()}
        self.dir = Path(registry.root) / "index" / key
        self._segments: list[_Segment] = []
        self._offsets = np.zeros(1, dtype=np.int64)
        self._rows: dict[str, tuple[int, Stamp]] = {}
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
            names = [n.decode("utf-8", "replace") for n in f["names"][()].tolist()]
            stamps = f["stamps"][()]
            if stamps.shape != (len(names), 4):
                raise ValueError("stamps do not match names")
            for k, (shape, dtype) in self.fields.items():
                ds = f[k]
                if ds.shape != (len(names), *shape) or ds.dtype != dtype:
                    raise ValueError(f"field {k} has another layout")
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            f.close()
            self._bad.append(path)
            return None
        return _Segment(names, stamps, file=f, path=path)

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
        self._rows = {}
        for s, off in zip(segments, self._offsets[:-1]):
            self._add_rows(s, int(off))

    def _add_rows(self, seg: _Segment, offset: int) -> None:
        for i, (name, st) in enumerate(zip(seg.names, seg.stamps.tolist()), start=offset):
            if name:
                self._rows[name] = (i, tuple(st))

    def _append_segment(self, seg: _Segment) -> None:
        offset = int(self._offsets[-1])
        self._segments.append(seg)
        self._offsets = np.append(self._offsets, offset + len(seg))
        self._add_rows(seg, offset)

    # -- public API --------------------------------------------------------------------
    def sync(self, names: list[str], compute: Callable[[str], Mapping[str, np.ndarray] | None],
             listing: Listing | None = None) -> dict[str, int]:
        """Bring rows for `names` up to date; returns {name: row} of the usable rows.

        Rows are current when they carry the entry's stamp, taken from `listing` when given
        (one stat pass, or none, shared by every index a query uses), else stat'ed here."""
        self._compute = compute
        self._load()
        if listing is not None:
            current = {n: listing.stamps.get(n) for n in names}
        else:
            current = {n: entry_stamp(self.registry.entries_dir / f"{n}.h5") for n in names}
        stale = [n for n in names if current[n] is not None and self._rows.get(n, (None, None))[1] != current[n]]
        if stale:
            fresh = self._compute_rows(stale, current)
            if fresh is not None:
                self._append_segment(fresh)
                self._persist(fresh)
        elif self._bad:
            self._persist(None)
        return {n: self._rows[n][0] for n in names if n in self._rows and self._rows[n][1] == current[n]}

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
                    seg.file[field].read_direct(out, np.s_[wanted[0] : wanted[-1] + 1], np.s_[at[0] : at[-1] + 1])
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

    def _compute_rows(self, names: list[str], current: dict[str, Stamp | None]) -> _Segment | None:
        kept, stamps, cols = [], [], {k: [] for k in self.fields}
        for name in names:
            row = self._row_values(name, self._compute)
            if row is None:
                continue
            kept.append(name)
            stamps.append(current[name])
            for k in self.fields:
                cols[k].append(row[k])
        if not kept:
            return None
        data = {k: np.stack(cols[k]) for k in self.fields}
        return _Segment(kept, np.asarray(stamps, dtype=np.int64), data=data)

    def _recompute(self, field: str, seg: _Segment, local: np.ndarray) -> np.ndarray:
        shape, dtype = self.fields[field]
        out = np.zeros((local.size, *shape), dtype=dtype)
        for j, i in enumerate(local):
            row = self._row_values(seg.names[i], self._compute) if self._compute else None
            if row is None:
                raise RegistryError(f"index {self.key} is damaged and entry '{seg.names[i]}' cannot be re-read; "
                                    f"delete {self.dir}")
            out[j] = row[field]
        if seg.path is not None:
            self._bad.append(seg.path)
        return out

    def _write_segment(self, path: Path, names: list[str], stamps: np.ndarray, fill) -> None:
        """Write a complete segment to `path` and fsync it; `fill(name, dataset)` writes each field."""
        n = len(names)
        with h5py.File(path, "w", locking=False) as f:
            f.attrs["format"] = _FORMAT
            f.attrs["version"] = _VERSION
            f.create_dataset("names", data=np.array([s.encode() for s in names], dtype=_NAME_DTYPE))
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
        latest: dict[str, tuple[int, int]] = {}
        for si, s in enumerate(segs):
            for i, name in enumerate(s.names):
                if name:
                    latest[name] = (si, i)
        keep: list[list[int]] = [[] for _ in segs]
        for name, (si, i) in latest.items():
            if tuple(int(x) for x in segs[si].stamps[i]) == entry_stamp(self.registry.entries_dir / f"{name}.h5"):
                keep[si].append(i)
        keep = [np.array(sorted(k), dtype=np.int64) for k in keep]
        names = [segs[si].names[i] for si, k in enumerate(keep) for i in k]
        if names:
            stamps = np.concatenate([segs[si].stamps[k] for si, k in enumerate(keep) if k.size])

            def fill(field, ds):
                o = 0
                for s, k in zip(segs, keep):
                    for a in range(0, k.size, _COPY_ROWS):
                        block = k[a: a + _COPY_ROWS]
                        ds[o: o + block.size] = s.file[field][block[0]: block[-1] + 1][block - block[0]]
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
