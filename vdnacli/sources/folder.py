"""Local files: a folder (recursive), one image, or a .txt list of paths and URLs.

Each image is identified by a path relative to the source (never an absolute path, so it
can be reported without leaking the machine's layout) and read as bytes.

Reading is defensive, because one bad file among millions must cost one skipped image,
not the run: only regular files are read (a FIFO would block forever, a device never
end), files larger than MAX_FILE_BYTES are refused before reading, folders that cannot be
listed are reported as failed entries instead of vanishing, and names that are not valid
UTF-8 are shown with backslash escapes (the file is still read).
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from vdnacli.errors import SourceError
from vdnacli.sources.base import Ref, SourceOptions, display_path, is_image, is_url, printable, read_regular_file


@dataclass(frozen=True)
class ImageRef(Ref):
    """One image file, or one member of a zip archive (`member`), and its reported name."""

    name: str  # relative path, shown to users and used in reports (printable)
    path: str  # file on disk, or the zip archive
    member: str | None = None  # name inside the zip
    error: str | None = None  # set when the entry is known unreadable (a folder that cannot be listed)

    def read_bytes(self) -> bytes:
        """The file's bytes; OSError (with a readable strerror) for anything that is not a
        readable regular file of sane size."""
        if self.error is not None:
            raise OSError(errno.EIO, self.error)
        if self.member is None:
            return read_regular_file(self.path)
        from vdnacli.sources.archive import read_zip_member

        return read_zip_member(self.path, self.member)


def walk(root: Path) -> list[ImageRef]:
    refs = []
    seen_dirs = set()

    def unlistable(err: OSError) -> None:  # reported as a failed image instead of vanishing
        rel = os.path.relpath(err.filename, root) if err.filename else "?"
        refs.append(ImageRef(name=printable(rel.replace(os.sep, "/")) + "/", path=str(err.filename),
                             error=f"folder cannot be listed: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unlistable):
        try:
            st = os.stat(dirpath)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for fn in sorted(filenames):
            if is_image(fn):
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, root)
                refs.append(ImageRef(name=printable(rel.replace(os.sep, "/")), path=full))
    return refs


def line_refs(lines: Iterable[str], base: Path, options: SourceOptions) -> list[Ref]:
    """One ref per non-empty, non-comment line: a URL, or a path (relative to `base`)."""
    refs: list[Ref] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        refs.append(path_or_url_ref(line, base, options))
    return refs


def path_or_url_ref(text: str, base: Path, options: SourceOptions, name: str | None = None) -> Ref:
    if is_url(text):
        from vdnacli.sources.url import url_ref

        return url_ref(text, options, name)
    p = Path(text)
    full = p if p.is_absolute() else base / p
    return ImageRef(name=name or display_path(text), path=str(full))


def from_list(txt: Path, options: SourceOptions) -> list[Ref]:
    try:
        lines = txt.read_text(errors="surrogateescape").splitlines()
    except OSError as e:
        raise SourceError(f"cannot read list {txt.name}: {e.strerror}") from None
    return line_refs(lines, txt.parent, options)
