"""`-` as SOURCE: one path or URL per line on standard input (paths relative to the current
folder; blank lines and lines starting with # are skipped)."""
from __future__ import annotations

import sys
from pathlib import Path

from vdnacli.errors import SourceError
from vdnacli.sources.base import Source, SourceOptions
from vdnacli.sources.folder import line_refs


def stdin_source(options: SourceOptions, stream=None) -> Source:
    stream = stream if stream is not None else sys.stdin.buffer
    data = stream.read()
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    refs = line_refs(text.splitlines(), Path.cwd(), options)
    if not refs:
        raise SourceError("no path or URL on standard input (one per line)")
    return Source("stdin", {"kind": "stdin"}, refs=refs, label="standard input")
