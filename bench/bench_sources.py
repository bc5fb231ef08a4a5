"""The same images in different containers: `vdna add` throughput and peak memory, side by side.

One run writes N real sample images (photo crops, JPEG) as a folder, as tar shards (2 and 20),
as one parquet file of image structs (row groups of 100) and as a zip, then:

  1. read + decode + resize only (the DataLoader's dataset, efficientnet-lite0's default settings,
     no network): images/s per container,
     in interleaved rounds (median);
  2. the zip's per-image cost, re-opening the archive per image (before) vs one open archive;
  3. `vdna add` (vdnacli.build.add, efficientnet-lite0, CPU) of each, each in its own process,
     in interleaved rounds (the order rotates): images/s (the pipeline's own clock), images per
     CPU-second of the add (main process + decode workers: on a shared machine, less sensitive to
     other load than the wall clock), and the peak RSS of the main process and of its largest
     decode worker; the DNAs must be identical (distance 0).

Usage: python bench/bench_sources.py [--images 2000] [--read-rounds 3] [--rounds 1] [--workers 2]
                                    [--device cpu] [--out results.md]      (--rounds 0: steps 1-2 only)
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
import numpy as np
from vdnacli.build import AddRequest, add
from vdnacli.catalog import Catalog
source, reg, workers, batch, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cat = Catalog(reg)
def cpu():
    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in ru)
import torch  # imported before the clocks start, as in a warm process
t, c = time.perf_counter(), cpu()
dna, report = add(cat, AddRequest(name="x", source=source, workers=workers, batch_size=batch, device=device,
                                  offline=True, replace=True))
seconds = time.perf_counter() - t
hist = np.concatenate([dna.hist[l].ravel() for l in sorted(dna.hist)])
import hashlib
print(json.dumps({"images": report.images, "failed": len(report.failed), "seconds": seconds,
                  "cpu_seconds": cpu() - c,
                  "pipeline_seconds": report.seconds,
                  "main_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "hist_sha256": hashlib.sha256(hist.tobytes()).hexdigest()}))
"""


def make_images(n: int, folder: Path) -> list[Path]:
    from PIL import Image

    from vdnacli import samples

    folder.mkdir(parents=True)
    paths = []
    for i, a in enumerate(samples.photo_crops(n, seed=11, size=256)):
        if a.ndim == 2:
            a = np.dstack([a] * 3)
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(a[..., :3])).save(p, quality=90)
        paths.append(p)
    return paths


def write_containers(root: Path, files: list[Path]) -> dict[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {"folder": str(root / "folder")}
    for shards in (2, 20):
        d = root / f"tar{shards}"
        d.mkdir()
        per = -(-len(files) // shards)
        for k in range(shards):
            with tarfile.open(d / f"shard-{k:03d}.tar", "w") as t:
                for f in files[k * per : (k + 1) * per]:
                    t.add(f, f.name)
        out[f"tar x{shards}"] = str(d / f"shard-{{000..{shards - 1:03d}}}.tar")
    structs = [{"bytes": f.read_bytes(), "path": f.name} for f in files]
    pq.write_table(pa.table({"image": structs}), root / "images.parquet", row_group_size=100)
    out["parquet"] = str(root / "images.parquet")
    with zipfile.ZipFile(root / "images.zip", "w", zipfile.ZIP_STORED) as z:
        for f in files:
            z.write(f, f.name)
    out["zip"] = str(root / "images.zip")
    return out


def _cpu() -> float:
    import resource

    ru = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(r.ru_utime + r.ru_stime for r in ru)


def read_only(spec: str, workers: int) -> tuple[float, float]:
    """(images/s, images per CPU-second of this process and its workers) of read + decode +
    resize to 224 through the pipeline's datasets (no network)."""
    import torch

    from vdnacli.extractors import get_spec
    from vdnacli.pipeline import _ImageDataset, _collate, _stream_dataset
    from vdnacli.preprocess import ImageRecipe
    from vdnacli.settings import ComputeSettings
    from vdnacli.sources import open_source

    recipe = ImageRecipe.of(ComputeSettings.for_extractor("efficientnet-lite0"), get_spec("efficientnet-lite0"))
    src = open_source(spec)
    ds = _stream_dataset(src, recipe, "pil") if src.streamed else _ImageDataset(src.refs, recipe)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=_collate,
                                         prefetch_factor=4 if workers else None)
    t, c, n = time.perf_counter(), _cpu(), 0
    for items in loader:
        n += sum(1 for it in items if it[3] is None)
    del loader  # workers joined: their CPU time is counted
    return n / (time.perf_counter() - t), n / (_cpu() - c)


def zip_per_image(path: str, members: list[str]) -> tuple[float, float]:
    from vdnacli.sources import close_handles
    from vdnacli.sources.archive import read_zip_member

    t = time.perf_counter()
    for m in members:
        with zipfile.ZipFile(path) as z:  # what a zip source did before: one open per image
            z.read(m)
    before = (time.perf_counter() - t) / len(members)
    t = time.perf_counter()
    for m in members:
        read_zip_member(path, m)
    after = (time.perf_counter() - t) / len(members)
    close_handles()
    return before * 1e3, after * 1e3


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--read-rounds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [f"# bench_sources: {args.images} images, workers {args.workers}, batch {args.batch}",
             f"machine: {machine()}", ""]

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_images(args.images, root / "folder")
        specs = write_containers(root, files)
        say(f"## read + decode + resize only (no network), {args.read_rounds} interleaved rounds")
        say("images/s (wall clock) and images per CPU-second (this process + its decode workers; less "
            "sensitive to other load on a shared machine)")
        say("")
        say("| container | images/s per round | median | vs folder | images/CPU-s per round | median | vs folder |")
        say("|---|---|---:|---:|---|---:|---:|")
        ro: dict[str, list[tuple[float, float]]] = {k: [] for k in specs}
        order = list(specs)
        for r in range(args.read_rounds):
            for k in order[r % len(order):] + order[: r % len(order)]:
                ro[k].append(read_only(specs[k], args.workers))
        med = {k: (float(np.median([x[0] for x in v])), float(np.median([x[1] for x in v]))) for k, v in ro.items()}
        for k, v in ro.items():
            say(f"| {k} | {', '.join(f'{x[0]:.0f}' for x in v)} | {med[k][0]:.0f} | {med[k][0] / med['folder'][0]:.2f} "
                f"| {', '.join(f'{x[1]:.0f}' for x in v)} | {med[k][1]:.0f} | {med[k][1] / med['folder'][1]:.2f} |")
        before, after = zip_per_image(specs["zip"], [f.name for f in files])
        say("")
        say(f"zip, {len(files)} members: {before:.3f} ms/image re-opening the archive per image (before), "
            f"{after:.3f} ms/image with one open archive (now)")
        say("")
        if args.rounds < 1:
            return _write(args, lines)
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        runs: dict[str, list[dict]] = {k: [] for k in specs}
        order = list(specs)
        for r in range(args.rounds):
            for k in order[r % len(order):] + order[: r % len(order)]:
                p = subprocess.run([sys.executable, "-c", CHILD, specs[k], str(root / f"reg-{r}-{len(runs[k])}"),
                                    str(args.workers), str(args.batch), args.device], capture_output=True, text=True,
                               env=env)
                if p.returncode != 0:
                    raise SystemExit(f"{k}: {p.stderr[-2000:]}")
                res = json.loads(p.stdout.strip().splitlines()[-1])
                runs[k].append(res)
                print(f"round {r} {k}: {res['images'] / res['pipeline_seconds']:.1f} img/s, "
                      f"main {res['main_rss_mib']:.0f} MiB, worker {res['worker_rss_mib']:.0f} MiB", flush=True)
        say(f"## `vdna add` (efficientnet-lite0, {args.device}), {args.rounds} interleaved round(s), each in its own process")
        say("| container | images/s per round | best | best vs folder | images/CPU-s | vs folder "
            "| peak RSS main / largest worker (MiB) | DNA = folder's |")
        say("|---|---|---:|---:|---:|---:|---|---|")
        ref = runs["folder"][0]["hist_sha256"]
        best_folder = max(x["images"] / x["pipeline_seconds"] for x in runs["folder"])
        cpu_folder = max(x["images"] / x["cpu_seconds"] for x in runs["folder"])
        for k, rs in runs.items():
            rates = [x["images"] / x["pipeline_seconds"] for x in rs]
            mem = " / ".join(f"{max(x['main_rss_mib'] for x in rs):.0f}" if i == 0 else
                             f"{max(x['worker_rss_mib'] for x in rs):.0f}" for i in range(2))
            same = all(x["hist_sha256"] == ref and x["images"] == args.images and not x["failed"] for x in rs)
            cpu = max(x["images"] / x["cpu_seconds"] for x in rs)
            say(f"| {k} | {', '.join(f'{v:.1f}' for v in rates)} | {max(rates):.1f} | "
                f"{max(rates) / best_folder:.2f} | {cpu:.2f} | {cpu / cpu_folder:.2f} | {mem} | "
                f"{'yes' if same else 'NO'} |")
        m2 = max(x["main_rss_mib"] for x in runs["tar x2"])
        m20 = max(x["main_rss_mib"] for x in runs["tar x20"])
        w2 = max(x["worker_rss_mib"] for x in runs["tar x2"])
        w20 = max(x["worker_rss_mib"] for x in runs["tar x20"])
        say("")
        say(f"peak memory, 20 shards vs 2 shards: main {m20 / m2:.3f}x, largest worker {w20 / w2:.3f}x")
    _write(args, lines)


def _write(args, lines: list[str]) -> None:
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
