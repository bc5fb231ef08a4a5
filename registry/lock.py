"""An advisory inter-process file lock (fcntl), held while the registry is written."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from registry.errors import RegistryError


class FileLock:
    """Exclusive lock on a lock file; the kernel releases it if the process dies."""

    def __init__(self, path: Path, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise RegistryError(
                        f"registry is locked by another vdna process ({self.path}); try again when it finishes"
                    ) from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
