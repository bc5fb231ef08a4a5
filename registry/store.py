"""A registry directory of entry files, written atomically under file locks.

Layout (documented in the README):
  <root>/registry.json      marker: {"format": "vdna-registry", "version": 1}
  <root>/entries/<name>.h5  one self-contained HDF5 file per entry, never modified in place
  <root>/tmp/               writes in progress (*.part) and commit journals (*.commit)
  <root>/index/             derived caches (registry.index); safe to delete
  <root>/.lock              exclusive fcntl lock: renames into entries/, removals, index writes
  <root>/.writers           shared fcntl lock held by every writer while its *.part file exists;
                            `repair` takes it exclusively, so it never deletes live work

An entry becomes visible only through os.replace of a complete, fsynced file, so a killed
writer never leaves a half-written entry, and other entries are never opened for writing.
A group of entries (`put_many`, e.g. a pull) is committed through a journal written after
every file is complete: a crash before the journal leaves nothing, a crash after it is
rolled forward by the next writer, reader start or `repair`.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from registry import layout
from registry.layout import fsync_dir
from registry.errors import (
    CorruptEntryError,
    EntryChangedError,
    EntryExistsError,
    EntryNotFoundError,
    InvalidNameError,
    RegistryError,
)
from registry.lock import FileLock

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SUFFIX = ".h5"
_PART = ".part"
_JOURNAL = ".commit"
_MARKER_TMP = ".registry.json."
# What a registry directory may hold besides its marker (a half-created registry too).
_OWN_FILES = {"entries", "tmp", "index", "masks", ".lock", ".writers", "registry.json"}


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(_SUFFIX):
        raise InvalidNameError(
            f"invalid entry name {name!r}: use 1-128 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return name


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
            if self.root.exists() and any(not self._own_file(p.name) for p in self.root.iterdir()):
                raise RegistryError(
                    f"{self.root} is a non-empty directory that is not a vdna registry; choose another --registry"
                )
            try:
                self.entries_dir.mkdir(parents=True, exist_ok=True)
                self.tmp_dir.mkdir(exist_ok=True)
                tmp = self.root / f"{_MARKER_TMP}{uuid.uuid4().hex}"
                tmp.write_text(json.dumps({"format": "vdna-registry", "version": 1}) + "\n")
                os.replace(tmp, marker)  # concurrent creators write the same content: last one wins
            except OSError as e:
                raise RegistryError(f"cannot create registry at {self.root}: {e.strerror}") from None
        try:
            self.entries_dir.mkdir(exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise RegistryError(f"cannot use registry at {self.root}: {e.strerror}") from None
        if self._journals():  # a group commit was interrupted: finish it before anyone reads
            try:
                with self._lock():
                    self._recover()
            except (RegistryError, OSError):
                pass  # read-only registry: readers see the entries committed so far

    @staticmethod
    def _own_file(name: str) -> bool:
        return name in _OWN_FILES or name.startswith(_MARKER_TMP)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.entries_dir / (validate_name(name) + _SUFFIX)

    def _lock(self) -> FileLock:
        """Exclusive lock for renames into entries/, removals and index writes (short sections)."""
        return FileLock(self.root / ".lock")

    def _writing(self, exclusive: bool = False) -> FileLock:
        """Shared by writers for the life of their temporary files; exclusive for `repair`."""
        return FileLock(self.root / ".writers", shared=not exclusive)

    def _tmp_path(self, name: str) -> Path:
        return self.tmp_dir / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_SUFFIX}{_PART}"

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

    def read(self, name: str, keys: Iterable[str] | None = None, verify: bool = False,
             skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
        return layout.read_entry(self._existing(name), keys=keys, verify=verify, skip=skip)

    def open(self, name: str) -> layout.EntryReader:
        """An entry opened for lazy reads (`with registry.open(name) as r: r.array(key)`)."""
        return layout.EntryReader(self._existing(name))

    def keys(self, name: str) -> list[str]:
        return layout.array_keys(self._existing(name))

    def stamp(self, name: str) -> tuple[int, int, int, int] | None:
        """Version token of an entry (None when absent); pass it to put(expect=...) to
        refuse the write if another process changed the entry meanwhile (read-modify-write)."""
        return layout.entry_stamp(self._path(name))

    def iter_meta(self) -> Iterator[tuple[str, dict | None, str | None]]:
        """Yield (name, meta, problem) for every entry; unreadable entries carry a problem."""
        for name in self.names():
            try:
                yield name, self.meta(name), None
            except EntryNotFoundError:
                continue  # removed by another process since it was listed
            except RegistryError as e:
                yield name, None, str(e)

    def file_size(self, name: str) -> int:
        try:
            return self._existing(name).stat().st_size
        except FileNotFoundError:  # removed by another process since it was listed
            raise EntryNotFoundError(name, str(self.root)) from None

    # -- writing ---------------------------------------------------------------
    def put(self, name: str, meta: Mapping, arrays: Mapping[str, np.ndarray], replace: bool = False,
            expect: tuple | None | bool = False) -> None:
        """Store an entry atomically; refuse an existing name unless `replace`.

        `expect` (a `stamp()` taken before reading the entry, None for "must not exist")
        makes the write conditional: it fails with EntryChangedError if the entry is no
        longer that version. The default (False) does not check.
        """
        self.put_many([(name, meta, arrays)], replace=replace, expect={name: expect} if expect is not False else None)

    def put_many(self, items: Sequence[tuple[str, Mapping, Mapping[str, np.ndarray]]], replace: bool = False,
                 expect: Mapping[str, tuple | None] | None = None) -> None:
        """Store several entries, all or none (after a crash, all once rolled forward)."""
        names = [validate_name(n) for n, _, _ in items]
        if len(set(names)) != len(names):
            raise RegistryError("the same entry name is given twice")
        if not replace:
            for n in names:
                if self._path(n).exists():
                    raise EntryExistsError(n)
        with self._writing():
            tmps = [self._tmp_path(n) for n in names]
            journal = self.tmp_dir / f"{uuid.uuid4().hex}{_JOURNAL}"
            try:
                for tmp, (name, meta, arrays) in zip(tmps, items):
                    layout.write_entry(tmp, name, meta, arrays)
                with self._lock():
                    self._recover()
                    for n in names:
                        if expect is not None and n in expect and layout.entry_stamp(self._path(n)) != expect[n]:
                            raise EntryChangedError(n)
                        if not replace and self._path(n).exists():
                            raise EntryExistsError(n)
                    renames = [(t, self._path(n)) for t, n in zip(tmps, names)]
                    if len(renames) == 1:
                        os.replace(*renames[0])
                        fsync_dir(self.entries_dir)
                    else:
                        self._write_journal(journal, renames)
                        self._roll_forward(journal)
            except OSError as e:
                raise RegistryError(f"cannot write entry '{names[0]}' in {self.root}: {e.strerror or e}") from None
            finally:
                if not journal.exists():  # a journal's files belong to the roll-forward now
                    for tmp in tmps:
                        tmp.unlink(missing_ok=True)

    def _write_journal(self, journal: Path, renames: list[tuple[Path, Path]]) -> None:
        """Record a group commit (lock held); from here on the group is committed."""
        part = journal.with_name(journal.name + _PART)
        with open(part, "w") as f:
            json.dump({"renames": [[t.name, d.name] for t, d in renames]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, journal)
        fsync_dir(self.tmp_dir)

    def _journals(self) -> list[Path]:
        return sorted(self.tmp_dir.glob("*" + _JOURNAL))

    def _roll_forward(self, journal: Path) -> None:
        try:
            renames = json.loads(journal.read_text())["renames"]
        except (OSError, ValueError, KeyError, TypeError):
            renames = []  # cannot happen (journals are renamed in complete); leave the parts to repair
        for tmp_name, final_name in renames:
            tmp, final = self.tmp_dir / str(tmp_name), self.entries_dir / str(final_name)
            if tmp.parent == self.tmp_dir and final.parent == self.entries_dir and tmp.exists():
                os.replace(tmp, final)
        fsync_dir(self.entries_dir)
        journal.unlink(missing_ok=True)
        fsync_dir(self.tmp_dir)

    def _recover(self) -> None:
        """Finish group commits interrupted by a crash (the lock is held)."""
        for journal in self._journals():
            self._roll_forward(journal)

    def remove(self, name: str) -> None:
        path = self._existing(name)
        with self._lock():
            try:
                self._recover()
                path.unlink()
                fsync_dir(self.entries_dir)
            except FileNotFoundError:
                raise EntryNotFoundError(name, str(self.root)) from None
            except OSError as e:
                raise RegistryError(f"cannot remove entry '{name}' from {self.root}: {e.strerror or e}") from None

    # -- maintenance -----------------------------------------------------------
    def verify(self, name: str, check: Callable[[dict, dict], list[str]] | None = None) -> list[str]:
        """Problems found in one entry (empty when intact): every stored array against its
        checksum (values, dtype, shape), no array without a checksum or checksum without an
        array, and the name recorded inside the file; then `check(meta, arrays)` (what the
        arrays mean is for the caller), on the arrays just verified."""
        problems = []
        try:
            path = self._existing(name)
            meta, arrays = layout.read_entry(path, verify=True)
            with layout._open(path) as f:
                stored = f.attrs.get("name")
            if isinstance(stored, bytes):
                stored = stored.decode("utf-8", "replace")
            if stored != name:
                problems.append(f"{name}.h5 holds entry {stored!r} (renamed by hand?)")
            if check is not None:
                problems += check(meta, arrays)
        except (CorruptEntryError, EntryNotFoundError) as e:
            problems.append(str(e))
        except (OSError, RuntimeError) as e:
            problems.append(f"unreadable: {e}")
        return problems

    def leftovers(self) -> list[Path]:
        """Temporary files left by interrupted writers (including ones still being written)."""
        return sorted([*self.tmp_dir.glob("*" + _PART), *self.root.glob(_MARKER_TMP + "*")])

    def repair(self) -> list[Path]:
        """Finish interrupted group commits and delete leftovers of killed writers.

        Waits until no writer is active, so files of live writers are never deleted.
        Returns the deleted paths.
        """
        with self._writing(exclusive=True), self._lock():
            self._recover()
            removed = self.leftovers()
            for p in removed:
                p.unlink(missing_ok=True)
            if removed:
                fsync_dir(self.tmp_dir)
        return removed
