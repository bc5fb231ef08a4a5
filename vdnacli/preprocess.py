"""Decoding and preprocessing, every choice explicit and recorded (cf. clean-fid).

bytes -> PIL (EXIF orientation applied) -> RGB -> centre crop to square -> resize to
the extractor's size with PIL's antialiased bicubic filter -> float tensor normalised
with the extractor's mean/std.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from vdnacli.errors import ImageDecodeError

ImageFile.LOAD_TRUNCATED_IMAGES = False
MAX_PIXELS = 178_956_970  # PIL's bomb threshold x2; larger declared sizes are refused
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: high-bit-depth and float images are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            a = a / 65535.0
        else:
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        img = Image.fromarray((np.clip(np.nan_to_num(a), 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def decode(data: bytes) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageDecodeError(f"declared size {w}x{h} is too large (decompression bomb?)")
            img.seek(0)  # first frame of animations
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageDecodeError(f"decompression bomb refused ({e})") from None
        except Exception as e:  # PIL raises many types for broken files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ImageDecodeError(f"cannot decode image: {msg}") from None


def center_crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def prepare(img: Image.Image, size: int, crop: str = "center", interpolation: str = "bicubic") -> np.ndarray:
    """RGB PIL image -> uint8 array [3, size, size]."""
    if crop == "center":
        img = center_crop(img)
    elif crop != "none":
        raise ValueError(f"unknown crop {crop!r}")
    img = img.resize((size, size), _FILTERS[interpolation], reducing_gap=None)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def normalise(batch_uint8, mean, std):
    """uint8 [B, 3, H, W] tensor -> float32 normalised tensor (on the batch's device)."""
    import torch

    x = batch_uint8.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)
