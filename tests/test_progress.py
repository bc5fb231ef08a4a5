"""Progress on stderr: the loading phase, and plain lines when stderr is not a terminal."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys

from vdnacli.cli.progress import PlainProgress, interval, plain_line

LINE = re.compile(r"^DNA x: (\d+)/8 images, [\d.]+ img/s(, ETA \d+ s)?$")


def test_plain_lines_say_count_rate_and_eta():
    assert plain_line("DNA x", 50, 200, 10.0) == "DNA x: 50/200 images, 5.0 img/s, ETA 30 s"
    assert plain_line("DNA x", 50, None, 10.0) == "DNA x: 50 images, 5.0 img/s"
    assert plain_line("m", 10, 40, 5.0, unit="pairs") == "m: 10/40 pairs, 2.0 pairs/s, ETA 15 s"
    assert plain_line("pull r", 3 << 20, 6 << 20, 1.0, unit="bytes") == "pull r: 3.0/6.0 MiB, 3.0 MiB/s, ETA 1 s"
    out = io.StringIO()
    p = PlainProgress("DNA x", stream=out, every=3600)
    p.phase("loading efficientnet-lite0…")  # a phase shorter than the interval (or one that fails) says nothing
    p(0, 100)  # counting starts: no line yet
    p(10, 100)  # within the interval: none either
    assert out.getvalue() == ""
    p.every = 0
    p(20, 100)
    assert out.getvalue().splitlines()[-1].startswith("DNA x: 20/100 images, ")
    out = io.StringIO()
    p = PlainProgress("DNA y", stream=out, every=0.01)
    p.phase("loading efficientnet-lite0…")
    import time

    time.sleep(0.5)
    p(0, 100)
    assert out.getvalue() == "DNA y: loading efficientnet-lite0…\n"


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("VDNA_PROGRESS_INTERVAL", "0.5")
    assert interval() == 0.5
    monkeypatch.setenv("VDNA_PROGRESS_INTERVAL", "soon")
    assert interval() == 10.0


def test_add_outside_a_terminal_prints_plain_progress_lines(sample_dirs, tmp_path):
    env = dict(os.environ, VDNA_REGISTRY=str(tmp_path / "reg"), HF_HUB_OFFLINE="1", VDNA_WORKERS="0", NO_COLOR="1",
               VDNA_PROGRESS_INTERVAL="0")
    env.pop("VDNA_DEBUG", None)
    cmd = [sys.executable, "-m", "vdnacli", "add", "x", str(sample_dirs["faces-a"]), "--limit", "8", "--batch-size", "4"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # stderr is a pipe
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0] == "DNA x: loading efficientnet-lite0…"
    counted = [LINE.match(l) for l in lines[1:] if l.startswith("DNA x: ")]
    assert counted and all(counted), lines
    assert [int(m.group(1)) for m in counted] == [4, 8]
    assert "\x1b" not in p.stderr and "\r" not in p.stderr  # no terminal control codes in a log
    # --quiet silences it: test_oneoff's nearest --quiet
