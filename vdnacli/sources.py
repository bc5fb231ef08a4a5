"""Image sources: a folder (recursive), one image, a .txt list of paths, or a .zip.

Each image is identified by a path relative to the source (never an absolute path,
so it can be reported without leaking the machine's layout) and read as bytes.

Reading is defensive, because one bad file among millions must cost one skipped image,
not the run: only regular files are read (a FIFO would block forever, a device never
end), files and zip members larger than MAX_FILE_BYTES are refused before reading,
folders that cannot be listed are reported as failed entries instead of vanishing, and
names that are not valid UTF-8 are shown with backslash escapes (the file is still read).
"""
from __future__ import annotations

import errno
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdnacli.errors import SourceError

MAX_FILE_BYTES = 1 << 30  # larger "images" are refused unread (1 GiB)

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif",
}


@dataclass(frozen=True)
class ImageRef:
    """One image: where to read it (container + member) and its reported name."""

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
            return _read_regular_file(self.path)
        try:
            with zipfile.ZipFile(self.path) as z:
                info = z.getinfo(self.member)
                if info.file_size > MAX_FILE_BYTES:
                    raise OSError(errno.EFBIG, f"member too large ({info.file_size >> 20} MiB uncompressed)")
                return z.read(info)
        except OSError:
            raise
        except (zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError, EOFError, ValueError,
                zlib.error) as e:  # damaged, encrypted or oddly compressed member
            raise OSError(errno.EIO, f"cannot read from zip: {e}") from None


def _read_regular_file(path: str) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat decides before reading.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "folder" if stat.S_ISDIR(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode) else "special file"
            raise OSError(errno.EINVAL, f"not a regular file ({kind})")
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"file too large ({st.st_size >> 20} MiB)")
        chunks, left = [], MAX_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:  # grew while being read
            raise OSError(errno.EFBIG, "file too large")
        return b"".join(chunks)
    finally:
        os.close(fd)


def printable(name: str) -> str:
    """A file name as text that can always be printed: undecodable bytes as \\xNN."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> list[ImageRef]:
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
            if _is_image(fn):
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, root)
                refs.append(ImageRef(name=printable(rel.replace(os.sep, "/")), path=full))
    return refs


def _from_list(txt: Path) -> list[ImageRef]:
    refs = []
    try:
        lines = txt.read_text(errors="surrogateescape").splitlines()
    except OSError as e:
        raise SourceError(f"cannot read list {txt}: {e.strerror}") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        full = p if p.is_absolute() else txt.parent / p
        refs.append(ImageRef(name=printable(line if not p.is_absolute() else p.name), path=str(full)))
    return refs


def _from_zip(path: Path) -> list[ImageRef]:
    try:
        with zipfile.ZipFile(path) as z:
            members = [i.filename for i in z.infolist() if not i.is_dir() and _is_image(i.filename)]
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"cannot open zip archive {path}: {e}") from None
    return [ImageRef(name=printable(m), path=str(path), member=m) for m in sorted(members)]


def list_images(source: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[ImageRef]:
    """All images of a source, sorted by name; `limit` takes a seeded random subset."""
    src = Path(source)
    if not src.exists():
        raise SourceError(f"path does not exist: {source}")
    if src.is_dir():
        refs = _walk(src)
    elif src.suffix.lower() == ".txt":
        refs = _from_list(src)
    elif src.suffix.lower() == ".zip":
        refs = _from_zip(src)
    elif _is_image(src.name):
        refs = [ImageRef(name=src.name, path=str(src))]
    else:
        raise SourceError(f"{source} is not a folder, image, .txt list or .zip archive")
    if not refs:
        raise SourceError(f"no images found in {source} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if limit is not None:
        if limit < 1:
            raise SourceError("--limit must be at least 1")
        if limit < len(refs):
            pick = np.random.default_rng(seed).choice(len(refs), size=limit, replace=False)
            refs = [refs[i] for i in sorted(pick)]
    return refs
