"""Archives: zip (random access, one open archive per worker) and tar / webdataset shards
(streamed, never extracted; .tar, .tar.gz, .tgz; local files, brace patterns, globs, URLs).

Tar shards are read member by member: image members are picked by extension (webdataset's
`000123.jpg` next to `000123.json` and `000123.cls`), other members are passed over. A
local uncompressed shard seeks past the members a worker does not take; a compressed or
remote one is read through. A shard that cannot be opened, is not a tar, or ends early is
reported as one failed item (the images read before the damage still count).
"""
from __future__ import annotations

import errno
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vdnacli.errors import SourceError, SourceNotFoundError
from vdnacli.sources.base import (HANDLES, MAX_FILE_BYTES, Item, SourceOptions, Unit, Want, check_regular_file,
                                  is_image, is_url, printable, public_url)


# -- zip --------------------------------------------------------------------------------------------
def _open_zip(path: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


def read_zip_member(path: str, member: str) -> bytes:
    """One member's bytes through this process's open handle of the archive."""
    try:
        z = HANDLES.get(path, lambda: _open_zip(path))
        info = z.getinfo(member)
        if info.file_size > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"member too large ({info.file_size >> 20} MiB uncompressed)")
        return z.read(info)
    except OSError:
        raise
    except (zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError, EOFError, ValueError,
            zlib.error) as e:  # damaged, encrypted or oddly compressed member
        raise OSError(errno.EIO, f"cannot read from zip: {e}") from None


def zip_refs(path: Path) -> list:
    from vdnacli.sources.folder import ImageRef

    try:
        with zipfile.ZipFile(path) as z:
            members = [i.filename for i in z.infolist() if not i.is_dir() and is_image(i.filename)]
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"cannot open zip archive {path.name}: {e}") from None
    return [ImageRef(name=printable(m), path=str(path), member=m) for m in sorted(members)]


# -- tar ----------------------------------------------------------------------------------------------
class _TarInfo(tarfile.TarInfo):
    """Records on the TarFile whether the archive ended without its end-of-archive blocks
    (tarfile itself takes a missing header after the first for a normal end)."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError):
            tf.vdna_truncated = True
            raise


_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)


@dataclass(frozen=True)
class TarShard(Unit):
    """One tar shard: a local path or a URL (read through vdnacli.sources.url)."""

    name: str  # reported: relative to the pattern's folder, or the public URL
    location: object  # a local path, a URL, or a vdnacli.sources.hf.HubFile
    options: SourceOptions = SourceOptions()

    def _open(self):
        loc = self.location if isinstance(self.location, str) else self.location.download()  # a Hub file
        if is_url(loc):
            from vdnacli.sources.url import open_stream

            raw = open_stream(loc, self.options)
        else:
            check_regular_file(loc)
            if loc.lower().endswith(".tar"):  # seekable: members not taken are skipped, not read
                return None, tarfile.open(loc, mode="r:", tarinfo=_TarInfo)
            raw = open(loc, "rb")
        try:
            return raw, tarfile.open(fileobj=raw, mode="r|*", tarinfo=_TarInfo)
        except BaseException:
            raw.close()
            raise

    def items(self, want: Want | None, report: bool = True) -> Iterator[Item]:
        try:
            raw, tf = self._open()
        except _TAR_ERRORS as e:
            if report:
                yield Item(self.name, error=f"cannot open tar shard: {_reason(e)}")
            return
        pos = 0
        try:
            while True:
                try:
                    m = tf.next()
                except _TAR_ERRORS as e:
                    if report:
                        yield Item(self.name, error=f"damaged tar shard after {pos} image(s): {_reason(e)}")
                    return
                if m is None:
                    break
                tf.members = []  # tarfile keeps every header it read: memory would grow with the shard
                if not (m.isfile() and is_image(m.name)):
                    continue
                p, pos = pos, pos + 1
                if want is not None and not want(p):
                    continue
                name = f"{self.name}/{printable(m.name)}"
                if m.size > MAX_FILE_BYTES:
                    yield Item(name, error=f"member too large ({m.size >> 20} MiB)")
                    continue
                try:
                    data = _member_bytes(tf, m, seekable=raw is None)
                except _TAR_ERRORS as e:
                    yield Item(name, error=f"unreadable: tar shard ends inside this member ({_reason(e)})")
                    return
                yield Item(name, data)
            if getattr(tf, "vdna_truncated", False) and report:
                yield Item(self.name, error=f"truncated tar shard (no end-of-archive marker) after {pos} image(s)")
        finally:
            tf.close()
            if raw is not None:
                raw.close()


def _member_bytes(tf: tarfile.TarFile, m: tarfile.TarInfo, seekable: bool) -> bytes:
    """A member's bytes: one positioned read from a local uncompressed shard (tarfile's
    extractfile builds a buffered reader per member: measurable at thousands of images/s)."""
    if seekable and not m.issparse():
        data = os.pread(tf.fileobj.fileno(), m.size, m.offset_data)
        if len(data) != m.size:
            raise tarfile.ReadError("unexpected end of data")
        return data
    f = tf.extractfile(m)
    return f.read() if f is not None else b""


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0][:200]


def tar_shards(spec: str, options: SourceOptions) -> tuple[list[TarShard], list[str], dict]:
    """The shards a tar source names (a file, a brace pattern or glob, or URLs), the names
    that do not exist (reported, not fatal), and the origin a DNA records."""
    from vdnacli.sources.patterns import expand_braces, resolve_local

    if is_url(spec):
        urls = expand_braces(spec)
        shards = [TarShard(public_url(u), u, options) for u in urls]
        return shards, [], {"kind": "tar", "pattern": public_url(spec), "shards": _names(shards),
                            "shards_total": len(shards)}
    found, missing = resolve_local(spec)
    if not found:
        raise SourceNotFoundError(f"no tar shard matches {os.path.basename(spec) or spec}"
                          + (f" ({len(missing)} name(s) expanded, none exists, e.g. {missing[0]})" if missing else ""))
    shards = [TarShard(name, path, options) for name, path in found]
    return shards, missing, {"kind": "tar", "pattern": pattern_name(spec), "shards": _names(shards),
                             "shards_total": len(shards)}


def pattern_name(spec: str) -> str:
    """A local path or pattern as a DNA may record it: relative to its fixed folder."""
    from vdnacli.sources.patterns import fixed_root, is_pattern

    if not is_pattern(spec):
        return printable(os.path.basename(spec.rstrip(os.sep)) or spec)
    root = fixed_root(spec)
    return printable(spec[len(root):].lstrip(os.sep) if root else spec)


def _names(shards: list, cap: int = 1000) -> list[str]:
    return [s.name for s in shards[:cap]]
