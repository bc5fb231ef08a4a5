"""Progress on stderr: a rich bar in a terminal, one plain line every ~10 s elsewhere.

A long computation shows "loading <extractor>…" from the library's announcement
(vdnacli.pipeline.announce, once the source has been checked) until its first progress call
(the network loads and the decoding workers start: seconds to tens of seconds), then images done,
images/s and the time left. Outside a terminal (batch jobs, logs, CI) the same facts go out as plain lines, one
every VDNA_PROGRESS_INTERVAL seconds (default 10; 0 = every update), so a log shows that a
job is alive and when it should end; the loading line only once loading has lasted that long. `--quiet` and `--json` commands pass enabled=False.

The callback yielded takes (done, total) as vdnacli.pipeline.Progress does (total None when
the source cannot say: a stream), and `phase(text)` for the announcements.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

DEFAULT_INTERVAL = 10.0


def interval() -> float:
    """Seconds between plain progress lines (VDNA_PROGRESS_INTERVAL; a bad value: the default)."""
    try:
        value = float(os.environ.get("VDNA_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 else DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plain_line(label: str, done: int, total: int | None, elapsed: float, unit: str = "images") -> str:
    """`label: 1200/5000 images, 85.3 img/s, ETA 45 s` (what the plain lines say); unit "bytes"
    is shown in MiB."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if unit == "bytes":
        mib = 1 << 20
        count = f"{done / mib:.1f}/{total / mib:.1f}" if total is not None else f"{done / mib:.1f}"
        line = f"{label}: {count} MiB, {rate / mib:.1f} MiB/s"
    else:
        count = f"{done}/{total}" if total is not None else f"{done}"
        per = "img/s" if unit == "images" else f"{unit}/s"
        line = f"{label}: {count} {unit}, {rate:.1f} {per}"
    if total is not None and rate > 0 and done < total:
        line += f", ETA {_duration((total - done) / rate)}"
    return line


class PlainProgress:
    """The non-terminal reporter: a line when the first item is done, then one per interval."""

    def __init__(self, label: str, stream=None, every: float | None = None, unit: str = "images"):
        self.label, self.unit = label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = interval() if every is None else every
        self.last: float | None = None  # when the last line went out
        self.first: float | None = None  # when counting started (rates exclude the loading)
        self._timer = None

    def phase(self, text: str) -> None:
        """A phase line, once the phase has lasted one interval: a command that fails while
        loading (missing weights) still prints its error as the only line."""
        import threading

        self.close()
        self._timer = threading.Timer(self.every, self._write, [f"{self.label}: {text}"])
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop the computation
            pass

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.close()
            self.first = now
            self.last = now
            return
        if now - self.last >= self.every:
            self.last = now
            self._write(plain_line(self.label, done, total, now - self.first, self.unit))


class _Bar:
    """The terminal reporter: one rich task; its rate counts from the first (done, total) call."""

    def __init__(self, progress, label: str):
        self.p, self.label = progress, label
        self.task = progress.add_task(label, total=None, rate="-")
        self.first: float | None = None

    def phase(self, text: str) -> None:
        self.p.update(self.task, description=f"{self.label}: {text}")

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.first is None:
            self.close()
            self.first = now
            self.p.update(self.task, description=self.label)
        elapsed = now - self.first
        self.p.update(self.task, completed=done, total=total, rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-")


@contextmanager
def progress_bar(enabled: bool, label: str, unit: str = "images"):
    """Progress of a long computation on stderr: yields a (done, total) callback with a
    `phase(text)` method, or None when not enabled. unit: images, pairs or bytes."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():
        plain = PlainProgress(label, unit=unit)
        try:
            yield plain
        finally:
            plain.close()
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    from vdnacli.cli.output import Output

    per = "img/s" if unit == "images" else f"{unit}/s"
    if unit == "bytes":
        cols = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn()]
    else:
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} " + per), TimeRemainingColumn()]
    with Progress(*cols, transient=True, console=Output().err) as p:
        yield _Bar(p, label)
