"""Inter-process file locks through `filelock` (flock on POSIX, LockFileEx on Windows).

The operating system drops these locks when their holder dies, even by SIGKILL, so a killed
writer never leaves the registry locked. They are local to one machine (on NFS, use one
writer host).

Two kinds are used by the registry:
  * `FileLock(path)`: exclusive, waited for (short sections: renames, removals, index writes);
  * `WriterSlot(folder)`: held by one writer for the life of its temporary files. A writer
    takes the first free `writer-<k>.lock` in the folder and tags its temporary files with k;
    `repair` deletes a tagged file only after taking slot k itself, i.e. only when the writer
    that made it is gone. (This replaces a shared/exclusive `.writers` lock, which filelock
    offers only as an SQLite database; exclusive locks work everywhere.)
"""
from __future__ import annotations

import re
from pathlib import Path

import filelock

from registry.errors import RegistryError, os_error_text

DEFAULT_TIMEOUT = 120.0
_SLOT_NAME = "writer-{}.lock"  # in <registry>/locks/
SLOT_RE = re.compile(r"writer-(\d{1,6})\.lock")


def _os_error(path: Path, e: OSError) -> RegistryError:
    return RegistryError(f"cannot lock {path.parent}: {os_error_text(e)} ({path.name})")


class FileLock:
    """Exclusive lock on a lock file, waited for up to `timeout` seconds (0: one try)."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT):
        self.path = Path(path)
        self.timeout = timeout
        self._lock = filelock.FileLock(str(self.path), timeout=timeout)

    def try_acquire(self) -> bool:
        """Take the lock if it is free now; False if another holder has it."""
        try:
            self._lock.acquire(timeout=0)
            return True
        except filelock.Timeout:
            return False
        except OSError as e:
            raise _os_error(self.path, e) from None

    def __enter__(self) -> "FileLock":
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise RegistryError(
                f"registry is locked by another vdna process ({self.path}); try again when it finishes"
            ) from None
        except OSError as e:
            raise _os_error(self.path, e) from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __exit__(self, *exc) -> None:
        self.release()


class WriterSlot:
    """The first free writer slot of `folder`, held until exit; `.tag` names this writer's files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index: int | None = None
        self._lock: FileLock | None = None

    @property
    def tag(self) -> str:
        return f"w{self.index}"

    def __enter__(self) -> "WriterSlot":
        k = 0
        while True:
            lock = FileLock(self.folder / _SLOT_NAME.format(k), timeout=0)
            if lock.try_acquire():
                self.index, self._lock = k, lock
                return self
            k += 1
            if k > 100_000:
                raise RegistryError(f"no free writer slot in {self.folder}")

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def slot_lock(folder: Path, index: int) -> FileLock:
    """The lock of writer slot `index` (for `repair`: free means its writer is gone)."""
    return FileLock(Path(folder) / _SLOT_NAME.format(index), timeout=0)


def slot_indices(folder: Path) -> list[int]:
    """Slots that exist in `folder` (held or not)."""
    try:
        names = [p.name for p in Path(folder).iterdir()]
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := SLOT_RE.fullmatch(n)))
