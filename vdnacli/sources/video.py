"""Videos (.mp4, .mkv, .avi, .mov, .webm, .m4v): sampled frames as images, through PyAV
(the `video` extra; torchvision 0.29 no longer reads video).

--every N takes frames 0, N, 2N, ... (in presentation order); --fps F takes the first frame
at or after each 1/F seconds from the first frame's time; neither: every frame. A frame is
decoded to RGB (FFmpeg's conversion) and handed on as a binary PPM, which the pipeline
decodes losslessly like any image file; its name is `<video>#frame=<i>` and its identity
(the `--append` digest) is the video file's sha256 and the frame index, so appending the
same video again adds nothing, whatever the frames look like.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator

from vdnacli.errors import SourceError
from vdnacli.sources.base import Item, SourceOptions, Unit, Want, check_regular_file


def need_av():
    try:
        import av
    except ImportError:
        raise SourceError("video sources need PyAV: pip install 'vdnacli[video]'") from None
    return av


def ppm(rgb) -> bytes:
    """A uint8 [H, W, 3] array as binary PPM bytes (lossless, no compression)."""
    h, w = rgb.shape[:2]
    return b"P6\n%d %d\n255\n" % (w, h) + rgb.tobytes()


def file_sha256(path: str) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


class _Sampler:
    def __init__(self, every: int | None, fps: float | None):
        self.every, self.fps = every, fps
        self.t0 = None
        self.next = 0.0

    def take(self, index: int, t: float | None, rate: float) -> bool:
        if self.fps is None:
            return index % (self.every or 1) == 0
        if t is None:
            t = index / rate
        if self.t0 is None:
            self.t0 = t
        t -= self.t0
        if t + 1e-9 < self.next:
            return False
        self.next = (math.floor(t * self.fps + 1e-9) + 1) / self.fps
        return True


@dataclass(frozen=True)
class VideoFile(Unit):
    name: str
    path: str
    every: int | None = None
    fps: float | None = None

    def items(self, want: Want | None, report: bool = True) -> Iterator[Item]:
        av = need_av()
        errors = (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError, UnicodeDecodeError)
        try:
            check_regular_file(self.path)
            sha = file_sha256(self.path)
            container = av.open(self.path)
        except errors as e:
            if report:
                yield Item(self.name, error=f"cannot open video: {_reason(e)}")
            return
        try:
            if not container.streams.video:
                if report:
                    yield Item(self.name, error="cannot open video: no video stream")
                return
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            sampler = _Sampler(self.every, self.fps)
            index = pos = 0
            try:
                for frame in container.decode(stream):
                    i, index = index, index + 1
                    if not sampler.take(i, frame.time, rate):
                        continue
                    p, pos = pos, pos + 1
                    if want is not None and not want(p):
                        continue
                    digest = hashlib.sha256(b"vdna-video-frame\0" + sha + i.to_bytes(8, "little")).digest()[:16]
                    yield Item(f"{self.name}#frame={i}", ppm(frame.to_ndarray(format="rgb24")), digest)
            except errors as e:
                if report:
                    yield Item(self.name, error=f"damaged video after frame {index}: {_reason(e)}")
            if index == 0 and report:
                yield Item(self.name, error="cannot open video: no frame could be decoded")
        finally:
            container.close()


def _reason(e: BaseException) -> str:
    return (getattr(e, "strerror", None) or str(e) or type(e).__name__).splitlines()[0][:200]


def video_units(found: list[tuple[str, str]], options: SourceOptions) -> list[VideoFile]:
    need_av()
    return [VideoFile(name, path, options.every, options.fps) for name, path in found]
