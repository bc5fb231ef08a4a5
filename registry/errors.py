"""Typed storage errors; each message names the next step for the user."""
import difflib
import errno
from typing import Iterable


class RegistryError(Exception):
    """Base of every error raised by the registry."""


class EntryNotFoundError(RegistryError):
    def __init__(self, name: str, root: str, choices: Iterable[str] = ()):
        close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
        quoted = [f"'{c}'" for c in close]
        hint = f" (did you mean {', '.join(quoted[:-1]) + ' or ' if len(quoted) > 1 else ''}{quoted[-1]}?)" if close else ""
        super().__init__(f"no entry named '{name}' in registry {root}{hint}; see 'vdna list'")
        self.name = name


class EntryExistsError(RegistryError):
    def __init__(self, name: str, append: bool = False):
        how = "--replace overwrites it, --append adds new images to it" if append else "--replace overwrites it"
        super().__init__(f"an entry named '{name}' already exists ({how}; or choose another name)")
        self.name = name


class EntryChangedError(RegistryError):
    def __init__(self, name: str):
        super().__init__(
            f"entry '{name}' was changed by another vdna process while this one worked; run the command again"
        )
        self.name = name


class InvalidNameError(RegistryError):
    pass


class CorruptEntryError(RegistryError):
    pass


class RegistryNotFoundError(RegistryError):
    def __init__(self, root: str):
        super().__init__(
            f"no registry at {root}: check --registry / VDNA_REGISTRY / vdna.yaml (a registry is created by the "
            "first command that stores something: add, import, pull, demo)"
        )
        self.root = root


def os_error_text(e: OSError) -> str:
    """The cause of a failed write in a few words (full disk, quota, read-only, permissions...)."""
    known = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
    if hasattr(errno, "EDQUOT"):
        known[errno.EDQUOT] = "disk quota exceeded"
    return known.get(e.errno) or e.strerror or str(e)
