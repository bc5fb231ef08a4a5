"""A registry directory of entry files, written atomically under a file lock.

Layout (documented in the README):
  <root>/registry.json      marker: {"format": "vdna-registry", "version": 1}
  <root>/entries/<name>.h5  one self-contained HDF5 file per entry
  <root>/tmp/               writes in progress; a crash leaves only files here
  <root>/.lock              fcntl lock taken by writers

An entry becomes visible only through os.replace of a complete, fsynced file, so a
killed writer never leaves a half-written entry, and other entries are never opened
for writing.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from registry import layout
from registry.errors import (
    CorruptEntryError,
    EntryExistsError,
    EntryNotFoundError,
    InvalidNameError,
    RegistryError,
)
from registry.lock import FileLock

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SUFFIX = ".h5"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(_SUFFIX):
        raise InvalidNameError(
            f"invalid entry name {name!r}: use 1-128 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Registry:
    """Named entries of (meta dict, arrays) in a local directory."""

    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root).expanduser()
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"
        marker = self.root / "registry.json"
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry path {self.root} exists and is not a directory")
        if not marker.exists():
            if not create:
                raise RegistryError(f"no registry at {self.root}")
            if self.root.exists() and any(p for p in self.root.iterdir() if p.name not in ("entries", "tmp", ".lock")):
                raise RegistryError(
                    f"{self.root} is a non-empty directory that is not a vdna registry; choose another --registry"
                )
            try:
                self.entries_dir.mkdir(parents=True, exist_ok=True)
                self.tmp_dir.mkdir(exist_ok=True)
                tmp = self.root / f".registry.json.{uuid.uuid4().hex}"
                tmp.write_text(json.dumps({"format": "vdna-registry", "version": 1}) + "\n")
                os.replace(tmp, marker)
            except OSError as e:
                raise RegistryError(f"cannot create registry at {self.root}: {e.strerror}") from None
        self.entries_dir.mkdir(exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.entries_dir / (validate_name(name) + _SUFFIX)

    def _lock(self) -> FileLock:
        return FileLock(self.root / ".lock")

    # -- reading ---------------------------------------------------------------
    def names(self) -> list[str]:
        stems = (p.name[: -len(_SUFFIX)] for p in self.entries_dir.glob("*" + _SUFFIX))
        return sorted(s for s in stems if _NAME_RE.match(s) and not s.endswith(_SUFFIX))

    def __contains__(self, name: str) -> bool:
        return self._path(name).is_file()

    def _existing(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            raise EntryNotFoundError(name, str(self.root))
        return path

    def meta(self, name: str) -> dict:
        return layout.read_meta(self._existing(name))

    def read(self, name: str, keys: Iterable[str] | None = None, verify: bool = False) -> tuple[dict, dict]:
        return layout.read_entry(self._existing(name), keys=keys, verify=verify)

    def keys(self, name: str) -> list[str]:
        return layout.array_keys(self._existing(name))

    def iter_meta(self) -> Iterator[tuple[str, dict | None, str | None]]:
        """Yield (name, meta, problem) for every entry; unreadable entries carry a problem."""
        for name in self.names():
            try:
                yield name, self.meta(name), None
            except RegistryError as e:
                yield name, None, str(e)

    def file_size(self, name: str) -> int:
        return self._existing(name).stat().st_size

    # -- writing ---------------------------------------------------------------
    def put(self, name: str, meta: Mapping, arrays: Mapping[str, np.ndarray], replace: bool = False) -> None:
        """Store an entry atomically; refuse an existing name unless `replace`."""
        final = self._path(name)
        if not replace and final.exists():
            raise EntryExistsError(name)
        tmp = self.tmp_dir / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.part"
        try:
            layout.write_entry(tmp, name, meta, arrays)
            with self._lock():
                if not replace and final.exists():
                    raise EntryExistsError(name)
                os.replace(tmp, final)
                _fsync_dir(self.entries_dir)
        except OSError as e:
            raise RegistryError(f"cannot write entry '{name}' in {self.root}: {e.strerror or e}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        path = self._existing(name)
        with self._lock():
            try:
                path.unlink()
            except FileNotFoundError:
                raise EntryNotFoundError(name, str(self.root)) from None
            _fsync_dir(self.entries_dir)

    # -- maintenance -----------------------------------------------------------
    def verify(self, name: str) -> list[str]:
        """Problems found in one entry (empty when intact)."""
        try:
            self.read(name, verify=True)
        except CorruptEntryError as e:
            return [str(e)]
        except (OSError, RuntimeError) as e:
            return [f"unreadable: {e}"]
        return []

    def leftovers(self) -> list[Path]:
        """Temporary files left by interrupted writers."""
        return sorted(self.tmp_dir.glob("*.part"))
