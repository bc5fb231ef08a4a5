"""DNA computation throughput, side by side in one run (issue: fast computation).

For each extractor x device x precision x batch size it reports
  forward  images/s of the bare forward pass (preprocessed tensors already on the device)
  dna      images/s of forward + histogram counting of every neuron (our fused path:
           Triton on CUDA, one vectorised bincount per layer on CPU)
  ratio    dna / forward (1.0 = counting is free)
  upstream images/s with upstream vdna 0.1.1's scheme: one torch.histc per neuron (optional)
With --breakdown, per layer: the counting time of each counter alone (same activations,
CPU: numba and bincount; CUDA: both Triton methods and bincount), values per second, and the
bare forward, to tell what to fix next. And the end-to-end `vdna add` throughput (decode + resize + forward + counting) on a folder
of JPEGs written by the script, for each decoder of --decoders side by side: "pil" (PIL
decode + resize in --workers processes) and "torch" (torchvision.io.decode_jpeg on the
device, nvjpeg on CUDA, resize on the device), with the EMD between their DNAs.

  python bench/bench_dna.py                       # CPU, efficientnet-lite0, fp32
  python bench/bench_dna.py --device cuda --precision fp32 bf16 --batch 128 --extractors efficientnet-lite0 rand-resnet50-seeded
  python bench/bench_dna.py --device cuda --decoders pil torch --e2e-images 512 --e2e-size 1600x1200 --iters 0
  python bench/bench_dna.py --extractors rand-resnet50 --iters 0 --e2e-images 0 --breakdown
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vdnacli.extractors import get_spec, load_extractor
from vdnacli.extractors.loaded import Extractor, build_module, packaged_ranges, resolve_device
from vdnacli.kernels import Workspace, bin_params, counter_for, histogram_counts

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _upstream_counts(acts, lo, scale, bins):
    """Upstream's scheme: normalise, clamp, then one torch.histc per neuron."""
    x = (acts.float() - lo.view(1, -1, 1)) * scale.view(1, -1, 1) / bins * 2 - 1
    x = x.clamp(-1, 1)
    out = torch.empty((acts.shape[1], bins), dtype=torch.int64, device=acts.device)
    for c in range(acts.shape[1]):
        out[c] = torch.histc(x[:, c].flatten(), bins=bins, min=-1, max=1).long()
    return out


def _ranges_params(ext, bins, binning: str = "float32"):
    """Per layer (lo, scale) float32 for the "float32" rule, (mean, std) float64 for
    "vdna-0.1.1"; from packaged ranges, else a fixed [-10, 10] interval (timing only)."""
    from vdnacli.binning import upstream_norm

    r = packaged_ranges(ext.spec)
    params = {}
    for layer, n in ext.spec.layers:
        lo, hi = r.interval(layer) if r is not None else (np.full(n, -10.0), np.full(n, 10.0))
        if binning == "vdna-0.1.1":
            p0, p1 = upstream_norm(lo, hi, 1.0)
        else:
            p0, p1 = bin_params(lo, hi, bins)
        params[layer] = (torch.from_numpy(p0).to(ext.device), torch.from_numpy(p1).to(ext.device))
    return params


def _random_extractor(name: str, device: str) -> Extractor:
    """The extractor's architecture with random parameters: same shapes and cost, no weights file."""
    spec = get_spec(name)
    module = build_module(spec, None).to(resolve_device(device))
    return Extractor(spec=spec, module=module, weights_sha256="random", device=resolve_device(device), offline=True)


def measure(ext, batch, precision, bins, iters, upstream, rounds=3, also=(), binning="float32"):
    from vdnacli.kernels import upstream_counter_for

    dev = ext.device
    size = ext.spec.input_size
    x = torch.randn(batch, 3, size, size, device=dev)
    dtype = DTYPES[precision]
    params = _ranges_params(ext, bins, binning)
    count, how = upstream_counter_for(dev) if binning == "vdna-0.1.1" else counter_for(dev)
    if binning == "vdna-0.1.1":
        also, upstream = (), False  # the other counters and upstream's loop take (lo, scale)
    workspace = Workspace()
    counts = {layer: torch.zeros((n, bins), dtype=torch.int64, device=dev) for layer, n in ext.spec.layers}

    def forward():
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            return ext(x)

    def run(fn, n):
        """(images/s by the wall clock, images/s by this process's CPU time): on a CPU shared
        with other work the second is the steadier measure of what a step costs."""
        with torch.inference_mode():
            fn()
            _sync(dev)
            t, c = time.perf_counter(), _cpu_seconds()
            for _ in range(n):
                fn()
            _sync(dev)
            return n * batch / (time.perf_counter() - t), n * batch / max(1e-9, _cpu_seconds() - c)

    def dna(count=count):
        feats = forward()
        for layer, acts in feats.items():  # count, added to the running counts in place
            count(acts, *params[layer], bins, workspace, out=counts[layer])

    others = {name: counters(dev)[name] for name in also if name in counters(dev) and name != how}

    def dna_upstream():
        feats = forward()
        for layer, acts in feats.items():
            _upstream_counts(acts, *params[layer], bins)

    # interleaved rounds, best of each (timeit's rule: noise only ever slows a run down)
    fwd = ours = (0.0, 0.0)
    extra = dict.fromkeys(others, (0.0, 0.0))
    best = lambda a, b: (max(a[0], b[0]), max(a[1], b[1]))  # noqa: E731
    for _ in range(rounds):
        fwd = best(fwd, run(forward, iters))
        ours = best(ours, run(dna, iters))
        for name, fn in others.items():
            extra[name] = best(extra[name], run(lambda fn=fn: dna(fn), iters))
    up = run(dna_upstream, max(1, iters // 2))[0] if upstream else None
    workspace.check_nan()
    return {"forward": fwd[0], "dna": ours[0], "ratio": ours[0] / fwd[0], "cpu_ratio": ours[1] / fwd[1],
            "upstream": up, "counter": _counter_label(how),
            "also": {name: (v[0] / fwd[0], v[1] / fwd[1]) for name, v in extra.items()}}


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _counter_label(how: str) -> str:
    """The counter's name; for Triton, which method the per-shape timing chose how often."""
    if how != "triton":
        return how
    from collections import Counter

    from vdnacli.kernels_triton import chosen_methods

    picked = Counter(chosen_methods().values())
    return "triton (" + ", ".join(f"{m} x{k}" for m, k in sorted(picked.items())) + ")" if picked else how


def counters(device: torch.device) -> dict:
    """{name: counting function} of every counter that runs on `device`."""
    out = {}
    if device.type == "cuda":
        try:
            from vdnacli.kernels_triton import METHODS, histogram_counts_triton
        except ImportError:
            pass
        else:
            for m in METHODS:
                out[f"triton-{m}"] = lambda *a, m=m, **k: histogram_counts_triton(*a, method=m, **k)
    if device.type == "cpu":
        try:
            import numba  # noqa: F401
        except ImportError:
            pass
        else:
            from vdnacli.kernels import histogram_counts_cpu

            out["numba"] = histogram_counts_cpu
    out["bincount"] = histogram_counts
    return out


def breakdown(ext, batch, precision, bins, reps=5):
    """Per layer, each counter alone on the same activations (ms per batch, best of `reps`),
    and the bare forward: a markdown table."""
    dev = ext.device
    size = ext.spec.input_size
    x = torch.randn(batch, 3, size, size, device=dev)
    dtype = DTYPES[precision]
    params = _ranges_params(ext, bins)

    def forward():
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            return ext(x)

    def best(fn):
        fn()  # compile, warm up, calibrate
        _sync(dev)
        ms = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            _sync(dev)
            ms = min(ms, (time.perf_counter() - t) * 1e3)
        return ms

    with torch.inference_mode():
        fwd = best(forward)
        feats = forward()
        names = list(counters(dev))
        rows, totals = [], dict.fromkeys(names, 0.0)
        for layer, acts in feats.items():
            out = torch.zeros((acts.shape[1], bins), dtype=torch.int64, device=dev)
            ws = Workspace()
            row = {}
            for name, fn in counters(dev).items():
                row[name] = best(lambda: fn(acts, *params[layer], bins, ws, out=out))
                totals[name] += row[name]
            rows.append((layer, tuple(acts.shape), str(acts.dtype).replace("torch.", ""), acts.numel(), row))
            del out, ws
    print(f"\nper-layer counting, {ext.spec.name}, {precision}, batch {batch}, {bins} bins, {dev} "
          f"(ms per batch, best of {reps}; G/s = 1e9 activations per second)\n")
    print("| layer | shape | dtype | M values | " + " | ".join(f"{n} ms | {n} G/s" for n in names) + " |")
    print("|---|---|---|---|" + "---|---|" * len(names))
    for layer, shape, dt, numel, row in rows:
        cells = " | ".join(f"{row[n]:.2f} | {numel / row[n] / 1e6:.1f}" for n in names)
        print(f"| {layer} | {'x'.join(map(str, shape))} | {dt} | {numel / 1e6:.1f} | {cells} |")
    total = sum(r[3] for r in rows)
    cells = " | ".join(f"{totals[n]:.2f} | {total / totals[n] / 1e6:.1f}" for n in names)
    print(f"| all layers | | | {total / 1e6:.1f} | {cells} |")
    print(f"\nbare forward: {fwd:.2f} ms per batch; counting / forward: "
          + ", ".join(f"{n} {totals[n] / fwd:.3f}" for n in names), flush=True)


def synthetic_photos(n: int, seed: int, size: int = 256, smooth: int = 8) -> list[np.ndarray]:
    """Photo-like uint8 RGB images (bilinearly upsampled random fields: smooth regions and
    edges, which JPEG codes like photos) for machines without the sample datasets."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (max(2, size // smooth), max(2, size // smooth), 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
        out.append(np.asarray(img))
    return out


def _write_one(job):
    from PIL import Image

    path, photo, size = job
    Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR).save(path, quality=90)


def write_jpegs(folder: Path, n: int, size: tuple[int, int]) -> Path:
    from concurrent.futures import ProcessPoolExecutor

    from vdnacli import samples
    from vdnacli.errors import VdnaError

    folder.mkdir(parents=True, exist_ok=True)
    try:
        photos = [p for p in samples.photos() if p.ndim == 3]
    except VdnaError:  # a GPU box without scikit-image: smooth random colour fields instead
        photos = synthetic_photos(8, seed=0)
    jobs = [(folder / f"{i:05d}.jpg", photos[i % len(photos)], tuple(size)) for i in range(n)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # encoding 2-MP JPEGs is the slow part
        list(pool.map(_write_one, jobs, chunksize=16))
    return folder


def end_to_end(extractor, device, folder, workers, batch, decoders, precision="fp32"):
    """`vdna add` of the same JPEG folder once per decoder: {decoder: (add img/s, pipeline
    img/s, EMD to the first decoder's DNA)}. "add" includes loading the network; "pipeline"
    is compute_dna's own clock (reading, decoding, resizing, forward, counting)."""
    from vdnacli.build import AddRequest, add
    from vdnacli.catalog import Catalog
    from vdnacli.distances import compare
    from vdnacli.settings import ComputeSettings

    cat = Catalog(Path(tempfile.mkdtemp(prefix="vdna-bench-reg-")))
    out, first = {}, None
    for decoder in decoders:
        t = time.perf_counter()
        # both decoders with the recipe the device decoder reproduces (ours: upright, centre crop, pil
        # resize, float32 binning), whatever the extractor's default
        settings = ComputeSettings.for_extractor(extractor, precision=precision, decoder=decoder, resize="pil",
                                                 decode_mode="upright", crop="center", binning="float32")
        dna, report = add(cat, AddRequest(name=f"bench-{decoder}", source=folder, settings=settings, device=device,
                                          batch_size=batch, workers=workers))
        total = report.images / (time.perf_counter() - t)
        first = dna if first is None else first
        out[decoder] = (total, report.images_per_second, compare(first, dna).distance)
    return out


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1600x1200, not {text!r}") from None
    return w, h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extractors", nargs="+", default=["efficientnet-lite0"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=list(DTYPES))
    ap.add_argument("--batch", nargs="+", type=int, default=[32])
    ap.add_argument("--bins", type=int, default=1000)
    ap.add_argument("--binning", nargs="+", default=["float32"], choices=["float32", "vdna-0.1.1"],
                    help="binning rules timed (vdna-0.1.1: float64 normalisation + histc's bins)")
    ap.add_argument("--iters", type=int, default=3, help="timed batches per forward/DNA measurement (0: skip them)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved forward/DNA rounds; the best of each is kept")
    ap.add_argument("--upstream", action="store_true", help="also time upstream's per-neuron histc loop")
    ap.add_argument("--also", nargs="+", default=[], metavar="COUNTER",
                    help="also time DNA with these counters, interleaved (e.g. bincount: the torch-ops path); "
                         "one DNA/forward column each")
    ap.add_argument("--breakdown", action="store_true",
                    help="per-layer counting time of every counter alone, and the bare forward (first --batch and "
                         "--precision)")
    ap.add_argument("--e2e-images", type=int, default=128, help="JPEGs for the end-to-end add (0: skip)")
    ap.add_argument("--e2e-size", type=_size, default=(1600, 1200), help="JPEG size WIDTHxHEIGHT (default 1600x1200)")
    ap.add_argument("--e2e-megapixels", type=float, default=None, help="JPEG size as megapixels at 4:3 (overrides --e2e-size)")
    ap.add_argument("--decoders", nargs="+", default=["pil", "torch"], choices=["pil", "torch"],
                    help="decoders timed side by side end to end (pil: PIL in workers; torch: on the device)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--random-weights", action="store_true",
                    help="forward/DNA timing with randomly initialised networks (machines without the weights, "
                         "e.g. ViT-B/16 on an offline GPU box; the end-to-end section still loads real weights)")
    args = ap.parse_args(argv)

    dev_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or platform.machine())
    print(f"machine: {dev_name}, {os.cpu_count()} CPU cores, torch {torch.__version__}\n", flush=True)
    if args.iters:
        cpu = args.device == "cpu"
        print("| extractor | device | precision | batch | forward img/s | DNA img/s | DNA / forward | upstream histc img/s "
              "| counter |" + (" DNA / forward, CPU time |" if cpu else "")
              + "".join(f" DNA / forward with {c}{' (wall; CPU time)' if cpu else ''} |" for c in args.also))
        print("|---|---|---|---|---|---|---|---|---|" + ("---|" if cpu else "") + "---|" * len(args.also))
    for name in args.extractors if args.iters else []:
        ext = _random_extractor(name, args.device) if args.random_weights else load_extractor(name, args.device)
        for precision, binning in [(p, b) for b in args.binning for p in args.precision]:
            for batch in args.batch:
                r = measure(ext, batch, precision, args.bins, args.iters, args.upstream, args.rounds, args.also, binning)
                up = f"{r['upstream']:.1f}" if r["upstream"] else "—"
                also = "".join(" — |" if c not in r["also"] else f" {r['also'][c][0]:.3f}; {r['also'][c][1]:.3f} |"
                               if cpu else f" {r['also'][c][0]:.3f} |" for c in args.also)
                cpu_col = f" {r['cpu_ratio']:.3f} |" if cpu else ""
                print(f"| {name} | {args.device} | {precision} | {batch} | {r['forward']:.1f} | {r['dna']:.1f} | "
                      f"{r['ratio']:.3f} | {up} | {r['counter']}{'' if binning == 'float32' else ' (' + binning + ')'} |"
                      f"{cpu_col}{also}", flush=True)
    if args.breakdown:
        for name in args.extractors:
            ext = _random_extractor(name, args.device) if args.random_weights else load_extractor(name, args.device)
            breakdown(ext, args.batch[0], args.precision[0], args.bins)
    if args.e2e_images:
        size = args.e2e_size
        if args.e2e_megapixels:
            w = int((args.e2e_megapixels * 1e6 * 4 / 3) ** 0.5)
            size = (w, int(w * 3 / 4))
        folder = write_jpegs(Path(tempfile.mkdtemp(prefix="vdna-bench-")) / "jpegs", args.e2e_images, size)
        mp = size[0] * size[1] / 1e6
        print(f"\nend to end `vdna add`: {args.e2e_images} JPEGs of {size[0]}x{size[1]} ({mp:.1f} MP, quality 90), "
              f"{args.workers} workers, batch {args.batch[0]}, {args.precision[0]}, {args.device}\n")
        print("| extractor | decoder | add img/s | pipeline img/s | EMD to the first decoder's DNA |")
        print("|---|---|---|---|---|")
        for name in args.extractors:
            for decoder, (total, pipe, emd) in end_to_end(name, args.device, folder, args.workers, args.batch[0],
                                                          args.decoders, args.precision[0]).items():
                print(f"| {name} | {decoder} | {total:.1f} | {pipe:.1f} | {emd:.4f} |", flush=True)


if __name__ == "__main__":
    main()
