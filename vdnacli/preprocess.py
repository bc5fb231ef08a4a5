"""Decoding and preprocessing, every choice explicit and recorded (cf. clean-fid).

bytes -> RGB (decode mode "upright": EXIF-upright, high bit depths rescaled; "plain": PIL's
convert("RGB"), as vdna 0.1.1) -> square crop ("center", "random" seeded per image, or
"none") -> resize to the extractor's size ("pil": uint8 with PIL's antialiased filter;
"clean": each channel a float PIL image, bicubic, no uint8 rounding, as vdna 0.1.1 and
clean-fid; "legacy_pytorch": torch bilinear) -> float tensor normalised with the
extractor's mean/std (x / 255, then (x - mean) / std, in float32).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vdnacli.errors import ImageDecodeError

ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow's own bomb limit (~9459 x 9459, 268 MB as RGB): a larger declared size is refused
# before any pixel is decoded.
MAX_PIXELS = 89_478_485
# Formats decoded at all, whatever the file extension says: plain raster formats only.
# Others (EPS runs Ghostscript, PSD, ICNS, ...) are refused as "not an image".
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM")  # JPEG includes MPO
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


# Caps for every decoder path, checked on the declared size before any pixel is decoded:
# each side (JPEG's own limit), and the samples of all planes together (a planar
# 3 x 9500 x 9500 float TIFF declares 1 GB of samples in a 1 MB file).
MAX_SIDE = 65_535
MAX_SAMPLES = 3 * MAX_PIXELS  # an RGB image at the pixel cap
MAX_DECODED_BYTES = 512 << 20


def check_declared(shape, itemsize: int = 1) -> None:
    """Refuse a declared image shape (any number of axes) beyond the caps."""
    dims = [int(d) for d in shape]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ImageDecodeError(f"declared size {list(dims)} is empty or not an image")
    if any(d > MAX_SIDE for d in dims):
        raise ImageDecodeError(f"declared size {list(dims)} is too large (a side over {MAX_SIDE})")
    samples = int(np.prod(dims, dtype=np.float64))
    if samples > MAX_SAMPLES or samples * itemsize > MAX_DECODED_BYTES:
        raise ImageDecodeError(f"declared size {list(dims)} is too large (decompression bomb?)")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Rescale high-bit-depth or float samples to uint8: integers by their type's range,
    floats by the range of their finite values (NaN and infinities become 0). Works row
    block by row block, so the memory used stays near the input's size."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    out = np.empty(a.shape, dtype=np.uint8)
    if a.dtype.kind in "ui":
        info = np.iinfo(a.dtype)
        lo, hi = float(max(info.min, 0)), float(info.max)
    else:
        finite_lo, finite_hi = np.inf, -np.inf
        for block in np.array_split(a, max(1, a.shape[0] // 256)):
            f = block[np.isfinite(block)]
            if f.size:
                finite_lo, finite_hi = min(finite_lo, float(f.min())), max(finite_hi, float(f.max()))
        lo, hi = (finite_lo, finite_hi) if finite_hi > finite_lo else (0.0, 0.0)
    for i in range(0, a.shape[0], 256):
        x = a[i:i + 256].astype(np.float64)
        if hi > lo:
            x = np.where(np.isfinite(x), (x - lo) / (hi - lo), 0.0)
        else:
            x = np.zeros_like(x)
        out[i:i + 256] = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: high-bit-depth and float images are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        img = Image.fromarray(_to_uint8(np.asarray(img, dtype=np.uint16)), "L")
    elif img.mode in ("I", "F"):
        a = np.asarray(img)  # 32-bit integers and floats: their finite range
        img = Image.fromarray(_to_uint8(a if a.dtype.kind == "f" else a.astype(np.float64)), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def _tiff_fallback(data: bytes) -> Image.Image | None:
    """Float or 16-bit RGB TIFFs that Pillow cannot open, read with tifffile (first page)."""
    if not data.startswith(_TIFF_MAGIC):
        return None
    try:
        import tifffile
    except ImportError:
        return None
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        check_declared(page.shape, page.dtype.itemsize if page.dtype is not None else 8)
        a = page.asarray()
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):  # planar: channels first
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    if a.ndim != 2 and not (a.ndim == 3 and a.shape[2] == 3):
        raise ImageDecodeError(f"unsupported TIFF layout {list(a.shape)}")
    a8 = _to_uint8(a)
    return Image.fromarray(a8, "RGB" if a8.ndim == 3 else "L")


def _exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a photo whose EXIF block is damaged is kept as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # Pillow raises several types for malformed EXIF
        return img


def decode(data: bytes, plain: bool = False) -> Image.Image:
    """Image file bytes -> RGB PIL image; ImageDecodeError says why it cannot be.

    Default: EXIF-upright, high-bit-depth and float images rescaled to 8 bits. `plain`: the
    first frame through PIL's own convert("RGB") and nothing else (what vdna 0.1.1 does)."""
    if not data:
        raise ImageDecodeError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            try:
                img = Image.open(io.BytesIO(data), formats=FORMATS)
            except UnidentifiedImageError:
                img = _tiff_fallback(data)
                if img is None:
                    raise ImageDecodeError("not an image (unknown or unsupported format)") from None
                return to_rgb(img)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageDecodeError(f"declared size {w}x{h} is too large (decompression bomb?)")
            if w < 1 or h < 1:
                raise ImageDecodeError(f"declared size {w}x{h} is empty")
            check_declared((h, w, len(img.getbands())), 4 if img.mode in ("I", "F", "I;16", "I;16B", "I;16L") else 1)
            img.seek(0)  # first frame of animations
            img.load()
            if plain:
                return img.convert("RGB")
            return to_rgb(_exif_upright(img))
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageDecodeError(f"declared size is too large (decompression bomb? {e})") from None
        except MemoryError:
            raise ImageDecodeError("not enough memory to decode") from None
        except Exception as e:  # Pillow and tifffile raise many types for broken files
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ImageDecodeError(f"cannot decode image: {msg}") from None


def center_crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def random_crop(img: Image.Image, seed: int, digest: bytes) -> Image.Image:
    """A square crop at an offset drawn from (seed, the image's content hash): the same image
    gets the same crop whatever the order, worker or machine."""
    w, h = img.size
    s = min(w, h)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])
    left = int(rng.integers(0, w - s + 1))
    top = int(rng.integers(0, h - s + 1))
    return img.crop((left, top, left + s, top + s))


def _resize_clean(img: Image.Image, size: int) -> np.ndarray:
    """vdna 0.1.1's (clean-fid's) resize: each channel as a float32 PIL image, bicubic, clipped
    to [0, 255] and kept as float (no rounding to uint8) -> float32 [3, size, size]."""
    a = np.asarray(img)
    out = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):
        ch = Image.fromarray(np.ascontiguousarray(a[:, :, c], dtype=np.float32))  # mode "F"
        out[c] = np.asarray(ch.resize((size, size), Image.Resampling.BICUBIC)).clip(0, 255)
    return out


def _resize_legacy_pytorch(img: Image.Image, size: int) -> np.ndarray:
    """vdna 0.1.1's "legacy_pytorch" resize: torch bilinear (align_corners=False, no
    antialiasing) on the float image, clipped to [0, 255] -> float32 [3, size, size]."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy())[None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0].numpy().clip(0, 255)


def prepare(img: Image.Image, size: int, crop: str = "center", interpolation: str = "bicubic",
            resize: str = "pil", crop_seed: int = 0, digest: bytes = b"") -> np.ndarray:
    """RGB PIL image -> [3, size, size]: uint8 for the "pil" resize, float32 (0..255) otherwise."""
    if crop == "center":
        img = center_crop(img)
    elif crop == "random":
        img = random_crop(img, crop_seed, digest)
    elif crop != "none":
        raise ValueError(f"unknown crop {crop!r}")
    if resize == "clean":
        return _resize_clean(img, size)
    if resize == "legacy_pytorch":
        return _resize_legacy_pytorch(img, size)
    img = img.resize((size, size), _FILTERS[interpolation], reducing_gap=None)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


@dataclass(frozen=True)
class ImageRecipe:
    """How one image's bytes become the network's input array (picklable: decode workers)."""

    size: int
    decode_mode: str = "upright"
    crop: str = "center"
    crop_seed: int = 0
    resize: str = "pil"
    interpolation: str = "bicubic"

    @classmethod
    def of(cls, settings, spec) -> "ImageRecipe":
        return cls(size=spec.input_size, decode_mode=settings.decode_mode, crop=settings.crop, crop_seed=settings.crop_seed,
                   resize=settings.resize, interpolation=settings.interpolation)

    def prepare(self, data: bytes, digest: bytes = b"") -> np.ndarray:
        """Bytes -> [3, size, size] array; ImageDecodeError (or ValueError/OSError) if it cannot be."""
        img = decode(data, plain=self.decode_mode == "plain")
        return prepare(img, self.size, self.crop, self.interpolation, self.resize, self.crop_seed, digest)


def normalise(batch_uint8, mean, std):
    """uint8 (or float 0..255) [B, 3, H, W] tensor -> float32 normalised tensor (on the batch's
    device): x / 255, then (x - mean) / std, the operations of torchvision's ToTensor + Normalize."""
    import torch

    x = batch_uint8.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)
