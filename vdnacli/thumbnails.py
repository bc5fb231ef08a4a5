"""Thumbnails kept with a DNA: a few small pictures of its images, chosen by content hash.

Which images: the N counted images whose content hashes (the truncated sha256 of the file's
bytes that the pipeline records per counted image, `DNA.image_hashes`) are the smallest.
The choice depends on the set of images only, never on file order, names or the machine,
and it composes: the N smallest hashes of a union are among the N smallest of each part.
So a DNA merged from parts (`merge`, `add --append`) re-chooses its thumbnails exactly from
the parts' own thumbnails; no candidate beyond N per entry has to be kept. A part that kept
only k < N thumbnails of more than k images vouches for the k smallest of its images only,
so a merge keeps min(N, k) (a part with none: the merge keeps none).

How: each image is decoded like the pipeline decodes it (EXIF orientation, any mode to
RGB), centre-cropped to a square, resized to 96 x 96 and encoded as WebP (JPEG where Pillow
lacks WebP): about 2-4 KB each, a few tens of KB per DNA. Stored in the entry file as the
dataset group `thumbnails/` (registry/layout.py): `hashes` uint8 [k, 16] ascending,
`offsets` int64 [k + 1], `data` uint8 [bytes], checksummed like every other array.
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vdnacli.errors import ConfigError, FormatError, VdnaError

SIZE = 96  # pixels, square
DEFAULT_COUNT = 16
MAX_COUNT = 256
MAX_IMAGE_BYTES = 256 << 10  # one encoded thumbnail, on read
QUALITY = 75
KEYS = ("thumbnails/hashes", "thumbnails/offsets", "thumbnails/data")
_MAGIC = {b"RIFF": "webp", b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png"}
_BATCH = 1024  # refs hashed per batch of thread tasks
_MAX_SIDE = 1024  # a stored thumbnail larger than this is refused before decoding


@dataclass(frozen=True)
class Thumbnails:
    """Encoded thumbnails of some of a DNA's images, in ascending order of content hash."""

    hashes: np.ndarray  # uint8 [k, 16], ascending, unique
    images: tuple[bytes, ...]  # encoded WebP / JPEG, one per hash

    def __len__(self) -> int:
        return len(self.images)

    def take(self, k: int) -> "Thumbnails":
        return Thumbnails(self.hashes[:k], self.images[:k])

    def mime(self, i: int) -> str:
        return "image/" + image_format(self.images[i])

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.images)

    def to_arrays(self) -> dict[str, np.ndarray]:
        sizes = np.array([len(b) for b in self.images], dtype=np.int64)
        return {
            "thumbnails/hashes": np.ascontiguousarray(self.hashes, dtype=np.uint8).reshape(-1, 16),
            "thumbnails/offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "thumbnails/data": np.frombuffer(b"".join(self.images), dtype=np.uint8).copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict) -> "Thumbnails | None":
        """The thumbnails stored in an entry's arrays (None when it keeps none), validated:
        entries may come from anywhere."""
        present = [k for k in KEYS if k in arrays]
        if not present:
            return None
        if len(present) != len(KEYS):
            raise FormatError("thumbnails are incomplete (thumbnails/hashes, offsets and data go together)")
        hashes, offsets, data = (arrays[k] for k in KEYS)
        if hashes.dtype != np.uint8 or hashes.ndim != 2 or hashes.shape[1] != 16 or hashes.shape[0] > MAX_COUNT:
            raise FormatError(f"thumbnails/hashes must be uint8 [k <= {MAX_COUNT}, 16]")
        k = hashes.shape[0]
        if offsets.dtype.kind not in "iu" or offsets.shape != (k + 1,) or data.dtype != np.uint8 or data.ndim != 1:
            raise FormatError("thumbnails/offsets or thumbnails/data have the wrong type or shape")
        off = offsets.astype(np.int64)
        sizes = np.diff(off)
        if off[0] != 0 or off[-1] != data.size or (sizes <= 0).any() or (sizes > MAX_IMAGE_BYTES).any():
            raise FormatError("thumbnails/offsets do not cut thumbnails/data into thumbnails of a sane size")
        if k > 1 and not (_as_keys(hashes)[:-1] < _as_keys(hashes)[1:]).all():
            raise FormatError("thumbnails/hashes are not sorted and unique")
        raw = data.tobytes()
        images = tuple(raw[off[i]:off[i + 1]] for i in range(k))
        for b in images:
            if image_format(b) is None:
                raise FormatError("a thumbnail is not a WebP, JPEG or PNG image")
        return cls(np.ascontiguousarray(hashes), images)


def _as_keys(hashes: np.ndarray) -> np.ndarray:
    """Hash rows as comparable bytes values (row order = byte-wise order)."""
    return np.ascontiguousarray(hashes, dtype=np.uint8).view("S16").ravel()


def image_format(data: bytes) -> str | None:
    for magic, name in _MAGIC.items():
        if data.startswith(magic) and (name != "webp" or data[8:12] == b"WEBP"):
            return name
    return None


def check_count(n: int) -> int:
    if type(n) is not int or not 0 <= n <= MAX_COUNT:
        raise ConfigError(f"--thumbnails must be between 0 (none) and {MAX_COUNT}")
    return n


def _encoder() -> tuple[str, dict]:
    from PIL import features

    if features.check("webp"):
        return "WEBP", {"quality": QUALITY, "method": 6}
    return "JPEG", {"quality": QUALITY + 10, "optimize": True}


def make(data: bytes, size: int = SIZE) -> bytes:
    """One thumbnail of an image file's bytes (ImageDecodeError and friends when it cannot)."""
    from PIL import Image, ImageOps

    from vdnacli.preprocess import decode  # the pipeline's decoder: bomb limits, formats, EXIF, RGB

    img = decode(data)
    img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    fmt, opts = _encoder()
    buf = io.BytesIO()
    img.save(buf, fmt, **opts)
    return buf.getvalue()


def _digest(ref) -> bytes | None:
    try:
        return hashlib.sha256(ref.read_bytes()).digest()[:16]
    except (OSError, KeyError):
        return None


def collect(refs: Sequence, image_hashes: np.ndarray | None, n: int = DEFAULT_COUNT, workers: int | None = None,
            digests: Sequence[bytes | None] | None = None) -> Thumbnails | None:
    """Thumbnails of the `n` counted images with the smallest content hashes.

    `refs` are the source's images (anything with `read_bytes()`); `image_hashes` the DNA's
    sorted [m, 16] hashes of the images it counted. Unless `digests` (each ref's 16-byte
    hash, as the pipeline computed it, None where unknown) is given, every ref is read and
    hashed once more (threads: reading and sha256 release the GIL); only the chosen images
    are decoded. An image that cannot be thumbnailed now (changed or removed since it was
    counted) gives its place to the next smallest hash.
    """
    check_count(n)
    if n == 0 or image_hashes is None or len(image_hashes) == 0:
        return None
    order = np.argsort(_as_keys(image_hashes), kind="stable")
    wanted = [bytes(image_hashes[i]) for i in order[: 2 * n]]  # spares for images that fail now
    where: dict[bytes, object] = {}
    targets = set(wanted)
    if digests is not None:
        for ref, digest in zip(refs, digests):
            if digest in targets and digest not in where:
                where[digest] = ref
    else:
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 2)) as pool:
            for start in range(0, len(refs), _BATCH):  # batches: a million refs never make a million futures
                batch = refs[start:start + _BATCH]
                for ref, digest in zip(batch, pool.map(_digest, batch)):
                    if digest in targets and digest not in where:
                        where[digest] = ref
    hashes, images = [], []
    for h in wanted:
        if len(images) == n:
            break
        ref = where.get(h)
        if ref is None:
            continue
        try:
            data = ref.read_bytes()
            if hashlib.sha256(data).digest()[:16] != h:
                continue  # changed since it was hashed
            images.append(make(data))
        except (OSError, KeyError, ValueError, MemoryError, VdnaError):
            continue
        hashes.append(np.frombuffer(h, dtype=np.uint8))
    if not images:
        return None
    return Thumbnails(np.stack(hashes), tuple(images))


def combine(parts: Iterable[tuple["Thumbnails | None", int]], count: int | None = None) -> Thumbnails | None:
    """The thumbnails of a union of DNAs, from each part's (thumbnails, number of distinct
    images): the smallest hashes of the union, as many as every part vouches for.

    `count` caps the result (default: the most any part kept)."""
    parts = list(parts)
    kept = [t for t, _ in parts if t is not None and len(t)]
    if not kept:
        return None
    limit = max(len(t) for t in kept) if count is None else count
    for t, n_images in parts:
        k = len(t) if t is not None else 0
        if k < n_images:  # this part kept its k smallest only: beyond them, its next could be smaller
            limit = min(limit, k)
    if limit <= 0:
        return None
    seen: dict[bytes, bytes] = {}
    for t in kept:
        for h, img in zip(t.hashes, t.images):
            seen.setdefault(bytes(h), img)
    chosen = sorted(seen)[:limit]
    return Thumbnails(np.frombuffer(b"".join(chosen), dtype=np.uint8).reshape(-1, 16).copy(),
                      tuple(seen[h] for h in chosen))


def decode_thumbnail(data: bytes):
    """A stored thumbnail as a PIL image (its declared size checked before decoding)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in ("WEBP", "JPEG", "PNG") or max(img.size) > _MAX_SIDE:
            raise FormatError("a stored thumbnail is not a small WebP, JPEG or PNG image")
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise FormatError(f"a stored thumbnail cannot be decoded ({e})") from None
    return img.convert("RGB")


def contact_sheet(thumbs: Thumbnails, title: str = "", columns: int | None = None, gap: int = 4):
    """A PIL image: the thumbnails on a grid under a one-line title."""
    from PIL import Image, ImageDraw

    imgs = [decode_thumbnail(b) for b in thumbs.images]
    side = max((max(i.size) for i in imgs), default=SIZE)
    cols = columns or min(len(imgs), max(1, int(np.ceil(np.sqrt(len(imgs))))))
    rows = max(1, -(-len(imgs) // cols))
    head = 22 if title else 0
    sheet = Image.new("RGB", (gap + cols * (side + gap), head + gap + rows * (side + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap + 2, 5), title, fill=(30, 30, 30))
    for k, img in enumerate(imgs):
        r, c = divmod(k, cols)
        x = gap + c * (side + gap) + (side - img.size[0]) // 2
        y = head + gap + r * (side + gap) + (side - img.size[1]) // 2
        sheet.paste(img, (x, y))
    return sheet


def write_sheet(thumbs: Thumbnails, out: Path, title: str = "") -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise VdnaError(f"contact sheets are written as PNG: use a .png file name (got {out.name})")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(thumbs, title).save(out, "PNG")
    except OSError as e:
        raise VdnaError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def open_file(path: Path) -> bool:
    """Show a file in the desktop's viewer; False (never an error) when nothing can open it.

    Without a display (and no $BROWSER), nothing is tried: Python's fallbacks there are console
    browsers that would take over the terminal."""
    import sys
    import webbrowser

    graphical = sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not graphical and not os.environ.get("BROWSER"):
        return False
    try:
        return bool(webbrowser.open(Path(path).resolve().as_uri()))
    except (webbrowser.Error, OSError):
        return False
