"""`vdna report` at scale, and the screenshot in docs/report.png.

  python bench/bench_report.py screenshot REGISTRY OUT.png
      the report of REGISTRY rendered by headless Chromium, whole page
  python bench/bench_report.py thumbs [--images 2000]
      what keeping thumbnails adds to `vdna add` (a second read + sha256 of every image)
  python bench/bench_report.py scale [--sizes 200 500] [--lite0 200] [--ratio 24]
      synthetic catalogs: page size, time to build and to render in Chromium; with --lite0 N,
      N entries of efficientnet-lite0's shape (2,064 neurons x 1000 bins) to time the exact
      distances; with --ratio K, `Catalog.matrix` (compare per pair) against
      `pairwise.emd_matrix` side by side on K lite0-shaped entries (same values, asserted).

Synthetic entries: clusters of smooth per-neuron histograms (Poisson counts around
Gaussian bumps), real thumbnails of the sample images (16 per entry).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from headless_chromium import chromium, console_errors, full_page_png, why_unavailable  # noqa: E402
from vdnacli import report as R  # noqa: E402
from vdnacli.catalog import Catalog  # noqa: E402
from vdnacli.dna import DNA, new_meta  # noqa: E402

LITE0 = {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192, "stage7": 320,
         "head": 1280}
SMALL = {"low": 16, "mid": 32, "high": 64}


def sample_thumbnails(tmp: Path) -> list:
    from vdnacli import samples
    from vdnacli.sources import list_images
    from vdnacli.thumbnails import collect

    out = []
    for folder in samples.write_demo_sets(tmp / "samples", per_half=20).values():
        refs = list_images(folder)
        hs = sorted({hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs})
        out.append(collect(refs, np.frombuffer(b"".join(hs), dtype=np.uint8).reshape(-1, 16), 16))
    return out


def synthetic(root: Path, n: int, layers: dict, bins: int, thumbs: list, clusters: int = 12, seed: int = 0) -> Catalog:
    rng = np.random.default_rng(seed)
    neurons = sum(layers.values())
    centres = rng.uniform(0.2 * bins, 0.8 * bins, size=(clusters, neurons))
    widths = rng.uniform(0.03 * bins, 0.12 * bins, size=(clusters, neurons))
    x = np.arange(bins)
    cat = Catalog(root)
    for i in range(n):
        c = i % clusters
        mu = centres[c] + rng.normal(0, 0.01 * bins, neurons)
        lam = 400 * np.exp(-((x[None, :] - mu[:, None]) ** 2) / (2 * widths[c][:, None] ** 2))
        h = rng.poisson(lam).astype(np.int64)
        hist, start = {}, 0
        for l, k in layers.items():
            hist[l] = h[start:start + k]
            start += k
        meta = new_meta(extractor="efficientnet-lite0" if layers == LITE0 else "synthetic", weights_sha256="w" * 64,
                        ranges_sha256="r" * 64, layers=layers, bins=bins, preprocessing={"size": 224, "crop": "center"},
                        kinds=["hist"])
        meta["num_images"] = 1000
        meta["origin"] = {"kind": "images", "source_name": f"shard-{i:04d}", "limit": None, "seed": None}
        cat.put(f"set-{c:02d}-{i:04d}", DNA(meta=meta, hist=hist, thumbnails=thumbs[i % len(thumbs)]))
    return cat


def render_in_browser(page: Path) -> dict:
    with chromium() as drv:
        t = time.perf_counter()
        drv.get(page.as_uri())  # returns after the load event: inline scripts (heatmaps) have run
        load = time.perf_counter() - t
        errors = console_errors(drv)
        cards = drv.execute_script("return document.querySelectorAll('article.card').length")
        t = time.perf_counter()
        drv.find_element("css selector", "#catalog-table th:nth-child(5)").click()  # sort by size
        sort = time.perf_counter() - t
    return {"load_s": load, "errors": errors, "cards": cards, "sort_s": sort}


def cmd_screenshot(args) -> None:
    cat = Catalog(args.registry)
    rep = R.build_report(cat)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(R.render_html(rep))
        with chromium(width=args.width) as drv:
            drv.get(page.as_uri())
            assert console_errors(drv) == [], console_errors(drv)
            drv.execute_script("document.getElementById('entries').style.paddingBottom = '8px'")
            full_page_png(drv, args.out, width=args.width)
    print(f"wrote {args.out}")


def cmd_scale(args) -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        thumbs = sample_thumbnails(tmp)
        if args.ratio:
            cat = synthetic(tmp / "ratio", args.ratio, LITE0, 1000, thumbs)
            names = cat.names()
            from vdnacli.distances import make_selection
            from vdnacli.pairwise import emd_matrix

            t = time.perf_counter()
            want = cat.matrix(names)
            t_matrix = time.perf_counter() - t
            t = time.perf_counter()
            got = emd_matrix(cat, names, make_selection(LITE0))
            t_pair = time.perf_counter() - t
            assert np.array_equal(want, got.distance)
            pairs = len(names) * (len(names) - 1) // 2
            print(f"\nexact all-pairs EMD, {len(names)} lite0-shaped entries ({pairs} pairs), same values:")
            print(f"  Catalog.matrix (compare per pair)  {t_matrix:7.1f} s  {1000 * t_matrix / pairs:6.1f} ms/pair")
            print(f"  pairwise.emd_matrix                {t_pair:7.1f} s  {1000 * t_pair / pairs:6.1f} ms/pair"
                  f"   ({t_matrix / t_pair:.1f}x)")
        rows = []
        for n, layers, bins in [(k, SMALL, 64) for k in args.sizes] + ([(args.lite0, LITE0, 1000)] if args.lite0 else []):
            t = time.perf_counter()
            cat = synthetic(tmp / f"cat-{n}-{len(layers)}", n, layers, bins, thumbs)
            t_make = time.perf_counter() - t
            t = time.perf_counter()
            rep = R.build_report(cat)
            t_build = time.perf_counter() - t
            t = time.perf_counter()
            page = R.render_html(rep)
            t_render = time.perf_counter() - t
            path = tmp / f"report-{n}.html"
            path.write_text(page)
            row = {"entries": n, "shape": "lite0" if layers == LITE0 else "small", "build_s": t_build,
                   "render_s": t_render, "mb": len(page.encode()) / 1e6, "make_s": t_make,
                   "per_card": R.thumbs_per_card(rep)}
            if why_unavailable() is None:
                row.update(render_in_browser(path))
            rows.append(row)
            print(row, flush=True)
        print("\n| entries | neurons x bins | build (s) | HTML (s) | page (MB) | thumbnails/card | Chromium load (s) | sort (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            shape = "2,064 x 1000" if r["shape"] == "lite0" else f"{sum(SMALL.values())} x 64"
            print(f"| {r['entries']} | {shape} | {r['build_s']:.1f} | {r['render_s']:.2f} | {r['mb']:.2f} | "
                  f"{r['per_card']} | {r.get('load_s', float('nan')):.2f} | {r.get('sort_s', float('nan')):.2f} |")


def cmd_thumbs(args) -> None:
    """What keeping thumbnails adds to `vdna add`: one more read + sha256 of every image, and
    16 decodes; against the pipeline's own throughput (measured by `vdna add`)."""
    from PIL import Image

    from vdnacli.sources import list_images
    from vdnacli.thumbnails import collect

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        base = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
        for i in range(args.images):
            img = np.roll(base, i * 7, axis=1)
            Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
        refs = list_images(folder)
        total = sum(Path(r.path).stat().st_size for r in refs)
        hs = sorted({hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs})
        hashes = np.frombuffer(b"".join(hs), dtype=np.uint8).reshape(-1, 16)
        t = time.perf_counter()
        th = collect(refs, hashes, 16)
        dt = time.perf_counter() - t
    print(f"collect: {len(refs)} JPEGs ({total / 1e6:.0f} MB, page cache warm): {dt:.2f} s "
          f"({len(refs) / dt:,.0f} images/s, {total / 1e6 / dt:.0f} MB/s), 16 thumbnails of {th.nbytes / 1e3:.1f} KB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("screenshot")
    s.add_argument("registry")
    s.add_argument("out")
    s.add_argument("--width", type=int, default=1280)
    s = sub.add_parser("scale")
    s.add_argument("--sizes", type=int, nargs="*", default=[200, 500])
    s.add_argument("--lite0", type=int, default=0)
    s.add_argument("--ratio", type=int, default=0)
    s = sub.add_parser("thumbs")
    s.add_argument("--images", type=int, default=2000)
    args = p.parse_args()
    {"screenshot": cmd_screenshot, "scale": cmd_scale, "thumbs": cmd_thumbs}[args.cmd](args)


if __name__ == "__main__":
    main()
