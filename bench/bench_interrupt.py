"""How long does `vdna add` take to exit after Ctrl-C (SIGINT), and what does it leave? (issue 16)

  python bench/bench_interrupt.py                 # 300 generated 64x64 PNGs, workers 0 and 2, 3 delays
  python bench/bench_interrupt.py --images 500 --repeats 3

For each worker count and delay after start (while the network loads, while images are
decoded and counted), one `python -m vdnacli add` in a scratch registry gets SIGINT; reported:
the exit status, seconds from the signal to exit, the stderr line, whether an entry or a
worker process was left behind.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")]
    except OSError:
        return False
    return bool(state) and "Z" not in state[0].split()[1]


def one(folder: Path, registry: Path, workers: int, delay: float) -> dict:
    env = dict(os.environ, VDNA_REGISTRY=str(registry), NO_COLOR="1", HF_HUB_OFFLINE="1", VDNA_WORKERS=str(workers))
    p = subprocess.Popen([sys.executable, "-m", "vdnacli", "add", "x", str(folder)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    kids = _children(p.pid)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    seconds = time.monotonic() - t0
    time.sleep(0.5)
    return {"workers": workers, "delay": delay, "rc": p.returncode, "seconds": seconds, "stderr": err.strip()[-80:],
            "entry_left": (registry / "entries" / "x.h5").exists(), "workers_left": sum(map(_alive, kids)),
            "workers_seen": len(kids)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--delays", default="2,8,14")
    args = ap.parse_args()
    import numpy as np
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="vdna-interrupt-"))
    folder = tmp / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.images):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("| workers | SIGINT after (s) | exit | seconds to exit | workers seen / left | entry left | stderr |")
    print("|---:|---:|---:|---:|---:|---|---|")
    n = 0
    for workers in (0, 2):
        for delay in map(float, args.delays.split(",")):
            for _ in range(args.repeats):
                n += 1
                r = one(folder, tmp / f"reg{n}", workers, delay)
                print(f"| {r['workers']} | {r['delay']:g} | {r['rc']} | {r['seconds']:.2f} | "
                      f"{r['workers_seen']} / {r['workers_left']} | {r['entry_left']} | {r['stderr']} |")


if __name__ == "__main__":
    main()
