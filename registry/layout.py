"""The on-disk schema of one entry file (documented in README, 'Storage format').

An entry is one HDF5 file:
  attrs:  format="vdna-entry", format_version=1, name, meta (JSON text),
          checksums (JSON text: dataset path -> sha256 of its little-endian bytes)
  datasets: any '/'-separated path -> numeric array, gzip(1)+shuffle-compressed in ~1 MiB row chunks
Optional groups a reader may leave out of a whole-entry read (`skip`), e.g. "shards/" (the
shard DNAs of vdnacli.shards: K times the size of the DNA, read only by the statistics).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from registry.errors import CorruptEntryError

FORMAT = "vdna-entry"
FORMAT_VERSION = 1
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: never objects or strings
# Built-in HDF5 filters only: an unknown filter id would make HDF5 load a plugin library.
_ALLOWED_FILTERS = {1, 2, 3}  # deflate (gzip), shuffle, fletcher32
MAX_DATASET_BYTES = 8 << 30  # far above any real DNA (25,600 neurons x 1000 bins x int64 = 205 MB)


def array_sha256(arr: np.ndarray) -> str:
    """Checksum of an array's values, independent of memory order and byte order."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
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


def write_entry(path: Path, name: str, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a complete entry file and fsync it (the caller renames it into place)."""
    checksums = {}
    with h5py.File(path, "w", locking=False) as f:  # a private temporary file: no HDF5 lock needed
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
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


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
               skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Return (meta, arrays); `keys` restricts which arrays are read; without `keys`, arrays
    whose path starts with one of the `skip` prefixes are not read."""
    try:
        return _read_entry(path, keys, verify, skip)
    except (OSError, RuntimeError) as e:  # h5py's errors for damaged heaps and chunks
        raise CorruptEntryError(f"{path.name}: damaged file ({str(e).splitlines()[0][:200]})") from None


def _plain_dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """The dataset at `key`, refused unless it is plain numeric data stored in this file.

    Checked before any value is read: hard links only (no soft or external links to other
    files), no external or virtual storage, built-in filters only, numeric dtype, and a
    declared size a DNA can have (a forged shape must not allocate terabytes).
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
    if int(np.prod(ds.shape, dtype=np.float64)) * ds.dtype.itemsize > MAX_DATASET_BYTES:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} declares an implausible shape {ds.shape}")
    return ds


def _read_array(f: h5py.File, key: str, path: Path, checksums: dict | None) -> np.ndarray:
    arr = _plain_dataset(f, key, path)[()]
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in _ALLOWED_KINDS:
        raise CorruptEntryError(f"{path.name}: dataset {key!r} has unsupported type")
    if checksums is not None and checksums.get(key) != array_sha256(arr):
        what = "has no checksum" if key not in checksums else "checksum mismatch"
        raise CorruptEntryError(f"{path.name}: {what} in {key!r}")
    return arr


def _read_entry(path: Path, keys, verify: bool, skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
    with _open(path) as f:
        meta = _json_attr(f, "meta", path)
        checksums = _json_attr(f, "checksums", path) if verify else None
        wanted = list(keys) if keys is not None else [k for k in _dataset_paths(f) if not k.startswith(skip or ())]
        if verify and keys is None:
            missing = sorted(k for k in set(checksums) - set(wanted) if not k.startswith(skip or ()))
            if missing:
                raise CorruptEntryError(f"{path.name}: dataset {missing[0]!r} is missing")
        return meta, {key: _read_array(f, key, path, checksums) for key in wanted}


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
