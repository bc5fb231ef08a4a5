"""What shard DNAs cost: entry size per shard count K, and counting time per K (issue 17).

  python bench/bench_shards.py                  # Lite0 on real sample images + a ViT-B-sized synthetic DNA
  python bench/bench_shards.py --images 128 --vit-images 1000

Entry sizes: one DNA computed with K = 16 shards by the real pipeline (efficientnet-lite0,
real photo crops and digits from vdnacli.samples), folded to K = 8 and 4 ((h mod 16) mod 8 =
h mod 8: exactly what --shards 8 would store), and written by the registry's own writer for
K = 0, 4, 8, 16. The ViT-sized DNA (13 layers x 768 neurons, 1000 bins, 197 tokens per
image) has synthetic counts: per neuron a Gaussian activation profile, each image drawing
its own mean shift and width, counted by multinomial draws, so shard histograms are about
as sparse as real ones of that size.

compare --ci time (--time-ci): process CPU time of vdnacli.stats.compare_ci with 999
permutations between two 8-shard DNAs of each size (Lite0: the real DNA against itself, the
ViT-sized: two synthetic DNAs).

Counting time: one real batch of Lite0 activations counted into K shards (grouped by shard,
one count per shard present, added into its row) against the plain count (K = 0), process
CPU time, best of --repeats; and the forward pass of that batch for scale.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def entry_sizes(dna, ks, root: Path) -> dict[int, int]:
    from vdnacli.catalog import Catalog

    cat = Catalog(root)
    full = dna.shards
    out = {}
    for k in ks:
        dna.shards = None if k == 0 else full.fold(k)
        cat.put(f"k{k}", dna, replace=True)
        out[k] = cat.registry.file_size(f"k{k}")
    dna.shards = full
    return out


def lite0_dna(n_images: int, k: int, tmp: Path):
    from vdnacli import samples
    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.sources import list_images

    folder = tmp / "imgs"
    samples.write_pngs(samples.photo_crops(n_images // 2, seed=3) + list(samples.digits()[: n_images - n_images // 2]),
                       folder)
    ext = load_extractor("efficientnet-lite0", "cpu")
    settings = ComputeSettings.for_extractor("efficientnet-lite0", shards=k)
    dna, report = compute_dna(list_images(folder), ext, settings, Run(batch_size=32), name="lite0")
    return dna, ext, folder


def vit_dna(n_images: int, k: int, seed: int = 0):
    """A ViT-B/16-shaped histogram DNA with synthetic counts (see the module docstring)."""
    from vdnacli.dna import DNA, new_meta
    from vdnacli.shards import Shards

    rng = np.random.default_rng(seed)
    layers = {f"block_{i}": 768 for i in range(12)} | {"last_norm": 768}
    bins, tokens = 1000, 197
    images = np.bincount(rng.integers(0, k, n_images), minlength=k)
    grid = np.arange(bins) + 0.5
    hist, shard_hist = {}, {}
    for layer, n in layers.items():
        mu = rng.uniform(300, 700, n)
        sd = rng.uniform(20, 80, n)
        sh = np.zeros((k, n, bins), dtype=np.int64)
        for j in range(k):
            m = images[j]
            if m == 0:
                continue
            # images shift and widen each neuron's profile (8 image profiles per shard stand for its
            # images); the shard's counts are multinomial draws of its m x 197 activations
            p = np.zeros((n, bins))
            for _ in range(8):
                centre = mu + rng.normal(0, 15, n)
                width = sd * rng.uniform(0.7, 1.3, n)
                p += np.exp(-0.5 * ((grid[None, :] - centre[:, None]) / width[:, None]) ** 2)
            sh[j] = rng.multinomial(m * tokens, p / p.sum(axis=1, keepdims=True))
        shard_hist[layer] = sh
        hist[layer] = sh.sum(0)
    meta = new_meta(extractor="mugs-vit-b16", weights_sha256=None, ranges_sha256=None, layers=layers, bins=bins,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = int(n_images)
    return DNA(meta=meta, hist=hist, shards=Shards(k, images.astype(np.int64), hist=shard_hist))


def counting_times(ext, folder: Path, ks, repeats: int) -> tuple[dict[int, float], float]:
    import torch

    from vdnacli.pipeline import HistAccumulator, ShardGroups, iter_batches, resolve_ranges
    from vdnacli.settings import ComputeSettings
    from vdnacli.shards import shard_ids
    from vdnacli.sources import list_images

    settings = ComputeSettings.for_extractor("efficientnet-lite0")
    ranges = resolve_ranges(settings, ext)
    refs = list_images(folder)[:32]
    t = time.process_time()
    feats, digests, _ = next(iter_batches(refs, ext, settings))
    forward = time.process_time() - t
    out = {}
    for k in ks:
        acc = HistAccumulator(ext, ranges, settings.bins, settings.binning, k)
        groups = ShardGroups(shard_ids(digests, k), ext.device) if k else None
        best = float("inf")
        for _ in range(repeats):
            t = time.process_time()
            acc.update(feats, groups)
            best = min(best, time.process_time() - t)
        out[k] = best
    return out, forward


def ci_seconds(a, b) -> float:
    from vdnacli.stats import compare_ci

    a.meta["name"], b.meta["name"] = "a", "b"
    t = time.process_time()
    compare_ci(a, b, permutations=999)
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="real images in the Lite0 DNA")
    ap.add_argument("--vit-images", type=int, default=1000, help="images in the synthetic ViT-sized DNA")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-vit", action="store_true")
    ap.add_argument("--time-ci", action="store_true", help="also time compare --ci (8 shards, 999 permutations)")
    args = ap.parse_args()
    ks = (0, 4, 8, 16)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dna, ext, folder = lite0_dna(args.images, 16, tmp)
        sizes = entry_sizes(dna, ks, tmp / "reg-lite0")
        print(f"\nentry size, efficientnet-lite0 (2,064 neurons x 1000 bins), {dna.num_images} real images:")
        print("| K | entry | x K=0 |\n|---|---|---|")
        for k in ks:
            print(f"| {k} | {sizes[k] / 2**20:.2f} MiB | {sizes[k] / sizes[0]:.2f} |")
        times, forward = counting_times(ext, folder, ks, args.repeats)
        print(f"\ncounting one batch of 32 real images (CPU seconds, best of {args.repeats}; forward pass "
              f"{forward:.2f} s):")
        print("| K | counting | x K=0 | share of forward |\n|---|---|---|---|")
        for k in ks:
            print(f"| {k} | {times[k]:.3f} s | {times[k] / times[0]:.2f} | {times[k] / forward * 100:.1f} % |")
        if args.time_ci:
            dna.shards = dna.shards.fold(8)
            print(f"\ncompare --ci, Lite0 (8 + 8 shards, 999 permutations): {ci_seconds(dna, dna):.2f} s CPU")
        if not args.skip_vit:
            vit = vit_dna(args.vit_images, 16)
            sizes = entry_sizes(vit, ks, tmp / "reg-vit")
            print(f"\nentry size, ViT-B/16-shaped DNA (9,984 neurons x 1000 bins, 197 tokens), {args.vit_images} "
                  "images, synthetic counts:")
            print("| K | entry | x K=0 |\n|---|---|---|")
            for k in ks:
                print(f"| {k} | {sizes[k] / 2**20:.2f} MiB | {sizes[k] / sizes[0]:.2f} |")
            if args.time_ci:
                vit.shards = vit.shards.fold(8)
                other = vit_dna(args.vit_images, 8, seed=1)
                print(f"\ncompare --ci, ViT-sized (8 + 8 shards, 999 permutations): {ci_seconds(vit, other):.2f} s CPU")


if __name__ == "__main__":
    main()
