"""The on-disk schema of one entry file (documented in README, 'Storage format').

An entry is one HDF5 file:
  attrs:  format="vdna-entry", format_version=1, name, meta (JSON text),
          checksums (JSON text: dataset path -> sha256 of its little-endian bytes)
  datasets: any '/'-separated path -> numeric array, gzip(1)+shuffle-compressed in ~1 MiB row chunks

Dataset groups with a size cap of their own (checked on read before anything is allocated):
  thumbnails/{hashes,offsets,data}  a few encoded images kept with a DNA (vdnacli/thumbnails.py):
                                    at most THUMBNAILS_MAX_BYTES per dataset. Optional: entries
                                    without them (older ones included) read as before, and
                                    readers that do not know the group ignore it.

Optional groups a reader may leave out of a whole-entry read (`skip`), e.g. "shards/" (the
shard DNAs of vdnacli.shards: K times the size of the DNA, read only by the statistics).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import h5py
import numpy as np

from registry.errors import CorruptEntryError

FORMAT = "vdna-entry"
FORMAT_VERSION = 1
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: never objects or strings
# Built-in HDF5 filters only: an unknown filter id would make HDF5 load a plugin library.
_ALLOWED_FILTERS = {1, 2, 3}  # deflate (gzip), shuffle, fletcher32
MAX_DATASET_BYTES = 8 << 30  # far above any real DNA (25,600 neurons x 1000 bins x int64 = 205 MB)
THUMBNAILS_GROUP = "thumbnails"
THUMBNAILS_MAX_BYTES = 16 << 20  # 256 thumbnails of up to 64 KB; real ones are ~3 KB each
MAX_ENTRY_BYTES = 16 << 30  # all datasets of one file together, when the caller gives no tighter caps
# deflate cannot expand data more than ~1032:1, so a compressed dataset that declares more than this
# many times its stored bytes was never (fully) written: reading it would allocate fill values only.
_MAX_DEFLATE_RATIO = 1100
_SLACK = 4096
# Values read are widened to 8 bytes (int64 counts, float64 sums) by their users: a file may declare
# at most max(_FILE_FLOOR, _FILE_RATIO x its size) of them, counted at 8 bytes each. Real DNAs stay
# far below (an EfficientNet-Lite0 DNA: 16.5 MB of int64 counts in a 0.56 MB file, 30x); a
# compression bomb (deflate reaches ~1000x on zeros) does not. The floor covers DNAs of few images
# with shard DNAs (`vdna add` keeps 8 by default): their counts are mostly zeros, and a 3-image
# Lite0 entry declares 18.65 M values (142 MiB at 8 bytes) in a 1.0-1.2 MB file, 128-148x. At
# 192 MiB the largest file the floor lets through costs `vdna pull` (which widens, checks and
# rewrites it) about 0.7 GB, under the 1 GB that issue 14 allows (bench/hostile_memory.py).
_FILE_FLOOR = 192 << 20
_FILE_RATIO = 128


@dataclass(frozen=True)
class Caps:
    """The largest sizes (bytes, as declared) the datasets of one entry may have: `per_key` for the
    keys the caller knows, `default` for the others, `total` for the whole file. A caller derives
    them from the entry's own metadata (a DNA: neurons x bins x 8 bytes per histogram, ...)."""

    total: int = MAX_ENTRY_BYTES
    per_key: Mapping[str, int] = field(default_factory=dict)
    default: int = MAX_DATASET_BYTES

    def limit(self, key: str) -> int:
        own = THUMBNAILS_MAX_BYTES if key.split("/", 1)[0] == THUMBNAILS_GROUP else MAX_DATASET_BYTES
        return min(self.per_key.get(key, self.default), own)


CapsRule = Callable[[dict], "Caps | None"]  # entry metadata -> caps (None: the defaults)


def array_sha256(arr: np.ndarray) -> str:
    """Checksum of an array's values, independent of memory order and byte order.

    The bytes are fed to hashlib through a memoryview: no copy of a contiguous little-endian
    array (what every entry holds) is made."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    if a.size:
        flat = memoryview(a.reshape(-1)).cast("B")
        for start in range(0, len(flat), 1 << 26):
            h.update(flat[start:start + (1 << 26)])
    return h.hexdigest()


Stamp = tuple[int, int, int, int]


def entry_stamp(path: Path) -> Stamp | None:
    """(inode, size, mtime_ns, ctime_ns): the identity of one version of an entry file (every
    write renames a new inode into place); None when the file is absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def fsync_dir(path: Path) -> None:
    """Make a rename into (or a removal from) `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MemoryHDF5:
    """An HDF5 file built in memory (`with MemoryHDF5() as f: ...`, then `.image` holds its bytes).

    HDF5 never touches the disk, so a full disk, a quota or a read-only filesystem cannot fail
    inside the C library, whose close then segfaulted on ENOSPC; the bytes are written by
    `write_new_file`, where such failures are ordinary OSErrors."""

    def __init__(self):
        self.image: bytes | None = None
        self._f: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        self._f = h5py.File(f"vdna-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False,
                            block_size=1 << 20, locking=False)
        return self._f

    def __exit__(self, exc_type, *exc) -> None:
        f, self._f = self._f, None
        try:
            if exc_type is None:
                f.flush()
                self.image = f.id.get_file_image()
        finally:
            f.close()


def write_new_file(path: Path, data: bytes | memoryview) -> None:
    """Create `path` (which must not exist: O_EXCL, so a planted file or symlink is never written
    through), write `data`, fsync. On any failure the partial file is removed and the OSError raised."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0),
                 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view[: 1 << 24])
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def write_entry(path: Path, name: str, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a complete entry file and fsync it (the caller renames it into place)."""
    checksums = {}
    mem = MemoryHDF5()
    with mem as f:  # built in memory, then written with plain file I/O (see MemoryHDF5)
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["name"] = name
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)
        for key, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype.kind not in _ALLOWED_KINDS:
                raise ValueError(f"array {key!r} has unsupported dtype {arr.dtype}")
            big = arr.size > 1024
            chunks = None
            if big and arr.ndim == 2 and arr.shape[0] > 0 and arr.shape[1] > 0:
                # ~1 MiB row blocks: few, large chunks decompress fastest when whole arrays are read
                rows = max(1, min(arr.shape[0], (1 << 20) // (arr.shape[1] * arr.dtype.itemsize)))
                chunks = (rows, arr.shape[1])
            f.create_dataset(
                key,
                data=arr,
                compression="gzip" if big else None,
                compression_opts=1 if big else None,  # level 1 + shuffle: ~4x faster reads than 4, ~10 % larger
                shuffle=big,
                chunks=chunks,
            )
            checksums[key] = array_sha256(arr)
        f.attrs["checksums"] = json.dumps(checksums, sort_keys=True)
    write_new_file(path, mem.image)


def _open(path: Path) -> h5py.File:
    # Entry files are immutable once renamed into place, so HDF5's own file lock (which
    # fails on some network filesystems and against foreign writers) is not needed.
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise CorruptEntryError(f"{path.name} is not a readable HDF5 entry ({e})") from None
    try:
        fmt = f.attrs.get("format")
        version = int(f.attrs.get("format_version", -1))
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        f.close()
        raise CorruptEntryError(f"{path.name}: damaged attributes ({e})") from None
    if fmt != FORMAT:
        f.close()
        raise CorruptEntryError(f"{path.name} is not a vdna entry (format attribute missing)")
    if version > FORMAT_VERSION:
        f.close()
        raise CorruptEntryError(f"{path.name} uses entry format {version}; upgrade vdna to read it")
    return f


def _json_attr(f: h5py.File, key: str, path: Path) -> dict:
    try:
        value = json.loads(f.attrs[key])
    except (KeyError, TypeError, ValueError, OSError, RuntimeError):
        raise CorruptEntryError(f"{path.name}: attribute {key!r} is missing or not JSON") from None
    if not isinstance(value, dict):
        raise CorruptEntryError(f"{path.name}: attribute {key!r} is not a JSON object")
    return value


def read_meta(path: Path) -> dict:
    try:
        with _open(path) as f:
            return _json_attr(f, "meta", path)
    except (OSError, RuntimeError) as e:
        raise CorruptEntryError(f"{path.name}: damaged file ({e})") from None


def _dataset_paths(f: h5py.File) -> list[str]:
    out: list[str] = []
    f.visititems(lambda k, v: out.append(k) if isinstance(v, h5py.Dataset) else None)
    return out


def read_entry(path: Path, keys: Iterable[str] | None = None, verify: bool = False,
               caps: CapsRule | None = None, skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Return (meta, arrays); `keys` restricts which arrays are read; without `keys`, arrays
    whose path starts with one of the `skip` prefixes are not read.

    `caps(meta)` bounds the declared sizes (per dataset and for the file); every dataset is
    checked before the first is read, then they are read (and, with `verify`, hashed) one at a time.
    """
    try:
        return _read_entry(path, keys, verify, caps, skip)
    except (OSError, RuntimeError) as e:  # h5py's errors for damaged heaps and chunks
        raise CorruptEntryError(f"{path.name}: damaged file ({str(e).splitlines()[0][:200]})") from None


def _plain_dataset(f: h5py.File, key: str, path: Path, caps: Caps | None = None) -> h5py.Dataset:
    """The dataset at `key`, refused unless it is plain numeric data stored in this file.

    Checked before any value is read: hard links only (no soft or external links to other
    files), no external or virtual storage, built-in filters only, numeric dtype, and a
    declared size that is plausible (`caps`) and that the bytes stored in the file can hold
    (a forged shape, or one never written, must not allocate gigabytes of fill values).
    """
    parts = key.split("/")
    for i in range(1, len(parts) + 1):
        link = f.get("/".join(parts[:i]), getlink=True)
        if link is None:
            raise CorruptEntryError(f"{path.name}: dataset {key!r} is missing")
        if not isinstance(link, h5py.HardLink):
            raise CorruptEntryError(f"{path.name}: {key!r} is a link ({type(link).__name__}), not stored data")
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise CorruptEntryError(f"{path.name}: dataset {key!r} is missing")
    if ds.dtype.kind not in _ALLOWED_KINDS or ds.dtype.fields is not None or ds.dtype.subdtype is not None:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} has unsupported type {ds.dtype}")
    if ds.external or ds.is_virtual:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} keeps its values outside the entry file")
    plist = ds.id.get_create_plist()
    filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    if filters - _ALLOWED_FILTERS:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} uses unsupported HDF5 filters {sorted(filters)}")
    declared = declared_bytes(ds)
    limit = (caps or _DEFAULT_CAPS).limit(key)
    if declared > limit:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} declares an implausible shape {ds.shape} "
                                f"({declared:,} bytes, at most {limit:,} for this entry)")
    if declared:
        stored = ds.id.get_storage_size()
        holds = stored * _MAX_DEFLATE_RATIO + _SLACK if 1 in filters else stored
        if declared > holds:
            raise CorruptEntryError(f"{path.name}: dataset {key!r} declares {declared:,} bytes but the file stores "
                                    f"{stored:,} for it (never written?)")
    return ds


def declared_bytes(ds: h5py.Dataset) -> int:
    """Bytes a dataset's declared shape and dtype would take in memory (exact, no overflow)."""
    n = 1
    for d in ds.shape or ():
        n *= int(d)
    return n * int(ds.dtype.itemsize)


_DEFAULT_CAPS = Caps()


def _read_array(f: h5py.File, key: str, path: Path, checksums: dict | None, caps: Caps | None = None) -> np.ndarray:
    return _values(_plain_dataset(f, key, path, caps), key, path, checksums)


def _values(ds: h5py.Dataset, key: str, path: Path, checksums: dict | None) -> np.ndarray:
    arr = ds[()]
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in _ALLOWED_KINDS:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} has unsupported type")
    if checksums is not None and checksums.get(key) != array_sha256(arr):
        what = "has no checksum" if key not in checksums else "checksum mismatch"
        raise CorruptEntryError(f"{path.name}: {what} in {key!r}")
    return arr


def _read_entry(path: Path, keys, verify: bool, caps_rule: CapsRule | None,
                skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
    with _open(path) as f:
        meta = _json_attr(f, "meta", path)
        checksums = _json_attr(f, "checksums", path) if verify else None
        caps = caps_rule(meta) if caps_rule is not None else None
        wanted = list(keys) if keys is not None else [k for k in _dataset_paths(f) if not k.startswith(skip or ())]
        if verify and keys is None:
            missing = sorted(k for k in set(checksums) - set(wanted) if not k.startswith(skip or ()))
            if missing:
                raise CorruptEntryError(f"{path.name}: dataset {missing[0]!r} is missing")
        datasets = {key: _plain_dataset(f, key, path, caps) for key in wanted}  # every check before any read
        total = sum(declared_bytes(ds) for ds in datasets.values())
        cap = (caps or _DEFAULT_CAPS).total
        if total > cap:
            raise CorruptEntryError(f"{path.name}: its datasets declare {total:,} bytes in all, more than "
                                    f"{cap:,} for this entry")
        widened = 8 * sum(declared_bytes(ds) // max(ds.dtype.itemsize, 1) for ds in datasets.values())
        size = path.stat().st_size
        if widened > max(_FILE_FLOOR, _FILE_RATIO * size):
            raise CorruptEntryError(f"{path.name}: its datasets declare {widened // 8:,} values for a file of "
                                    f"{size:,} bytes (a compression bomb?)")
        return meta, {key: _values(ds, key, path, checksums) for key, ds in datasets.items()}


class EntryReader:
    """One open entry file whose arrays are read one at a time, on demand: a search that may
    stop after the first layers of a candidate neither reopens the file per array nor reads
    the rest. Same checks as `read_entry`; every h5py error becomes CorruptEntryError."""

    def __init__(self, path: Path):
        self.path = path
        self._f = _open(path)
        try:
            self.meta = _json_attr(self._f, "meta", path)
        except BaseException:
            self._f.close()
            raise

    def array(self, key: str) -> np.ndarray:
        try:
            return _read_array(self._f, key, self.path, None)
        except (OSError, RuntimeError) as e:
            raise CorruptEntryError(f"{self.path.name}: damaged file ({str(e).splitlines()[0][:200]})") from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "EntryReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def array_keys(path: Path) -> list[str]:
    try:
        with _open(path) as f:
            return _dataset_paths(f)
    except (OSError, RuntimeError) as e:
        raise CorruptEntryError(f"{path.name}: damaged file ({e})") from None
