"""Image sources: a folder (recursive), one image, a .txt list of paths, or a .zip.

Each image is identified by a path relative to the source (never an absolute path,
so it can be reported without leaking the machine's layout) and read as bytes.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdnacli.errors import SourceError

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif",
}


@dataclass(frozen=True)
class ImageRef:
    """One image: where to read it (container + member) and its reported name."""

    name: str  # relative path, shown to users and used in reports
    path: str  # file on disk, or the zip archive
    member: str | None = None  # name inside the zip

    def read_bytes(self) -> bytes:
        if self.member is None:
            with open(self.path, "rb") as f:
                return f.read()
        with zipfile.ZipFile(self.path) as z:
            return z.read(self.member)


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> list[ImageRef]:
    refs = []
    seen_dirs = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
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
                refs.append(ImageRef(name=rel.replace(os.sep, "/"), path=full))
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
        refs.append(ImageRef(name=line if not p.is_absolute() else p.name, path=str(full)))
    return refs


def _from_zip(path: Path) -> list[ImageRef]:
    try:
        with zipfile.ZipFile(path) as z:
            members = [i.filename for i in z.infolist() if not i.is_dir() and _is_image(i.filename)]
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"cannot open zip archive {path}: {e}") from None
    return [ImageRef(name=m, path=str(path), member=m) for m in sorted(members)]


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
