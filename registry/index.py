"""A consolidated side index: small per-entry arrays stacked in one HDF5 file per key,
so a scan over thousands of entries reads one file instead of thousands.

The index is derived data. Each row records the signature (mtime_ns, size) of the entry
file it was computed from; stale or missing rows are recomputed on load, and an index
file that cannot be read is deleted and rebuilt. Writers hold the registry lock.

  <registry>/index/<key>.h5: names (bytes [E]), sigs (int64 [E, 2]), one dataset per field [E, ...]
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import h5py
import numpy as np

_NAME_DTYPE = "S128"


class SideIndex:
    def __init__(self, registry, key: str, fields: Mapping[str, tuple[tuple[int, ...], str]]):
        """`fields`: name -> (row shape, dtype)."""
        self.registry = registry
        self.fields = dict(fields)
        self.path = Path(registry.root) / "index" / f"{key}.h5"

    def _sig(self, name: str) -> tuple[int, int] | None:
        try:
            st = (self.registry.entries_dir / f"{name}.h5").stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _open(self, mode: str) -> h5py.File | None:
        try:
            f = h5py.File(self.path, mode)
            for k, (shape, dtype) in self.fields.items():
                if k in f and (f[k].shape[1:] != tuple(shape) or f[k].dtype != np.dtype(dtype)):
                    raise OSError("layout changed")
            return f
        except OSError:
            self.path.unlink(missing_ok=True)
            return None

    def _create(self) -> h5py.File:
        self.path.parent.mkdir(exist_ok=True)
        f = h5py.File(self.path, "w")
        f.create_dataset("names", shape=(0,), maxshape=(None,), dtype=_NAME_DTYPE, chunks=(1024,))
        f.create_dataset("sigs", shape=(0, 2), maxshape=(None, 2), dtype="int64", chunks=(1024, 2))
        for k, (shape, dtype) in self.fields.items():
            row_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            per_chunk = max(1, min(4096, (1 << 16) // max(row_bytes, 1)))
            f.create_dataset(k, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(per_chunk, *shape))
        return f

    def sync(self, names: list[str], compute: Callable[[str], Mapping[str, np.ndarray] | None]) -> dict[str, int]:
        """Bring rows for `names` up to date; returns {name: row} of the usable rows."""
        current = {n: self._sig(n) for n in names}
        rows = self._rows()
        stale = [n for n in names if current[n] is not None and rows.get(n, (None, None))[1] != current[n]]
        if stale:
            with self.registry._lock():
                f = (self._open("r+") if self.path.exists() else None) or self._create()
                with f:
                    index = {n.decode(): i for i, n in enumerate(f["names"][()])}
                    for name in stale:
                        values = compute(name)
                        if values is None:
                            continue
                        i = index.get(name)
                        if i is None:
                            i = f["names"].shape[0]
                            for k in ("names", "sigs", *self.fields):
                                f[k].resize(i + 1, axis=0)
                            index[name] = i
                        for k in self.fields:
                            f[k][i] = values[k]
                        f["sigs"][i] = current[name]  # last: a row counts only once complete
                        f["names"][i] = name.encode()
            rows = self._rows()
        return {n: rows[n][0] for n in names if n in rows and rows[n][1] == current[n]}

    def _rows(self) -> dict[str, tuple[int, tuple[int, int]]]:
        if not self.path.exists():
            return {}
        f = self._open("r")
        if f is None:
            return {}
        with f:
            names = f["names"][()]
            sigs = f["sigs"][()]
        return {n.decode(): (i, (int(s[0]), int(s[1]))) for i, (n, s) in enumerate(zip(names, sigs)) if n}

    def read(self, field: str, rows: list[int] | np.ndarray) -> np.ndarray:
        """Rows of one field, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            shape, dtype = self.fields[field]
            return np.empty((0, *shape), dtype=dtype)
        order = np.argsort(rows)
        with h5py.File(self.path, "r") as f:
            ds = f[field]
            if rows.size > ds.shape[0] // 4:
                data = ds[()][rows[order]]
            else:
                data = ds[rows[order]]
        out = np.empty_like(data)
        out[order] = data
        return out
