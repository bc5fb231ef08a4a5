"""The on-disk schema of one entry file (documented in README, 'Storage format').

An entry is one HDF5 file:
  attrs:  format="vdna-entry", format_version=1, name, meta (JSON text),
          checksums (JSON text: dataset path -> sha256 of its little-endian bytes)
  datasets: any '/'-separated path -> numeric array, gzip-compressed
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


def array_sha256(arr: np.ndarray) -> str:
    """Checksum of an array's values, independent of memory order and byte order."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def write_entry(path: Path, name: str, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a complete entry file and fsync it (the caller renames it into place)."""
    checksums = {}
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["name"] = name
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)
        for key, arr in arrays.items():
            arr = np.asarray(arr)
            if arr.dtype.kind not in _ALLOWED_KINDS:
                raise ValueError(f"array {key!r} has unsupported dtype {arr.dtype}")
            big = arr.size > 1024
            f.create_dataset(
                key,
                data=arr,
                compression="gzip" if big else None,
                compression_opts=4 if big else None,
                shuffle=big,
            )
            checksums[key] = array_sha256(arr)
        f.attrs["checksums"] = json.dumps(checksums, sort_keys=True)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _open(path: Path) -> h5py.File:
    try:
        f = h5py.File(path, "r")
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


def read_entry(path: Path, keys: Iterable[str] | None = None, verify: bool = False) -> tuple[dict, dict]:
    """Return (meta, arrays); `keys` restricts which arrays are read."""
    try:
        return _read_entry(path, keys, verify)
    except (OSError, RuntimeError) as e:  # h5py's errors for damaged heaps and chunks
        raise CorruptEntryError(f"{path.name}: damaged file ({str(e).splitlines()[0][:200]})") from None


def _read_entry(path: Path, keys, verify: bool) -> tuple[dict, dict]:
    with _open(path) as f:
        meta = _json_attr(f, "meta", path)
        checksums = _json_attr(f, "checksums", path) if verify else {}
        wanted = list(keys) if keys is not None else _dataset_paths(f)
        arrays = {}
        for key in wanted:
            ds = f.get(key)
            if not isinstance(ds, h5py.Dataset):
                raise CorruptEntryError(f"{path.name}: dataset {key!r} is missing")
            arr = ds[()]
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in _ALLOWED_KINDS:
                raise CorruptEntryError(f"{path.name}: dataset {key!r} has unsupported type")
            if verify and checksums.get(key) != array_sha256(arr):
                raise CorruptEntryError(f"{path.name}: checksum mismatch in {key!r}")
            arrays[key] = arr
        return meta, arrays


def array_keys(path: Path) -> list[str]:
    try:
        with _open(path) as f:
            return _dataset_paths(f)
    except (OSError, RuntimeError) as e:
        raise CorruptEntryError(f"{path.name}: damaged file ({e})") from None
