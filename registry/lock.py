"""Advisory inter-process file locks (fcntl.flock), the registry's only synchronisation.

The kernel drops a flock when its holder dies, even by SIGKILL, so a killed writer never
leaves the registry locked. flock is local to one machine (on NFS, use one writer host).
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from registry.errors import RegistryError

DEFAULT_TIMEOUT = 120.0


class FileLock:
    """Exclusive (or shared) lock on a lock file, waited for up to `timeout` seconds."""

    def __init__(self, path: Path, timeout: float = DEFAULT_TIMEOUT, shared: bool = False):
        self.path = Path(path)
        self.timeout = timeout
        self.shared = shared
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise RegistryError(f"cannot open lock file {self.path}: {e.strerror}") from None
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(self._fd, mode)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise RegistryError(
                        f"registry is locked by another vdna process ({self.path}); try again when it finishes"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
