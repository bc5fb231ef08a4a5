"""JPEG decoding, crop and resize as tensors on the extractor's device (`--decode torch`).

On a GPU, PIL workers are the bottleneck of `vdna add` (decode + antialiased resize of
multi-megapixel JPEGs); nvjpeg decodes a batch on the GPU and the resize runs there too.
The geometry is the PIL path's (vdnacli.preprocess): EXIF orientation, centre square crop
(or squash), Pillow's antialiased two-pass bicubic/bilinear resize, uint8. Only plain JPEGs
are taken (greyscale or YCbCr, complete, within MAX_PIXELS); `probe_jpeg` says which from
the header alone, and everything else (PNG, CMYK, a JPEG torchvision refuses) goes through
the PIL path, so one odd file never ends the run.
"""
from __future__ import annotations

import io
import warnings
from typing import NamedTuple, Sequence

from PIL import Image

from vdnacli.errors import ConfigError
from vdnacli.preprocess import MAX_PIXELS

DECODERS = ("pil", "torch")
_INTERPOLATIONS = ("bicubic", "bilinear")  # what torch.nn.functional.interpolate antialiases
_ORIENTATION_TAG = 0x0112
_DEPRECATED = ".*decoding and encoding capabilities of TorchVision are deprecated"


class JpegHeader(NamedTuple):
    width: int  # as stored, before the EXIF orientation
    height: int
    orientation: int  # EXIF orientation 1..8 (1: as stored)


class EncodedJpeg(NamedTuple):
    """A JPEG on its way from a loader worker to the device: its bytes and EXIF orientation.

    Plain bytes, pickled through the worker queue like the PIL path's arrays: one shared-
    memory tensor per image would hold one file descriptor each, thousands in flight.
    """

    data: bytes
    orientation: int


def check_decoder(decoder: str, interpolation: str = "bicubic") -> str:
    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder '{decoder}'; choose from {', '.join(DECODERS)}")
    if decoder == "torch" and interpolation not in _INTERPOLATIONS:
        raise ConfigError(f"--decode torch resizes with bicubic or bilinear only; this extractor uses "
                          f"{interpolation}: use --decode pil")
    return decoder


def check_available(device) -> None:
    """Decode a tiny JPEG on `device` once: a torchvision without its image extension or
    without nvjpeg is one clear error up front, not a run that silently falls back to PIL."""
    import torch

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, "JPEG")
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATED)
            decode_jpeg(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), mode=ImageReadMode.RGB,
                        device=device)
    except (ImportError, RuntimeError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ConfigError(f"--decode torch: torchvision cannot decode JPEGs on {device} ({msg}); use --decode pil")


def recorded(device, interpolation: str) -> dict:
    """The preprocessing keys that say a DNA's JPEGs went through this module (merged into
    ExtractorSpec.preprocessing; DNAs of the PIL path keep their dict unchanged)."""
    kind = "nvjpeg" if getattr(device, "type", str(device)).startswith("cuda") else "cpu"
    return {"decoder": f"torchvision-{kind}", "resize": f"torch-{interpolation}-antialias"}


def probe_jpeg(data: bytes) -> JpegHeader | None:
    """The header of a JPEG this module decodes, or None for anything the PIL path must take.

    Reads the markers only (Pillow's parser, as the PIL path), no pixel: the declared size
    is checked against MAX_PIXELS here, so a decompression bomb never reaches the decoder.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=("JPEG",))  # MPO opens too: its first frame
            w, h = img.size
            mode = img.mode
    except Exception:  # not a JPEG, damaged header, bomb: the PIL path reports it as usual
        return None
    # CMYK/YCCK: torchvision converts them on the CPU but nvjpeg may not; 12-bit JPEGs: never here
    if mode not in ("L", "RGB") or w < 1 or h < 1 or w * h > MAX_PIXELS:
        return None
    # No end-of-image marker: truncated (PIL refuses it; a GPU decoder might fill it with grey)
    # or followed by trailing data; PIL decides either way.
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    try:
        orientation = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # damaged EXIF: the PIL path keeps such photos as stored too
        orientation = 1
    return JpegHeader(w, h, orientation if 1 <= orientation <= 8 else 1)


def _decode(datas: Sequence[bytes], device) -> list:
    """uint8 [3, H, W] on `device` per JPEG, None where torchvision fails. Batched on CUDA
    (one failure fails the whole call, so then one by one); one by one on the CPU."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED)
        if device.type == "cuda" and len(tensors) > 1:
            try:
                return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                pass
        out = []
        for t in tensors:
            try:
                out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:  # torchvision raises RuntimeError for every damaged stream
                out.append(None)
        return out


def upright(img, orientation: int):
    """Apply an EXIF orientation to a [C, H, W] tensor, as PIL's ImageOps.exif_transpose."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-2, -1)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-2, -1)
    if orientation == 6:
        return img.transpose(-2, -1).flip(-1)
    if orientation == 7:
        return img.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return img.transpose(-2, -1).flip(-2)
    return img


def square(img, crop: str):
    """Centre square crop with the PIL path's integer offsets; "none" keeps the whole image."""
    if crop == "none":
        return img
    if crop != "center":
        raise ValueError(f"unknown crop {crop!r}")
    h, w = img.shape[-2:]
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img[..., top:top + s, left:left + s]


def pil_pass_order(height: int, width: int, size: int) -> tuple[str, str]:
    """The order of Pillow's two resampling passes for a resize to size x size.

    Pillow 13 runs the vertical pass first when the height shrinks by more than twice what
    the width shrinks (h - S > 2 * max(w - S, 0)), else the horizontal one; measured, not
    documented: 0 exceptions over 539 random shapes (S = 96, 224, 299; bicubic and bilinear;
    Pillow 13.0.0; the Pillow sources of earlier releases always go horizontal first). A square
    image (the centre crop) always goes horizontal first. tests/test_decode_torch.py notices
    a Pillow that changes the rule (rotated, squashed photos).
    """
    vertical_first = height > size and height - size > 2 * max(width - size, 0)
    return ("vertical", "horizontal") if vertical_first else ("horizontal", "vertical")


def resize(images: list, size: int, interpolation: str = "bicubic") -> list:
    """uint8 [3, h, w] tensors -> uint8 [3, size, size] tensors on their device.

    PIL's algorithm as two one-axis antialiased float32 interpolations, in Pillow's order,
    each rounded half up and clamped to uint8 values as Pillow stores its intermediate image.
    (One 2-D interpolation skips that rounding and differs from PIL by up to 20 grey levels
    where bicubic overshoots, e.g. upscaled 8x8 digits.) Images of equal shape are resized
    together.
    """
    import torch
    import torch.nn.functional as F

    out: list = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for k, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(k)
    for (_, h, w), ks in groups.items():
        x = torch.stack([images[k] for k in ks]).to(torch.float32).contiguous()
        for axis in pil_pass_order(h, w, size):
            target = (x.shape[-2], size) if axis == "horizontal" else (size, x.shape[-1])
            x = F.interpolate(x, size=target, mode=interpolation, antialias=True, align_corners=False)
            x = x.add_(0.5).floor_().clamp_(0, 255)
        y = x.to(torch.uint8)
        for j, k in enumerate(ks):
            out[k] = y[j]
    return out


def decode_resize(jpegs: Sequence[EncodedJpeg], device, size: int, crop: str = "center",
                  interpolation: str = "bicubic") -> list:
    """Encoded JPEGs -> uint8 [3, size, size] tensors on `device`, None for each JPEG that
    torchvision cannot decode (the caller sends those through the PIL path)."""
    import torch

    device = torch.device(device)
    if not jpegs:
        return []
    decoded = _decode([j.data for j in jpegs], device)
    ok = [k for k, img in enumerate(decoded) if img is not None]
    shaped = [square(upright(decoded[k], jpegs[k].orientation), crop) for k in ok]
    out: list = [None] * len(jpegs)
    for k, img in zip(ok, resize(shaped, size, interpolation)):
        out[k] = img
    return out
