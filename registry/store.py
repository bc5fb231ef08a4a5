"""A registry directory of entry files, written atomically under file locks.

Layout (documented in README, "Storage format"):
  <root>/registry.json       marker: {"format": "vdna-registry", "version": 1}
  <root>/entries/<name>.h5   one self-contained HDF5 file per entry, never modified in place
  <root>/tmp/                writes in progress (*.part, tagged with their writer's slot) and
                             commit journals (*.commit)
  <root>/index/              derived caches (registry.index); safe to delete
  <root>/.lock               exclusive lock: renames into entries/, removals, index writes
  <root>/locks/writer-<k>.lock  writer slots: each writer holds one while its *.part files exist;
                             `repair` deletes a writer's files only after taking its slot

An entry becomes visible only through os.replace of a complete, fsynced file, so a killed
writer never leaves a half-written entry, and other entries are never opened for writing.
A group of entries (`put_many`, e.g. a pull) is committed through a journal written after
every file is complete: a crash before the journal leaves nothing, a crash after it is
rolled forward by the next writer, reader start or `repair`.

Opening a registry writes nothing: a registry that does not exist yet is created by its
first write (or refused at once with `create=False`), and a read-only registry answers
every read. A full disk, a quota or a read-only filesystem during a write is one
RegistryError naming the cause, with nothing committed and the temporary file removed.
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
from registry.errors import (
    CorruptEntryError,
    EntryChangedError,
    EntryExistsError,
    EntryNotFoundError,
    RegistryError,
    RegistryNotFoundError,
    os_error_text,
)
from registry.layout import fsync_dir
from registry.lock import FileLock, WriterSlot, slot_lock
from registry.names import ENTRY_SUFFIX as _SUFFIX
from registry.names import entry_name as validate_name

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")  # names() lists only what validate_name accepts
_PART = ".part"
_JOURNAL = ".commit"
_MARKER = "registry.json"
_LEGACY_MARKER_TMP = ".registry.json."  # marker temp files of earlier versions, in the root
_TAGGED = re.compile(r".*\.w(\d{1,6})\.[0-9a-f]{8}(?:\.h5)?\.part")  # temp files of a slot-holding writer
# What a registry directory may hold besides its marker (a half-created registry too).
_OWN_FILES = {"entries", "tmp", "index", "masks", "locks", ".lock", ".writers", _MARKER}
# Entries this process committed, in order, as (registry root, name): what an interrupted
# command reports it kept. Appended only once a commit is complete.
COMMITTED: list[tuple[str, str]] = []


class Registry:
    """Named entries of (meta dict, arrays) in a local directory.

    `create=False` refuses a path that holds no registry (RegistryNotFoundError); with
    `create=True` (the default) it is created by the first write. `caps` (entry metadata ->
    layout.Caps) bounds the declared sizes of what `read`/`verify` load.
    """

    def __init__(self, root: str | os.PathLike, create: bool = True, caps: layout.CapsRule | None = None):
        self.root = Path(root).expanduser()
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.caps = caps
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry path {self.root} exists and is not a directory")
        if not self.exists:
            if not create:
                raise RegistryNotFoundError(str(self.root))
            if self.root.exists() and any(not self._own_file(p.name) for p in self._listdir(self.root)):
                raise RegistryError(
                    f"{self.root} is a non-empty directory that is not a vdna registry; choose another --registry"
                )
        elif self._journals():  # a group commit was interrupted: finish it before anyone reads
            try:
                with self._lock():
                    self._recover()
            except (RegistryError, OSError):
                pass  # read-only registry: readers see the entries committed so far

    @property
    def exists(self) -> bool:
        """Whether the registry has been created (its marker file is present)."""
        return (self.root / _MARKER).is_file()

    @staticmethod
    def _listdir(path: Path) -> list[Path]:
        try:
            return list(path.iterdir())
        except OSError:
            return []

    @staticmethod
    def _own_file(name: str) -> bool:
        return name in _OWN_FILES or name.startswith(_LEGACY_MARKER_TMP)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.entries_dir / (validate_name(name) + _SUFFIX)

    def _lock(self) -> FileLock:
        """Exclusive lock for renames into entries/, removals and index writes (short sections)."""
        return FileLock(self.root / ".lock")

    def _tmp_path(self, stem: str, slot: WriterSlot, suffix: str = _SUFFIX) -> Path:
        return self.tmp_dir / f"{stem}.{slot.tag}.{uuid.uuid4().hex[:8]}{suffix}{_PART}"

    def _prepare(self) -> None:
        """Create the folders a write needs (the registry itself on its first write)."""
        try:
            for d in (self.entries_dir, self.tmp_dir, self.locks_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            verb = "use" if self.exists else "create"
            raise RegistryError(f"cannot {verb} registry at {self.root}: {os_error_text(e)}") from None

    def _create_marker(self, slot: WriterSlot) -> None:
        """Write the marker (concurrent creators write the same content: last one wins)."""
        marker = self.root / _MARKER
        if marker.is_file():
            return
        tmp = self._tmp_path(_MARKER, slot, suffix="")
        try:
            layout.write_new_file(tmp, (json.dumps({"format": "vdna-registry", "version": 1}) + "\n").encode())
            os.replace(tmp, marker)
            fsync_dir(self.root)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RegistryError(f"cannot create registry at {self.root}: {os_error_text(e)}") from None

    # -- reading ---------------------------------------------------------------
    def names(self) -> list[str]:
        stems = (p.name[: -len(_SUFFIX)] for p in self.entries_dir.glob("*" + _SUFFIX))
        return sorted(s for s in stems if _NAME_RE.fullmatch(s) and not s.endswith(_SUFFIX))

    def __contains__(self, name: str) -> bool:
        return self._path(name).is_file()

    def _existing(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            raise EntryNotFoundError(name, str(self.root), self.names())
        return path

    def meta(self, name: str) -> dict:
        return layout.read_meta(self._existing(name))

    def read(self, name: str, keys: Iterable[str] | None = None, verify: bool = False,
             skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
        return layout.read_entry(self._existing(name), keys=keys, verify=verify, caps=self.caps, skip=skip)

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
        """Store several entries, all or none (after a crash, all once rolled forward).

        The files are built in memory and written to tmp/ first; a full disk, a quota or a
        read-only filesystem then fails here, before anything is committed, and the
        temporary files are removed."""
        names = [validate_name(n) for n, _, _ in items]
        if len(set(names)) != len(names):
            raise RegistryError("the same entry name is given twice")
        if not replace:
            for n in names:
                if self._path(n).exists():
                    raise EntryExistsError(n)
        self._prepare()
        tmps: list[Path] = []
        journal = self.tmp_dir / f"{uuid.uuid4().hex}{_JOURNAL}"
        with WriterSlot(self.locks_dir) as slot:
            try:
                for name, meta, arrays in items:
                    tmps.append(self._tmp_path(name, slot))
                    layout.write_entry(tmps[-1], name, meta, arrays)
                self._create_marker(slot)  # a first write that fails leaves no registry behind
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
                    COMMITTED.extend((str(self.root), n) for n in names)
            except OSError as e:
                what = f"entry '{names[0]}'" if len(names) == 1 else f"{len(names)} entries"
                raise RegistryError(f"cannot write {what} in {self.root}: {os_error_text(e)}; nothing was stored") from None
            finally:
                if not journal.exists():  # a journal's files belong to the roll-forward now
                    for tmp in tmps:
                        try:
                            tmp.unlink(missing_ok=True)
                        except OSError:
                            pass

    def _write_journal(self, journal: Path, renames: list[tuple[Path, Path]]) -> None:
        """Record a group commit (lock held); from here on the group is committed."""
        part = journal.with_name(journal.name + _PART)
        try:
            layout.write_new_file(part, json.dumps({"renames": [[t.name, d.name] for t, d in renames]}).encode())
            os.replace(part, journal)
        except OSError:
            part.unlink(missing_ok=True)
            raise
        fsync_dir(self.tmp_dir)

    def _journals(self) -> list[Path]:
        try:
            return sorted(self.tmp_dir.glob("*" + _JOURNAL))
        except OSError:
            return []

    def _roll_forward(self, journal: Path) -> None:
        try:
            renames = json.loads(journal.read_text())["renames"]
        except (OSError, ValueError, KeyError, TypeError):
            renames = []  # cannot happen (journals are renamed in complete); leave the parts to repair
        for tmp_name, final_name in renames:
            tmp, final = self.tmp_dir / str(tmp_name), self.entries_dir / str(final_name)
            if (tmp.parent == self.tmp_dir and final.parent == self.entries_dir and ".." not in (tmp.name, final.name)
                    and tmp.exists()):
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
                raise RegistryError(f"cannot remove entry '{name}' from {self.root}: {os_error_text(e)}") from None

    # -- maintenance -----------------------------------------------------------
    def verify(self, name: str, check: Callable[[dict, dict], list[str]] | None = None,
               caps: layout.CapsRule | None = None) -> list[str]:
        """Problems found in one entry (empty when intact): every stored array against its
        checksum (values, dtype, shape), no array without a checksum or checksum without an
        array, declared sizes within `caps` (default: the registry's), and the name recorded
        inside the file; then `check(meta, arrays)` (what the arrays mean is for the caller),
        on the arrays just verified. Never raises for a damaged entry: it is a problem."""
        problems = []
        try:
            path = self._existing(name)
            meta, arrays = layout.read_entry(path, verify=True, caps=caps or self.caps)
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
        except MemoryError:
            problems.append("too large to check in the memory available")
        return problems

    def leftovers(self) -> list[Path]:
        """Temporary files left by interrupted writers (including ones still being written)."""
        try:
            return sorted([*self.tmp_dir.glob("*" + _PART), *self.root.glob(_LEGACY_MARKER_TMP + "*")])
        except OSError:
            return []

    def repair(self) -> list[Path]:
        """Finish interrupted group commits and delete leftovers of killed writers.

        A file tagged with writer slot k is deleted only while this process holds slot k, so
        never while its writer lives; untagged files (index segments, earlier versions) only
        under the registry lock, which their writers hold for their whole life.
        Returns the deleted paths.
        """
        if not self.tmp_dir.is_dir():  # nothing was ever written here (a first write killed early has a tmp/)
            return []
        removed: list[Path] = []
        with self._lock():
            self._recover()
            by_slot: dict[int | None, list[Path]] = {}
            for p in self.leftovers():
                m = _TAGGED.fullmatch(p.name)
                by_slot.setdefault(int(m.group(1)) if m else None, []).append(p)
            for k, files in sorted(by_slot.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
                if k is None:
                    removed += self._unlink_all(files)
                    continue
                lock = slot_lock(self.locks_dir, k)
                if not lock.try_acquire():
                    continue  # its writer is alive: its files are work in progress
                try:
                    removed += self._unlink_all(p for p in self.leftovers() if (m := _TAGGED.fullmatch(p.name))
                                                and int(m.group(1)) == k)
                finally:
                    lock.release()
            if removed:
                fsync_dir(self.tmp_dir)
        return sorted(removed)

    @staticmethod
    def _unlink_all(paths: Iterable[Path]) -> list[Path]:
        done = []
        for p in paths:
            try:
                p.unlink()
                done.append(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise RegistryError(f"cannot delete {p}: {os_error_text(e)}") from None
        return done
