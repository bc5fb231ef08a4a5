"""Where the time of an end-to-end `vdna add --decode torch` goes, stage by stage (GPU).

Each stage is timed alone on the same 2-megapixel JPEGs, then the whole pipeline:
  loader    DataLoader workers reading, hashing and probing files (what feeds the GPU)
  decode    torchvision.io.decode_jpeg on the device, batched (nvjpeg on CUDA), per batch size
  resize    decode_torch.resize (PIL's two-pass antialiased bicubic on the device)
  forward   network + counting on a ready batch (bf16 and fp32)
  pipeline  compute_dna end to end (decoder torch), and with decoder pil for comparison

  python bench/profile_decode.py [--images 1024] [--extractor rand-resnet50-seeded] [--workers 16]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_dna import write_jpegs  # noqa: E402
from vdnacli import decode_torch
from vdnacli.extractors import get_spec, load_extractor
from vdnacli.pipeline import Run, _collate, _ImageDataset, compute_dna
from vdnacli.preprocess import ImageRecipe, normalise
from vdnacli.settings import ComputeSettings
from vdnacli.sources import list_images


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, n_items: int, repeat: int = 2) -> float:
    """Best items/s over `repeat` runs (after one warm-up)."""
    fn()
    _sync()
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync()
        best = max(best, n_items / (time.perf_counter() - t))
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--extractor", default="rand-resnet50-seeded")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    folder = write_jpegs(Path(tempfile.mkdtemp(prefix="vdna-prof-")) / "jpegs", args.images, (1600, 1200))
    refs = list_images(folder)
    spec = get_spec(args.extractor)
    settings = ComputeSettings.for_extractor(spec.name, resize="pil", decode_mode="upright", crop="center",
                                             binning="float32", decoder="torch", precision="bf16")
    recipe = ImageRecipe.of(settings, spec)
    print(f"device {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, {os.cpu_count()} cores, "
          f"{args.images} JPEGs 1600x1200 q90, batch {args.batch}, workers {args.workers}\n")
    print("| stage | images/s | note |\n|---|---|---|")

    ds = _ImageDataset(refs, recipe, "torch")

    def loader():
        dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=args.workers, collate_fn=_collate,
                                         prefetch_factor=4)
        for _ in dl:
            pass

    print(f"| loader (read + sha256 + probe, {args.workers} workers) | {timed(loader, len(refs), 1):.0f} | |", flush=True)
    datas = [r.read_bytes() for r in refs[: args.batch]]
    jpegs = [decode_torch.EncodedJpeg(d, 1) for d in datas]
    for b in (32, 64, 128, 256):
        chunk = [datas[i % len(datas)] for i in range(b)]
        print(f"| decode_jpeg batched, batch {b} | {timed(lambda: decode_torch._decode(chunk, dev), b, 3):.0f} | |",
              flush=True)
    decoded = decode_torch._decode(datas, dev)
    shaped = [decode_torch.square(x, "center") for x in decoded]
    print(f"| resize (two-pass antialiased, batched) | {timed(lambda: decode_torch.resize(shaped, 224), len(shaped), 3):.0f} | |",
          flush=True)
    print(f"| decode + resize (decode_resize) | "
          f"{timed(lambda: decode_torch.decode_resize(jpegs, dev, 224, 'center'), len(jpegs), 3):.0f} | |", flush=True)
    ext = load_extractor(spec.name, args.device)
    from vdnacli.pipeline import HistAccumulator, resolve_ranges

    acc = HistAccumulator(ext, resolve_ranges(settings, ext), 1000, "float32")
    x8 = torch.stack(decode_torch.resize(shaped, 224))
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def fwd():
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                acc.update(ext(normalise(x8, spec.mean, spec.std)))
        print(f"| forward + count, {precision} | {timed(fwd, len(x8), 3):.0f} | |", flush=True)
    for decoder in ("torch", "pil"):
        s = settings.replace(decoder=decoder)
        t = time.perf_counter()
        _, rep = compute_dna(refs, ext, s, Run(batch_size=args.batch, workers=args.workers))
        total = rep.images / (time.perf_counter() - t)
        print(f"| pipeline, decoder {decoder} (bf16) | {rep.images_per_second:.0f} | {total:.0f} with set-up |", flush=True)


if __name__ == "__main__":
    main()
