"""Peak memory of `vdna verify`, `pull`, `import` and `add` on hostile files (issue 14, rows 2 and 3).

Each hostile entry file (tests/hostile_files.py: datasets declaring huge shapes that were never
written, a metadata that claims a 500,000-neuron layer, a zero bomb, absurd numbers) is
  * placed in a registry next to one good entry, then `vdna verify --json` runs;
  * published on a loopback fake Hub (tests/hub_server.py), then `vdna pull` runs;
hostile upstream pairs are given to `vdna import`, and folders holding a hostile image
(a planar float TIFF, a PNG bomb, a huge grey TIFF) to `vdna add --workers 2`. Every command runs in its own process;
the peak resident memory (ru_maxrss of that process) and the outcome are reported per case.
The target: every command under 1 GB, and an error line (never a crash) for every hostile file.

`--baseline DIR` runs the same commands with the code of another checkout first (e.g. the
main branch), under an address-space limit (--limit-gb) so that a runaway allocation fails
instead of exhausting the machine.

Run:  python bench/hostile_memory.py [--baseline /work/main] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import hostile_files  # noqa: E402
from hub_server import FakeHub  # noqa: E402

GOOD_LIMIT_MB = 1024

WRAPPER = r"""
import json, os, resource, subprocess, sys
limit = int(os.environ.pop("BENCH_LIMIT_AS", "0"))
def cap():
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
p = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=cap, timeout=900)
print(json.dumps({"rc": p.returncode, "stdout": p.stdout[-4000:], "stderr": p.stderr[-4000:],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_vdna(code_root: Path, args: list, env: dict, cwd: Path, limit_gb: float) -> dict:
    e = dict(os.environ, PYTHONPATH=str(code_root), NO_COLOR="1", VDNA_WORKERS="0", HF_HUB_DISABLE_XET="1",
             HF_HUB_DISABLE_PROGRESS_BARS="1", BENCH_LIMIT_AS=str(int(limit_gb * (1 << 30))), **env)  # 0: no limit
    e.pop("VDNA_DEBUG", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "vdnacli", *map(str, args)],
                       capture_output=True, text=True, env=e, cwd=cwd)
    out = json.loads(p.stdout)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def outcome(r: dict) -> str:
    if r["rc"] < 0 or r["rc"] > 128:
        return f"crashed (signal {-r['rc'] if r['rc'] < 0 else r['rc'] - 128})"
    lines = [l for l in r["stderr"].splitlines() if l.strip()]
    if "Traceback" in r["stderr"] or any("internal error" in l for l in lines):
        last = next((l for l in reversed(lines) if "Error" in l), lines[-1] if lines else "")
        return f"internal error: {last[:110]}"
    if r["rc"] == 0:
        try:
            data = json.loads(r["stdout"])
        except ValueError:
            return "ok"
        if isinstance(data, dict) and "damaged" in data:
            return f"verify: {len(data['damaged'])} damaged"
        return "ok (accepted!)"
    if r["rc"] == 1 and '"damaged"' in r["stdout"]:
        data = json.loads(r["stdout"])
        first = next(iter(data["damaged"].values()))[0]
        return f"reported damaged: {first[:110]}"
    if r["rc"] == 1 and lines:
        return lines[-1][:130]
    return f"exit {r['rc']}"


def hostile_pairs(work: Path) -> dict[str, tuple[str, Path]]:
    """Upstream pairs for `vdna import`: absurd numbers, a huge declared .npy, a zero bomb member."""
    from numpy.lib import format as npy

    base = {"type": "histogram", "name": "h", "neurons_list": {"l1": 6, "l2": 4}, "num_images": 4,
            "distribution": {"hist_nb_bins": 16}, "feature_extractor_name": "mystery-net", "vdna_version": "0.1.1"}
    out = {}

    def pair(stem: str, meta: dict, members: dict[str, bytes | tuple[bytes, int]], what: str):
        """`members`: name -> bytes, or (header, n) for a header followed by n zero bytes (streamed)."""
        folder = work / "pairs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(meta))
        with zipfile.ZipFile(folder / f"{stem}.npz", "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                if isinstance(data, bytes):
                    z.writestr(name, data)
                    continue
                header, n = data
                with z.open(name, "w", force_zip64=True) as f:
                    f.write(header)
                    block = bytes(1 << 24)
                    for start in range(0, n, len(block)):
                        f.write(block[: min(len(block), n - start)])
        out[stem] = (what, folder / stem)

    def arr(a) -> bytes:
        b = io.BytesIO()
        np.save(b, a)
        return b.getvalue()

    good = {f"{l}.npy": arr(np.full((n, 16), 1, dtype=np.int64)) for l, n in base["neurons_list"].items()}
    pair("num-images-10e400", dict(base, num_images=10**400), good, "num_images = 10**400 in the JSON")
    hdr = io.BytesIO()
    npy.write_array_header_1_0(hdr, {"descr": "<i8", "fortran_order": False, "shape": (10**6, 10**6)})
    pair("npy-declares-8TB", base, {**good, "l1.npy": hdr.getvalue()}, "an .npy header declaring 10^6 x 10^6 int64")
    zeros = io.BytesIO()
    npy.write_array_header_1_0(zeros, {"descr": "<i8", "fortran_order": False, "shape": (6, 16 * 1024 * 1024)})
    pair("npz-member-805MB-of-zeros", base, {**good, "l1.npy": (zeros.getvalue(), 6 * 16 * 1024 * 1024 * 8)},
         "an .npz member of 805 MB of zeros (deflated to ~0.8 MB), its header consistent")
    wide = dict(base, neurons_list={"l1": 8192, "l2": 4}, distribution={"hist_nb_bins": 16384})
    big = io.BytesIO()
    npy.write_array_header_1_0(big, {"descr": "<i8", "fortran_order": False, "shape": (8192, 16384)})
    pair("npz-1GiB-matching-its-json", wide,
         {"l1.npy": (big.getvalue(), 8192 * 16384 * 8), "l2.npy": arr(np.ones((4, 16384), dtype=np.int64))},
         "JSON of 8192 neurons x 16384 bins, its .npz member 1 GiB of zeros (deflated to ~1 MB)")
    return out


def hostile_image_folders(work: Path) -> dict[str, tuple[str, Path]]:
    """Folders of two real images and one hostile image, for `vdna add` (issue 14 row 3)."""
    import struct
    import zlib

    import tifffile

    from vdnacli import samples

    demo = samples.write_demo_sets(work / "samples", per_half=2)
    good = sorted(next(iter(demo.values())).iterdir())[:2]
    out = {}

    def folder(stem: str, name: str | None, data: bytes, what: str):
        d = work / "images" / stem
        d.mkdir(parents=True, exist_ok=True)
        for p in good:
            shutil.copy(p, d / p.name)
        if name:
            (d / name).write_bytes(data)
        out[stem] = (what, d)

    folder("control-two-good-images", None, b"", "the two good images alone: what `vdna add` costs anyway")

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as w:
        w.write(np.zeros((3, 9500, 9500), np.float32), photometric="rgb", planarconfig="separate",
                compression="zlib", rowsperstrip=9500)
    folder("planar-float-tiff-1GB", "planar.tif", buf.getvalue(), "a planar float TIFF, 3 x 9500 x 9500 (1 GB of samples)")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))
    folder("png-declaring-10-gigapixels", "bomb.png", png, "a PNG declaring 100,000 x 100,000 pixels")
    tall = io.BytesIO()
    with tifffile.TiffWriter(tall) as w:
        w.write(np.zeros((60_000, 8000), np.uint8), compression="zlib", rowsperstrip=60_000)
    folder("tiff-60000x8000-gray", "tall.tif", tall.getvalue(), "a grey TIFF of 60,000 x 8,000 (480 MB of pixels)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, default=None, help="Also run the code of this checkout (e.g. /work/main).")
    ap.add_argument("--limit-gb", type=float, default=8.0, help="Address-space limit per command (default 8).")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--commands", default="verify,pull,import,add", help="Which commands to run (comma-separated).")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vdna-hostile-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    wanted = set(args.commands.split(","))
    cases = hostile_files.cases(small=False) if wanted & {"verify", "pull"} else {}
    if cases:  # the worst an entry file may cost: just under the per-file floor (not refused by the ratio rule)
        cases["zero-bomb-under-the-floor"] = (
            "metadata of 2,048 neurons x 12,000 bins; uint8 zeros, gzip 9 (24.6 M values: 197 MB at 8 bytes, "
            "just under the 192 MiB floor)",
            lambda p, n: hostile_files.zero_bomb(p, n, hostile_files.dna_meta([["x", 2048]], bins=12_000),
                                                 {"hist/x": (2048, 12_000)}))
    files = {}
    for case, (what, build) in cases.items():
        files[case] = work / "files" / f"{case}.h5"
        files[case].parent.mkdir(parents=True, exist_ok=True)
        build(files[case], case)
    pairs = hostile_pairs(work) if "import" in wanted else {}
    image_folders = hostile_image_folders(work) if "add" in wanted else {}
    hub = FakeHub().start()
    for case, path in files.items():
        hub.add_repo(f"evil/{case}", {f"dnas/{case}.h5": path.read_bytes()})
    codes = [("this branch", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    rows = []
    try:
        for label, code in reversed(codes):
            for case, path in files.items():
                reg = work / label.replace(" ", "-") / case
                shutil.rmtree(reg, ignore_errors=True)
                (reg / "entries").mkdir(parents=True)
                (reg / "registry.json").write_text('{"format": "vdna-registry", "version": 1}\n')
                shutil.copy(path, reg / "entries" / f"{case}.h5")
                env = {"VDNA_REGISTRY": str(reg), "HF_HOME": str(work / "hf" / label.replace(" ", "-") / case),
                       "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
                for cmd, cli in (("verify", ["verify", "--json"]), ("pull", ["pull", f"evil/{case}", "--registry",
                                                                             reg.with_name(case + "-pulled")])):
                    if cmd not in wanted:
                        continue
                    r = run_vdna(code, cli, env, work, args.limit_gb)
                    rows.append({"code": label, "command": cmd, "case": case, "file_bytes": path.stat().st_size,
                                 "peak_rss_mb": round(r["maxrss_mb"], 1), "seconds": r["seconds"],
                                 "outcome": outcome(r)})
                    print(f"{label:11s} {cmd:6s} {case:36s} {rows[-1]['peak_rss_mb']:8.1f} MB  {rows[-1]['outcome']}",
                          flush=True)
            for case, (what, stem) in pairs.items():
                if "import" not in wanted:
                    break
                reg = work / label.replace(" ", "-") / f"import-{case}"
                r = run_vdna(code, ["import", stem, "--name", "x", "--registry", reg], {}, work, args.limit_gb)
                rows.append({"code": label, "command": "import", "case": case,
                             "file_bytes": stem.with_suffix(".npz").stat().st_size,
                             "peak_rss_mb": round(r["maxrss_mb"], 1), "seconds": r["seconds"], "outcome": outcome(r)})
                print(f"{label:11s} import {case:36s} {rows[-1]['peak_rss_mb']:8.1f} MB  {rows[-1]['outcome']}",
                      flush=True)
            for case, (what, folder) in image_folders.items():  # decode workers: their peak counts too
                if "add" not in wanted:
                    break
                reg = work / label.replace(" ", "-") / f"add-{case}"
                # no address-space limit here: torch's thread pools reserve more address space than any
                # limit that would still protect the machine, and abort (SIGABRT) under one
                r = run_vdna(code, ["add", "x", folder, "--workers", "2", "--json", "--registry", reg], {}, work, 0)
                out = outcome(r)
                if r["rc"] == 0:
                    failed = json.loads(r["stdout"]).get("failed") or []
                    out = f"stored {json.loads(r['stdout'])['num_images']} images; skipped: " + "; ".join(
                        f"{f['image']}: {f['reason'][:90]}" for f in failed)
                rows.append({"code": label, "command": "add", "case": case,
                             "file_bytes": sum(p.stat().st_size for p in folder.iterdir()),
                             "peak_rss_mb": round(r["maxrss_mb"], 1), "seconds": r["seconds"], "outcome": out})
                print(f"{label:11s} add    {case:36s} {rows[-1]['peak_rss_mb']:8.1f} MB  {rows[-1]['outcome']}",
                      flush=True)
    finally:
        hub.stop()
    mine = [r for r in rows if r["code"] == "this branch"]
    worst = max(r["peak_rss_mb"] for r in mine)
    bad = [r for r in mine if r["peak_rss_mb"] > GOOD_LIMIT_MB or r["outcome"].startswith(("crashed", "internal",
                                                                                                "ok (accepted"))]
    print(f"\nthis branch: worst peak {worst:.0f} MB over {len(mine)} runs; "
          f"{len(bad)} over {GOOD_LIMIT_MB} MB or not refused cleanly")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": os.uname().nodename, "cpus": os.cpu_count()},
                                        indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
