"""Images in memory (a notebook's PIL images, numpy arrays, a torch or `datasets` Dataset)
as items of the same pipeline.

Each image is handed on as lossless file bytes (binary PPM/PGM for RGB and greyscale, PNG
for other modes), so it goes through exactly the decoding and preprocessing an image file
with the same pixels goes through: the DNA of a list of arrays equals the DNA of a folder
of PNGs of the same arrays. Its identity (the `--append` digest) is a hash of its pixels:
mode, size and raw pixel bytes (plus the palette of a palette image).

Accepted: a list or tuple (or any indexable with len(), e.g. a torch Dataset or a
`datasets.Dataset`) of images; a uint8 numpy array or torch tensor holding a batch
(N, H, W[, C]) or (N, C, H, W); or a one-shot iterable (a generator), read in the calling
process. An element is a PIL image, a uint8 array (H, W) or (H, W, C) with C in 1..4, a uint8
tensor (C, H, W), a path, or a tuple / dict whose first image (or "image" key) is one of
those (what Dataset items usually are).
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from vdnacli.errors import ConfigError
from vdnacli.sources.base import Item, Ref, Source, Unit, Want, display_path, read_regular_file

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class NotAnImage(ValueError):
    pass


def _is_pil(obj) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)


def _is_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "numpy") and hasattr(obj, "dim")


def _unwrap(obj):
    """A Dataset item's image: the first image of a tuple, the "image" value of a dict."""
    if isinstance(obj, dict):
        if "image" in obj:
            return obj["image"]
        for v in obj.values():
            if _is_pil(v) or isinstance(v, np.ndarray) or _is_tensor(v):
                return v
        raise NotAnImage(f"a dict without an image (keys: {', '.join(map(str, list(obj)[:8]))})")
    if isinstance(obj, (tuple, list)) and obj:
        return obj[0]
    return obj


def _array_image(a: np.ndarray):
    from PIL import Image

    if a.dtype != np.uint8:
        raise NotAnImage(f"a {a.dtype} array: give uint8 pixels (0..255)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a), "L")
    if a.ndim == 3 and a.shape[2] in _MODES:
        return Image.fromarray(np.ascontiguousarray(a), _MODES[a.shape[2]])
    raise NotAnImage(f"an array of shape {tuple(a.shape)}: give (H, W) or (H, W, C) with C in 1..4")


def to_pil(obj):
    """PIL image of an in-memory element (a path is not one: see element_ref)."""
    obj = _unwrap(obj)
    if _is_pil(obj):
        return obj
    if _is_tensor(obj):
        t = obj.detach().cpu()
        if str(t.dtype) != "torch.uint8":
            raise NotAnImage(f"a {t.dtype} tensor: give uint8 pixels (0..255), or PIL images")
        a = t.numpy()
        if a.ndim == 3 and a.shape[0] in _MODES and a.shape[2] not in _MODES:  # (C, H, W)
            a = np.moveaxis(a, 0, -1)
        return _array_image(a)
    if isinstance(obj, np.ndarray):
        return _array_image(obj)
    raise NotAnImage(f"not an image ({type(obj).__name__})")


def encode(img) -> tuple[bytes, bytes]:
    """(lossless file bytes, pixel digest) of a PIL image."""
    w, h = img.size
    raw = img.tobytes()
    head = f"vdna-pixels\0{img.mode}\0{w}x{h}\0".encode()
    pal = img.getpalette() if img.mode in ("P", "PA") else None
    digest = hashlib.sha256(head + raw + (bytes(pal) if pal else b"")).digest()[:16]
    if img.mode == "RGB":
        return b"P6\n%d %d\n255\n" % (w, h) + raw, digest
    if img.mode == "L":
        return b"P5\n%d %d\n255\n" % (w, h) + raw, digest
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), digest


def element_item(obj, name: str) -> Item:
    inner = _unwrap(obj) if isinstance(obj, (dict, tuple, list)) else obj
    if isinstance(inner, (str, os.PathLike)):
        return Item(name, read_regular_file(os.fspath(inner)))
    data, digest = encode(to_pil(inner))
    return Item(name, data, digest)


@dataclass(frozen=True)
class ElementRef(Ref):
    """Element `index` of an indexable collection, converted when read (in the worker)."""

    name: str
    items: Any = field(repr=False, compare=False)
    index: int = 0

    def read(self) -> Item:
        try:
            return element_item(self.items[self.index], self.name)
        except NotAnImage as e:
            raise OSError(22, str(e)) from None

    def read_bytes(self) -> bytes:
        return self.read().data


@dataclass(frozen=True)
class IterUnit(Unit):
    """A one-shot iterable, read once, in the calling process."""

    name: str
    iterable: Any

    def count(self) -> int:
        raise ConfigError("a seeded subset (limit) needs a list or a Dataset, not a one-shot iterator")

    def items(self, want: Want | None, report: bool = True) -> Iterator[Item]:
        for i, obj in enumerate(self.iterable):
            if want is not None and not want(i):
                continue
            name = _element_name(obj, i)
            try:
                yield element_item(obj, name)
            except NotAnImage as e:
                yield Item(name, error=f"unreadable: {e}")
            except OSError as e:
                yield Item(name, error=f"unreadable: {e.strerror or e}")


def _element_name(obj, i: int) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return display_path(os.fspath(obj))
    return f"image[{i}]"


def memory_source(images) -> Source:
    """Any supported collection of images -> a Source (see the module's docstring)."""
    kind = type(images).__name__
    origin = {"kind": "python", "type": kind}
    if _is_pil(images):
        raise ConfigError("give a list of images, not one image: compute([img])")
    if isinstance(images, np.ndarray) or _is_tensor(images):
        arr = images
        if images.ndim not in (3, 4):
            raise ConfigError(f"a {kind} of images is a batch (N, H, W[, C]) or (N, C, H, W); got shape "
                              f"{tuple(images.shape)} (wrap one image in a list)")
        return Source("python", dict(origin, images=int(arr.shape[0])),
                      refs=[ElementRef(f"image[{i}]", arr, i) for i in range(int(arr.shape[0]))])
    if hasattr(images, "__getitem__") and hasattr(images, "__len__") and not isinstance(images, (str, bytes, dict)):
        n = len(images)
        refs = [ElementRef(_element_name(images[i], i) if isinstance(images, (list, tuple)) else f"image[{i}]",
                           images, i) for i in range(n)]
        return Source("python", dict(origin, images=n), refs=refs)
    if hasattr(images, "__iter__") and not isinstance(images, (str, bytes, dict)):
        return Source("python", origin, units=[IterUnit("images", images)], in_process=True)
    raise ConfigError(f"cannot read images from a {kind}: give a path, a list of PIL images / uint8 arrays / "
                      "paths, a torch Dataset, or an iterable of those")
