"""Benchmark: sketch-pruned `Catalog.nearest` vs brute force, and the first-stage scan.

Measures, side by side in one run:
  1. building a clustered synthetic catalog of E entries x N neurons x B bins (Catalog.put);
  2. Q nearest-neighbour queries (top K) through the sketch index and by brute force
     (exact=True), each in its own subprocess so that its peak RSS is isolated; the
     results must be identical;
  3. the first-stage scan over S synthetic mean sketches in a consolidated SideIndex
     (scan_mean_bounds: block reads + mean_bound, then argsort), without creating S full entries;
and prints Markdown tables.

Quick run:    python bench/bench_nearest.py --entries 50 --neurons 2000 --scan-entries 1000
Default run:  python bench/bench_nearest.py            (E=1000, N=10,000, B=1000, Q=5, K=5, S=10,000)
Reuse/keep a built catalog between runs: --catalog DIR (built there if missing, resumed
if incomplete, never deleted). Everything else lives in a temporary directory under
--workdir (default /tmp), deleted at the end unless --keep.

Before building everything the script builds a few probe entries and projects the build
and brute-force times; if the projected total exceeds --budget-minutes it stops and
prints the largest --entries that fits (use --force to run anyway).

Catalog scale (--scale S): the E real entries are joined by S - E sketch-only entries,
written straight into the side index (their entry files are empty placeholders, never read
by a correct search), from further families of the same size and the same generative
model: per entry the neuron means (stage 1) and their group sums (stage 0), compatibility
rows, and quantile rows left unwritten (HDF5 allocates nothing for them; they read as zeros,
which gives such an entry a large stage-2 bound, so none reaches the exact stage). A
query's true neighbours are its own family's real entries, as in a real catalog where
each dataset has a few relatives and everything else is far; what grows is what stage 0
must dismiss. Reported: per-stage time (warm, mean over queries and repeats), per-stage
peak of traced allocations (tracemalloc pass), peak RSS, the same queries without stage 0
and without the cached listing, and the answers checked against brute force over the real
entries (the subset check).

Catalog-scale run:  python bench/bench_nearest.py --entries 200 --families 10 --scale 100000
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from registry import Registry  # noqa: E402
from registry.index import SideIndex  # noqa: E402
from registry.layout import entry_stamp  # noqa: E402
from vdnacli.catalog import Catalog  # noqa: E402
from vdnacli.distances import compare  # noqa: E402
from vdnacli.dna import DNA, new_meta  # noqa: E402
from vdnacli.search import compat_index, compat_row, scan_mean_bounds, sketch_index  # noqa: E402
from vdnacli.sketch import GROUP, QUANTILES, group_starts, group_sums, mean_bound  # noqa: E402

PARAMS_FILE = "bench-params.json"
GEN_KEYS = ("neurons", "layers", "bins", "families", "counts", "seed")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def human(n: float) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


# -- synthetic, clustered DNAs ------------------------------------------------------------
def layer_sizes(neurons: int, layers: int) -> dict[str, int]:
    layers = max(1, min(layers, neurons))
    base, extra = divmod(neurons, layers)
    return {f"block{i}": base + (1 if i < extra else 0) for i in range(layers)}


class Generator:
    """Deterministic clustered histograms: entry i belongs to family i % F.

    Per neuron: a Gaussian component (family centre + small per-entry shift, std of a few
    tens of bins) and, for ~30% of neurons, a narrow "zero-activation" spike (a ReLU-like
    mixture) whose weight depends on the family. Counts are Poisson around `counts`.
    """

    def __init__(self, p: dict):
        self.p = p
        n, b, f = p["neurons"], p["bins"], p["families"]
        rng = np.random.default_rng([p["seed"], 0])
        self.base = base = rng.uniform(0.25 * b, 0.75 * b, n)
        self.centre = (base + rng.normal(0.0, 0.04 * b, (f, n))).astype(np.float32)  # [F, N]
        s = rng.uniform(0.015 * b, 0.06 * b, n)
        self.std = (s * np.exp(rng.normal(0.0, 0.15, (f, n)))).astype(np.float32)  # [F, N]
        self.spiky = rng.random(n) < 0.3
        self.spike_w = np.where(self.spiky, rng.uniform(0.1, 0.5, (f, n)), 0.0).astype(np.float32)
        self.spike_at = np.float32(b / 2)
        self.x = np.arange(b, dtype=np.float32)

    def family(self, i: int) -> int:
        return i % self.p["families"]

    def name(self, i: int) -> str:
        return f"e{i:05d}-f{self.family(i):02d}"

    def hist(self, i: int) -> np.ndarray:
        p, f = self.p, self.family(i)
        n, b = p["neurons"], p["bins"]
        rng = np.random.default_rng([p["seed"], 1, i])
        mu = self.centre[f] + rng.normal(0.0, 0.004 * b, n).astype(np.float32) + np.float32(rng.normal(0.0, 0.002 * b))
        sd = self.std[f] * np.exp(rng.normal(0.0, 0.03, n)).astype(np.float32)
        out = np.empty((n, b), dtype=np.int64)
        step = 2048  # rows per block: bounded float32 temporaries
        for a in range(0, n, step):
            sl = slice(a, min(a + step, n))
            z = (self.x - mu[sl, None]) / sd[sl, None]
            g = np.exp(-0.5 * z * z)
            g /= g.sum(axis=1, keepdims=True)
            w = self.spike_w[f, sl, None]
            if w.any():
                zs = (self.x - self.spike_at) / np.float32(0.003 * b + 1)
                spike = np.exp(-0.5 * zs * zs)
                spike /= spike.sum()
                g = (1 - w) * g + w * spike[None, :]
            lam = g * np.float32(p["counts"])
            lam[lam < 1e-4] = 0
            h = np.zeros(lam.shape, dtype=np.int64)
            nz = lam > 0
            h[nz] = rng.poisson(lam[nz])
            empty = h.sum(axis=1) == 0  # never store an empty row (EMD undefined)
            if empty.any():
                h[empty, np.argmax(lam[empty], axis=1)] = 1
            out[sl] = h
        return out

    def dna(self, i: int) -> DNA:
        p = self.p
        h = self.hist(i)
        layers = layer_sizes(p["neurons"], p["layers"])
        meta = new_meta(extractor="bench-synthetic", weights_sha256="0" * 64, ranges_sha256="1" * 64,
                        layers=layers, bins=p["bins"], preprocessing={"bench": "synthetic"}, kinds=["hist"])
        meta["num_images"] = int(p["counts"])
        hist, a = {}, 0
        for layer, k in layers.items():
            hist[layer] = h[a : a + k]
            a += k
        return DNA(meta=meta, hist=hist)


_GEN: Generator | None = None
_ROOT: str | None = None


def _init_worker(params: dict, root: str) -> None:
    global _GEN, _ROOT
    _GEN, _ROOT = Generator(params), root


def _build_one(i: int) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    d = _GEN.dna(i)
    t1 = time.perf_counter()
    Catalog(_ROOT).put(_GEN.name(i), d, replace=True)
    return i, t1 - t0, time.perf_counter() - t1


# -- phase 1: build -------------------------------------------------------------------------
def build_catalog(args, params: dict, root: Path) -> dict:
    gen = Generator(params)
    E = params["entries"]
    Catalog(root)  # creates the registry
    (root / PARAMS_FILE).write_text(json.dumps(params, indent=1))
    have = set(Catalog(root).names())
    missing = [i for i in range(E) if gen.name(i) not in have]
    info = dict(built=len(missing), reused=E - len(missing), gen_s=0.0, put_s=0.0, wall_s=0.0,
                projected_build_s=None, projected_brute_s=None, aborted=False)
    if not missing:
        log(f"[build] catalog {root} already holds all {E} entries: reusing it")
        return info
    jobs = max(1, args.jobs)
    log(f"[build] {len(missing)} entries to build ({E - len(missing)} reused) with {jobs} process(es) in {root}")
    free = shutil.disk_usage(root).free
    if free < len(missing) * 8 * params["neurons"] * params["bins"] * 0.06:
        log(f"[build] WARNING: only {human(free)} free on {root}")
    ctx = mp.get_context("fork")
    t_start = time.perf_counter()
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(params, str(root))) as pool:
        probe, rest = missing[: 2 * jobs], missing[2 * jobs :]
        for _, g, p in pool.map(_build_one, probe):
            info["gen_s"] += g
            info["put_s"] += p
        per_entry = (time.perf_counter() - t_start) / len(probe)
        # brute force costs one full read + EMD per entry and query: measure it on the probe
        cat = Catalog(root)
        names = sorted(set(cat.names()))
        q = cat.get(names[0], ["hist"])
        t0 = time.perf_counter()
        reps = 0
        for other in names[1:3]:
            compare(q, cat.get(other, ["hist"]), "emd")
            reps += 1
        per_cmp = (time.perf_counter() - t0) / max(reps, 1)
        proj_build = per_entry * len(missing)
        proj_brute = per_cmp * (E - 1) * args.queries
        info.update(projected_build_s=proj_build, projected_brute_s=proj_brute)
        log(f"[build] probe: {per_entry:.2f} s/entry wall with {jobs} process(es) -> building {len(missing)} entries "
            f"projected at {proj_build / 60:.1f} min; brute force {per_cmp:.2f} s/entry -> {args.queries} brute queries "
            f"over {E} entries projected at {proj_brute / 60:.1f} min")
        if proj_build > 600:
            log(f"[build] NOTE: building {len(missing)} entries would take more than 10 minutes "
                f"(projected {proj_build / 60:.1f} min)")
        total = proj_build + proj_brute
        if total > args.budget_minutes * 60 and not args.force:
            fit = int(args.budget_minutes * 60 / (per_entry + per_cmp * args.queries))
            info.update(aborted=True, fit_entries=fit, per_entry_s=per_entry, per_cmp_s=per_cmp)
            log(f"[build] STOP: projected build + brute force = {total / 60:.1f} min > --budget-minutes "
                f"{args.budget_minutes}; about --entries {fit} fits (or pass --force)")
            return info
        done, last = len(probe), time.perf_counter()
        for _, g, p in pool.imap_unordered(_build_one, rest):
            info["gen_s"] += g
            info["put_s"] += p
            done += 1
            if time.perf_counter() - last > 30 or done == len(missing):
                last = time.perf_counter()
                el = last - t_start
                log(f"[build] {done}/{len(missing)} entries, {el:.0f} s, ETA {el / done * (len(missing) - done):.0f} s")
    info["wall_s"] = time.perf_counter() - t_start
    return info


# -- workers (subprocesses: isolated peak RSS) ---------------------------------------------
def worker_queries(spec: dict) -> dict:
    cat = Catalog(spec["root"])
    K, queries, exact = spec["top"], spec["queries"], spec["mode"] == "brute"
    out = {"rss_start": peak_rss_bytes(), "queries": {}}
    if spec["mode"] == "cold":
        shutil.rmtree(Path(spec["root"]) / "index", ignore_errors=True)  # cold: rebuild the side indexes
        st: dict = {}
        t0 = time.perf_counter()
        r, _ = cat.nearest(queries[0], top=K, stats=st)
        out["cold_s"] = time.perf_counter() - t0
        out["cold_stats"] = st
        out["cold_results"] = [[n, float(d)] for n, d in r]
        idx_dir = Path(spec["root"]) / "index"  # index/<key>.h5 or index/<key>/seg-*.h5, by library version
        out["index_bytes"] = {str(p.relative_to(idx_dir)): p.stat().st_size for p in idx_dir.rglob("*.h5")}
        out["rss_peak"] = peak_rss_bytes()
        return out
    for qn in queries:
        times, res = [], None
        for _ in range(1 if exact else spec["repeat"]):
            st = {}
            t0 = time.perf_counter()
            r, skipped = cat.nearest(qn, top=K, exact=exact, stats=st)
            times.append(time.perf_counter() - t0)
            res = {"results": [[n, float(d)] for n, d in r], "skipped": sorted(skipped), "stats": st}
        res["times"] = times
        out["queries"][qn] = res
    out["rss_peak"] = peak_rss_bytes()
    return out


def worker_scan(spec: dict) -> dict:
    S, N, F, reps = spec["scan_entries"], spec["neurons"], spec["families"], spec["repeat"]
    root = Path(spec["dir"])
    reg = Registry(root)
    names = [f"s{i:06d}" for i in range(S)]
    out = {"rss_start": peak_rss_bytes()}
    # Empty placeholder entry files, so that sync() can stat them exactly as in a real catalog.
    t0 = time.perf_counter()
    for n in names:
        (reg.entries_dir / f"{n}.h5").touch()
    sidx = SideIndex(reg, "sketch-bench", {"mean": ((N,), "float32")})
    rng = np.random.default_rng([spec["seed"], 2])
    centres = rng.uniform(250, 750, (F, N)).astype(np.float32)
    block = 512

    def fill(ds):
        for a in range(0, S, block):
            b = min(a + block, S)
            ds[a:b] = centres[np.arange(a, b) % F] + rng.normal(0, 2.0, (b - a, N)).astype(np.float32)

    if hasattr(sidx, "_write_segment"):
        # Segmented index (index/<key>/seg-*.h5): one segment written by SideIndex itself.
        from registry.layout import entry_stamp

        stamps = np.array([entry_stamp(reg.entries_dir / f"{n}.h5") for n in names], dtype=np.int64)
        sidx.dir.mkdir(parents=True, exist_ok=True)
        tmp = sidx._tmp()
        sidx._write_segment(tmp, names, stamps, lambda k, ds: fill(ds))
        index_path = sidx._publish(tmp)
    else:
        # Single-file index (index/<key>.h5): the layout SideIndex._create writes.
        sigs = np.array([[st.st_mtime_ns, st.st_size] for st in ((reg.entries_dir / f"{n}.h5").stat() for n in names)],
                        dtype=np.int64)
        with sidx._create() as f:
            for k in ("names", "sigs", "mean"):
                f[k].resize(S, axis=0)
            fill(f["mean"])
            f["sigs"][:] = sigs
            f["names"][:] = np.array([n.encode() for n in names], dtype="S128")
        index_path = sidx.path
    out["write_s"] = time.perf_counter() - t0
    out["index_bytes"] = index_path.stat().st_size
    qmean = centres[3 % F] + rng.normal(0, 2.0, N).astype(np.float32)
    out["rss_before_scan"] = peak_rss_bytes()
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        rows_of = sidx.sync(reg.names(), lambda n: None)  # stat S files + read names/sigs (no recompute)
        t1 = time.perf_counter()
        rows = [rows_of[n] for n in names]
        t2 = time.perf_counter()
        lb = scan_mean_bounds(sidx, rows, qmean)  # what nearest runs: block reads + bound
        t3 = time.perf_counter()
        order = np.argsort(lb, kind="stable")
        t4 = time.perf_counter()
        assert len(rows_of) == S and lb.shape == (S,) and order.shape == (S,)
        if not runs:  # the streamed scan equals one whole read + bound
            assert np.array_equal(lb[:2048], mean_bound(qmean, sidx.read("mean", rows[:2048])))
        runs.append(dict(sync_s=t1 - t0, read_s=t2 - t1, bound_s=t3 - t2, argsort_s=t4 - t3))
        del lb, order
    out["runs"] = runs
    out["rss_peak"] = peak_rss_bytes()
    return out


# -- catalog scale: sketch-only entries written straight into the side index -----------------
SCALE_FILE = "bench-scale.json"
SYNTHETIC = re.compile(r"^s\d{6}-g\d{5}$")


class SketchFamilies:
    """Neuron means of entries of further families, from the Generator's model without the
    histograms: family centre + per-entry shift + a global shift, mixed with the family's
    spike weight, plus the sampling noise of ~`counts` values per neuron."""

    def __init__(self, gen: Generator):
        self.gen, self.p = gen, gen.p

    def means(self, family: int, members: range) -> np.ndarray:
        p, g = self.p, self.gen
        n, b = p["neurons"], p["bins"]
        rng = np.random.default_rng([p["seed"], 3, family])
        centre = g.base + rng.normal(0.0, 0.04 * b, n)
        w = np.where(g.spiky, rng.uniform(0.1, 0.5, n), 0.0)
        sd = rng.uniform(0.015 * b, 0.06 * b, n)
        out = np.empty((len(members), n), dtype=np.float32)
        for k, m in enumerate(members):
            r = np.random.default_rng([p["seed"], 4, family, m])
            mu = centre + r.normal(0.0, 0.004 * b, n) + r.normal(0.0, 0.002 * b)
            out[k] = np.clip((1 - w) * mu + w * (b / 2) + r.normal(0.0, 1.0, n) * sd / np.sqrt(p["counts"]), 0, b - 1)
        return out


def setup_scale(args, params: dict, root: Path) -> dict:
    """Placeholder entry files and index segments for S - E sketch-only entries (idempotent)."""
    E, S = params["entries"], args.scale
    per = max(1, E // params["families"])
    want = dict(scale=S, per_family=per, layout=sorted(sketch_index(Registry(root), {"layers": [], "bins": 0}).fields),
                **{k: params[k] for k in GEN_KEYS})
    marker = root / SCALE_FILE
    if marker.exists() and json.loads(marker.read_text()).get("want") == want:
        log(f"[scale] {root} already holds the {S - E} sketch-only entries: reusing them")
        return json.loads(marker.read_text())["info"]
    t0 = time.perf_counter()
    gen = Generator(params)
    cat = Catalog(root)
    reg = cat.registry
    real = sorted(n for n in cat.names() if not SYNTHETIC.match(n))
    for n in cat.names():  # sketch-only entries of an earlier setup (other sizes or index layout)
        if SYNTHETIC.match(n):
            (reg.entries_dir / f"{n}.h5").unlink()
    if len(real) != E:
        raise SystemExit(f"[scale] expected {E} real entries in {root}, found {len(real)}")
    shutil.rmtree(root / "index", ignore_errors=True)  # derived; the synthetic segments must come first
    meta = cat.registry.meta(real[0])
    n_syn = S - E
    fams = range(params["families"], params["families"] + -(-n_syn // per))
    names = [f"s{i:06d}-g{params['families'] + i // per:05d}" for i in range(n_syn)]
    for n in names:
        (reg.entries_dir / f"{n}.h5").touch()
    t1 = time.perf_counter()
    stamps = np.array([entry_stamp(reg.entries_dir / f"{n}.h5") for n in names], dtype=np.int64)
    crow = compat_row(meta)
    cidx = compat_index(reg)
    cidx.dir.mkdir(parents=True, exist_ok=True)

    def fill_compat(k, ds):
        for a in range(0, n_syn, 65536):
            b = min(a + 65536, n_syn)
            ds[a:b] = np.broadcast_to(np.asarray(crow[k], dtype=ds.dtype), (b - a, *ds.shape[1:]))

    tmp = cidx._tmp()
    cidx._write_segment(tmp, names, stamps, fill_compat)
    cidx._publish(tmp)
    sidx = sketch_index(reg, meta)
    sidx.dir.mkdir(parents=True, exist_ok=True)
    starts = group_starts([int(k) for _, k in meta["layers"]])
    sf = SketchFamilies(gen)

    def fill_sketch(k, ds):
        if k == "quantiles":
            return  # never written: no chunk allocated (reads as zeros)
        if k == "groups":
            ds.write_direct(sketch_groups)  # computed with the means ("mean" is filled first)
            return
        if k == "shas":
            fill_compat(k, ds)
            return
        o = 0
        for f in fams:
            m = sf.means(f, range(min(per, n_syn - o)))
            ds[o : o + len(m)] = m
            sketch_groups[o : o + len(m)] = group_sums(m, starts)
            o += len(m)
            if (f - fams.start) % 500 == 0:
                log(f"[scale] means of {o}/{n_syn} sketch-only entries")

    sketch_groups = np.empty((n_syn, starts.size), dtype=np.float32)
    tmp = sidx._tmp()
    sidx._write_segment(tmp, names, stamps, fill_sketch)
    seg = sidx._publish(tmp)
    info = dict(synthetic=n_syn, families=len(fams), per_family=per, setup_s=time.perf_counter() - t0,
                touch_s=t1 - t0, segment_bytes=seg.stat().st_size, groups=int(starts.size))
    marker.write_text(json.dumps(dict(want=want, info=info)))
    log(f"[scale] {n_syn} sketch-only entries in {info['setup_s']:.0f} s (segment {human(info['segment_bytes'])})")
    return info


def worker_scale(spec: dict) -> dict:
    """Warm queries over the scaled catalog: timed runs, the same over the real entries alone,
    without stage 0 and without the cached listing, then one pass under tracemalloc for
    per-stage peaks."""
    import tracemalloc

    from registry import index as index_mod
    from vdnacli import search

    cat = Catalog(spec["root"])
    K, queries, reps = spec["top"], spec["queries"], spec["repeat"]
    out = {"rss_start": peak_rss_bytes(), "modes": {}}

    def run(mode, reps=reps, cat=cat):
        res = {}
        for qn in queries:
            runs = []
            for _ in range(reps):
                st: dict = {}
                t0 = time.perf_counter()
                r, skipped = cat.nearest(qn, top=K, stats=st)
                runs.append(dict(total_s=time.perf_counter() - t0, stats=st))
            res[qn] = dict(results=[[n, float(d)] for n, d in r], skipped=skipped, runs=runs)
        out["modes"][mode] = res

    st: dict = {}
    t0 = time.perf_counter()
    r, _ = cat.nearest(queries[0], top=K, stats=st)  # cold: builds the listing and the real entries' rows
    out["cold"] = dict(total_s=time.perf_counter() - t0, stats=st, results=[[n, float(d)] for n, d in r])
    run("warm")
    out["rss_warm"] = peak_rss_bytes()
    # the same queries over a registry of the real entries alone (copies: a hard link would
    # change the originals' ctime, hence their stamps): what the other entries add to a query
    small = Path(spec["small"])
    Catalog(small)
    for n in cat.names():
        if not SYNTHETIC.match(n):
            shutil.copyfile(cat.registry.entries_dir / f"{n}.h5", small / "entries" / f"{n}.h5")
    small_cat = Catalog(small)
    small_cat.nearest(queries[0], top=K)  # builds its index
    run("real-only", cat=small_cat)
    expand = search._EXPAND
    search._EXPAND = 10**12  # stage 0 off: stage 1 reads every mean row (the previous design)
    run("no-stage0", reps=1)
    search._EXPAND = expand
    racy = index_mod._RACY_NS
    index_mod._RACY_NS = 10**30  # never cache the listing: every query lists and stats every entry
    (Path(spec["root"]) / "index" / "listing.h5").unlink(missing_ok=True)
    run("no-listing-cache", reps=1)
    index_mod._RACY_NS = racy
    tracemalloc.start()
    peaks = {}
    for qn in queries:
        st = {}
        cat.nearest(qn, top=K, stats=st)
        for k, v in st.get("peak_bytes", {}).items():
            peaks[k] = max(peaks.get(k, 0), v)
    tracemalloc.stop()
    out["peak_bytes"] = peaks
    out["rss_peak"] = peak_rss_bytes()
    return out


def worker_subset(spec: dict) -> dict:
    """Brute force over the real entries only (the subset check)."""
    cat = Catalog(spec["root"])
    real = [n for n in cat.names() if not SYNTHETIC.match(n)]
    out = {"queries": {}}
    for qn in spec["queries"]:
        t0 = time.perf_counter()
        r, skipped = cat.nearest(qn, top=spec["top"], exact=True, candidates=real)
        out["queries"][qn] = dict(results=[[n, float(d)] for n, d in r], skipped=skipped, s=time.perf_counter() - t0)
    out["rss_peak"] = peak_rss_bytes()
    return out


STAGES = ("listing", "compat", "index", "query", "stage0", "stage1", "stage2", "stage3", "verify")


def report_scale(args, params, m, build, info, sc, sub) -> int:
    queries = list(sub["queries"])
    E, S, N, B = params["entries"], args.scale, params["neurons"], params["bins"]
    status = 0
    rows_q = []
    for qn in queries:
        a, b = sc["modes"]["warm"][qn], sub["queries"][qn]
        same = a["results"] == b["results"] and not any(SYNTHETIC.match(n) for n in a["skipped"])
        same = same and all(sc["modes"][k][qn]["results"] == b["results"] for k in sc["modes"])
        rows_q.append((qn, a, b, same))
    ok = all(r[3] for r in rows_q) and sc["cold"]["results"] == sub["queries"][queries[0]]["results"]
    status = 0 if ok else 1

    def mean_total(mode):
        return float(np.mean([x["total_s"] for q in queries for x in sc["modes"][mode][q]["runs"]]))

    def mean_stage(mode, k):
        return float(np.mean([x["stats"].get("seconds", {}).get(k, 0.0) for q in queries for x in sc["modes"][mode][q]["runs"]]))

    def mean_count(k):
        return float(np.mean([x["stats"].get(k, 0) for q in queries for x in sc["modes"]["warm"][q]["runs"]]))

    G = info["groups"]
    rows = [
        ("machine", f"{m['model'] or m['processor']}, {m['cpus']} CPUs, {gb(m['mem'])} RAM, load avg at start "
                    f"{m['load'][0]:.2f}"),
        ("catalog", f"{S:,} entries: {E} real ({params['families']} families of {E // params['families']}) + "
                    f"{info['synthetic']:,} sketch-only ({info['families']:,} further families of {info['per_family']}); "
                    f"N={N:,} neurons ({params['layers']} layers), B={B} bins"),
        ("queries", f"Q={len(queries)} real entries, K={args.top}, {args.repeat} warm runs each"),
        ("setup of the sketch-only entries", f"{info['setup_s']:.0f} s (index segment {human(info['segment_bytes'])})"),
        ("first query (lists + stats every entry, builds the real rows)", f"{sc['cold']['total_s']:.2f} s"),
        ("**nearest, warm (stage 0 on, cached listing)**", f"**{mean_total('warm'):.3f} s/query**"),
        (f"same queries, registry of the {E} real entries alone", f"{mean_total('real-only'):.3f} s/query"),
        ("same, stage 0 off (stage 1 reads every mean row; 1 run per query)", f"{mean_total('no-stage0'):.3f} s/query"),
        ("same, listing not cached (every entry stat'ed; 1 run per query)", f"{mean_total('no-listing-cache'):.3f} s/query"),
        ("answers identical to brute force over the real entries", "yes" if ok else "NO"),
        ("brute force over the real entries only", f"{np.mean([sub['queries'][q]['s'] for q in queries]):.1f} s/query"),
        ("rows per query: stage 0 / stage 1 / quantile reads / exact / abandoned",
         " / ".join(f"{mean_count(k):g}" for k in ("stage0", "stage1", "quantile_reads", "exact", "abandoned"))),
        ("peak RSS of the query process", f"{gb(sc['rss_peak'])} (after imports {gb(sc['rss_start'])})"),
        (f"bytes/entry: group sums (4 x {G} groups of <= {GROUP} neurons)", human(4 * G)),
        ("bytes/entry: neuron means (4 x N)", human(4 * N)),
        (f"bytes/entry: quantiles (2 x {QUANTILES + 1} x N)", human(2 * (QUANTILES + 1) * N)),
        ("bytes/entry: full histograms (8 x N x B, in memory)", human(8 * N * B)),
    ]
    print()
    print(table(rows))
    print()
    print(f"| stage | warm s/query | {E} real entries alone | stage 0 off | listing not cached | "
          "peak traced allocations |")
    print("|---|---|---|---|---|---|")
    for k in STAGES:
        print(f"| {k} | {mean_stage('warm', k):.4f} | {mean_stage('real-only', k):.4f} | "
              f"{mean_stage('no-stage0', k):.4f} | {mean_stage('no-listing-cache', k):.4f} | "
              f"{human(sc['peak_bytes'].get(k, 0))} |")
    print()
    print("| query | warm s (mean) | stage 0 off s | brute (real subset) s | identical | top-K (name: EMD) |")
    print("|---|---|---|---|---|---|")
    for qn, a, b, same in rows_q:
        t = np.mean([x["total_s"] for x in a["runs"]])
        t0 = np.mean([x["total_s"] for x in sc["modes"]["no-stage0"][qn]["runs"]])
        top = ", ".join(f"{n}: {d:.3f}" for n, d in a["results"])
        print(f"| {qn} | {t:.3f} | {t0:.3f} | {b['s']:.1f} | {'yes' if same else 'NO'} | {top} |")
    if not ok:
        for qn, a, b, same in rows_q:
            if not same:
                syn = [n for n in a["skipped"] if SYNTHETIC.match(n)]
                log(f"MISMATCH {qn}: sketch {a['results']} ({len(syn)} sketch-only entries reached the exact stage)"
                    f"\n          brute  {b['results']}")
    return status


def run_worker(kind: str, spec: dict, workdir: Path) -> dict:
    spec_path = workdir / f"spec-{kind}.json"
    res_path = workdir / f"result-{kind}.json"
    spec = dict(spec, result=str(res_path))
    spec_path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", kind, "--_spec", str(spec_path)],
                   check=True)
    res = json.loads(res_path.read_text())
    res["wall_s"] = time.perf_counter() - t0
    return res


# -- report -----------------------------------------------------------------------------------
def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(processor=platform.processor(), model=model, cpus=os.cpu_count(),
                mem=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
                python=platform.python_version(), numpy=np.__version__, load=os.getloadavg())


def table(rows: list[tuple[str, str]]) -> str:
    out = ["| measure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)


def main_bench(args) -> int:
    m = machine()
    params = dict(entries=args.entries, neurons=args.neurons, layers=args.layers, bins=args.bins,
                  families=args.families, counts=args.counts, seed=args.seed)
    base = Path(args.workdir)
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vdna-bench-", dir=base))
    own_catalog = args.catalog is None
    root = workdir / "catalog" if own_catalog else Path(args.catalog).expanduser().resolve()
    status = 0
    try:
        if not own_catalog and (root / PARAMS_FILE).exists():
            old = json.loads((root / PARAMS_FILE).read_text())
            if any(old.get(k) != params[k] for k in GEN_KEYS):
                log(f"[build] {root} was built with {old}; using its generation settings, not the command line's")
                params.update({k: old[k] for k in GEN_KEYS})
            if old.get("entries", 0) > params["entries"]:
                log(f"[build] {root} holds {old['entries']} entries (> --entries): all of them are searched")
                params["entries"] = old["entries"]
        elif not own_catalog and root.exists() and any(root.iterdir()):
            log(f"error: {root} exists and is not a catalog built by this script")
            return 2
        build = build_catalog(args, params, root)
        if build["aborted"]:
            print(table([
                ("machine", f"{m['model'] or m['processor']}, {m['cpus']} CPUs, {gb(m['mem'])} RAM"),
                ("requested", f"E={params['entries']}, N={params['neurons']:,}, B={params['bins']}, Q={args.queries}"),
                ("build, probe", f"{build['per_entry_s']:.2f} s/entry (--jobs {args.jobs})"),
                ("build, projected", f"{build['projected_build_s'] / 60:.1f} min"),
                ("brute force, probe", f"{build['per_cmp_s']:.2f} s per entry compared"),
                ("brute force, projected", f"{build['projected_brute_s'] / 60:.1f} min for {args.queries} queries"),
                ("fits --budget-minutes", f"about --entries {build['fit_entries']}"),
            ]))
            return 3
        gen = Generator(params)
        E = params["entries"]
        cat = Catalog(root)
        qidx = sorted({int(round(x)) for x in np.linspace(0, E - 1, min(args.queries, E))})
        queries = [gen.name(i) for i in qidx]
        spec = dict(root=str(root), top=args.top, queries=queries, repeat=args.repeat)
        if args.scale:
            info = setup_scale(args, params, root)
            log(f"[scale] queries over {args.scale:,} entries (cold, warm, stage 0 off, listing not cached, tracemalloc)")
            sc = run_worker("scale", dict(spec, small=str(workdir / "real-only")), workdir)
            log(f"[scale] brute force over the {E} real entries")
            sub = run_worker("subset", spec, workdir)
            if args.json:
                Path(args.json).write_text(json.dumps(dict(params=params, build=build, info=info, scale=sc, subset=sub,
                                                           machine=m), indent=1))
            return report_scale(args, params, m, build, info, sc, sub)
        names = cat.names()
        sizes = [cat.registry.file_size(n) for n in names]
        log("[query] sketch path: first query on a deleted side index (cold: builds it)")
        cold = run_worker("cold", dict(spec, mode="cold"), workdir)
        log(f"[query] sketch path on {len(queries)} queries ({args.repeat} warm runs each)")
        sk = run_worker("sketch", dict(spec, mode="sketch"), workdir)
        log(f"[query] brute force on {len(queries)} queries")
        br = run_worker("brute", dict(spec, mode="brute"), workdir)
        scan = None
        if args.scan_entries > 0:
            log(f"[scan] first-stage scan of {args.scan_entries} mean sketches x {params['neurons']} neurons")
            scan_dir = workdir / "scan-registry"
            try:
                scan = run_worker("scan", dict(scan_entries=args.scan_entries, neurons=params["neurons"],
                                               families=params["families"], seed=params["seed"], repeat=args.repeat,
                                               dir=str(scan_dir)), workdir)
            except subprocess.CalledProcessError as e:  # report the query results anyway
                log(f"[scan] FAILED: {e}")
                scan, status = {"error": str(e)}, 1
            shutil.rmtree(scan_dir, ignore_errors=True)
        if args.json:
            Path(args.json).write_text(json.dumps(dict(params=params, build=build, cold=cold, sketch=sk, brute=br, scan=scan,
                                                       machine=m), indent=1))

        # -- compare and report ---------------------------------------------------------
        per_q, mismatches = [], []
        for qn in queries:
            a, b = sk["queries"][qn], br["queries"][qn]
            same_names = [n for n, _ in a["results"]] == [n for n, _ in b["results"]]
            diff = max((abs(x - y) for (_, x), (_, y) in zip(a["results"], b["results"])), default=0.0)
            same = same_names and diff == 0.0 and a["skipped"] == b["skipped"]
            if not same:
                mismatches.append((qn, a["results"], b["results"], a["skipped"], b["skipped"]))
            per_q.append((qn, float(np.mean(a["times"])), b["times"][0], a["stats"], same, a["results"]))
        if cold["cold_results"] != br["queries"][queries[0]]["results"]:
            mismatches.append((queries[0] + " (cold)", cold["cold_results"], br["queries"][queries[0]]["results"], [], []))
        sk_mean = float(np.mean([t for _, t, *_ in per_q]))
        br_mean = float(np.mean([t for _, _, t, *_ in per_q]))
        q0 = queries[0]
        warm_q0 = float(np.mean(sk["queries"][q0]["times"]))
        N, B = params["neurons"], params["bins"]
        idx_total = sum(cold["index_bytes"].values())
        sketch_idx = sum(v for k, v in cold["index_bytes"].items() if k.startswith("sketch"))
        counts = [k for k, v in per_q[0][3].items() if isinstance(v, int) and not isinstance(v, bool)]
        mean_stats = {k: float(np.mean([s[k] for _, _, _, s, _, _ in per_q])) for k in counts}
        rows = [
            ("machine", f"processor()={m['processor']!r}, {m['model']}, {m['cpus']} CPUs (os.cpu_count), "
                        f"{gb(m['mem'])} RAM, load avg at start {m['load'][0]:.2f}"),
            ("software", f"Python {m['python']}, NumPy {m['numpy']}"),
            ("catalog", f"E={E} entries ({params['families']} families), N={N:,} neurons "
                        f"({params['layers']} layers), B={B} bins, ~{params['counts']:,} counts/neuron"),
            ("build (generation)", f"{build['gen_s']:.1f} s CPU-sum for {build['built']} entries "
                                   f"({build['gen_s'] / max(build['built'], 1):.2f} s/entry)"
                                   if build["built"] else f"reused ({build['reused']} entries)"),
            ("build (Catalog.put: sketch + gzip + fsync)",
             f"{build['put_s']:.1f} s CPU-sum ({build['put_s'] / max(build['built'], 1):.2f} s/entry)"
             if build["built"] else "reused"),
            ("build (wall)", f"{build['wall_s']:.1f} s with --jobs {args.jobs}" if build["built"] else "reused"),
            ("probe projections (this E)", f"build {build['projected_build_s'] / 60:.1f} min, brute force "
                                           f"{build['projected_brute_s'] / 60:.1f} min"
                                           if build.get("projected_build_s") is not None else "-"),
            ("queries", f"Q={len(queries)}, K={args.top}; sketch warm runs: {args.repeat} per query"),
            ("sketch: first (cold) query incl. side-index build", f"{cold['cold_s']:.2f} s, "
                                                                   f"peak RSS {gb(cold['rss_peak'])}"),
            ("sketch: side-index build (cold - warm, query 1)", f"{cold['cold_s'] - warm_q0:.2f} s "
                                                                 f"({(cold['cold_s'] - warm_q0) / E * 1e3:.1f} ms/entry)"),
            ("sketch nearest, mean warm", f"{sk_mean:.3f} s/query"),
            ("brute force (exact=True), mean", f"{br_mean:.3f} s/query"),
            ("speed-up (brute / sketch)", f"{br_mean / sk_mean:.1f}x"),
            ("results identical (Q warm + 1 cold)", "yes" if not mismatches else f"NO ({len(mismatches)} of {len(queries) + 1} runs differ)"),
            ("stats (mean per query)", ", ".join(f"{k}={v:g}" for k, v in mean_stats.items())),
            ("peak RSS, sketch subprocess (warm queries)", f"{gb(sk['rss_peak'])} (after imports: {gb(sk['rss_start'])})"),
            ("peak RSS, brute subprocess", f"{gb(br['rss_peak'])} (after imports: {gb(br['rss_start'])})"),
        ]
        if scan and "error" in scan:
            rows.append(("scan", "FAILED (see stderr)"))
        elif scan:
            S = args.scan_entries
            r = {k: float(np.mean([x[k] for x in scan["runs"]])) for k in scan["runs"][0]}
            tot = r["read_s"] + r["bound_s"] + r["argsort_s"]
            rows += [
                ("scan: index", f"S={S:,} mean rows x N={N:,} (float32), file {human(scan['index_bytes'])}, "
                                f"written in {scan['write_s']:.1f} s"),
                ("scan: SideIndex.sync (stat S entry files + load index rows)", f"{r['sync_s']:.3f} s"),
                ("scan: scan_mean_bounds (index read in 1,024-row blocks + float32 bound)", f"{r['bound_s']:.3f} s"),
                ("scan: argsort", f"{r['argsort_s']:.4f} s"),
                ("scan: read + bound + argsort", f"{tot:.3f} s (mean of {len(scan['runs'])}; "
                                                  f"{tot / S * 1e6:.0f} us/entry)"),
                ("scan: peak RSS", f"{gb(scan['rss_peak'])} (before the scan: {gb(scan['rss_before_scan'])})"),
            ]
        rows += [
            ("bytes/entry: mean sketch (4*N)", human(4 * N)),
            (f"bytes/entry: quantile sketch (2*{QUANTILES + 1}*N)", human(2 * (QUANTILES + 1) * N)),
            ("bytes/entry: full histogram (8*N*B, uncompressed)", human(8 * N * B)),
            ("bytes/entry: entry file on disk (mean, gzip)", f"{human(float(np.mean(sizes)))} "
                                                             f"(total {human(float(np.sum(sizes)))})"),
            ("bytes/entry: side indexes on disk", f"{human(sketch_idx / E)} sketch index "
                                                  f"(all index files {human(idx_total)})"),
        ]
        print()
        print(table(rows))
        print()
        print("| query | sketch s (warm mean) | brute s | speed-up | candidates | quantile_reads | exact | identical | top-K (name: EMD) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for qn, ts, tb, st, same, res in per_q:
            top = ", ".join(f"{n}: {d:.3f}" for n, d in res)
            print(f"| {qn} | {ts:.3f} | {tb:.3f} | {tb / ts:.1f}x | {st.get('candidates')} | "
                  f"{st.get('quantile_reads')} | {st.get('exact')} | {'yes' if same else 'NO'} | {top} |")
        if mismatches:
            status = 1
            print("\nRESULTS DIFFER between the sketch path and brute force (details on stderr)")
            for qn, a, b, sa, sb in mismatches:
                log(f"MISMATCH {qn}: sketch {a} skipped {sa}\n          brute  {b} skipped {sb}")
        return status
    finally:
        if args.keep:
            log(f"[cleanup] kept {workdir}" + ("" if own_catalog else f" and catalog {root}"))
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--entries", type=int, default=1000, help="catalog entries E (default 1000)")
    ap.add_argument("--neurons", type=int, default=10_000, help="neurons per entry N (default 10,000)")
    ap.add_argument("--layers", type=int, default=10, help="layers the neurons are split into (default 10)")
    ap.add_argument("--bins", type=int, default=1000, help="histogram bins B (default 1000)")
    ap.add_argument("--families", type=int, default=50, help="clusters of similar entries (default 50)")
    ap.add_argument("--counts", type=int, default=5000, help="mean counts per neuron histogram (default 5000)")
    ap.add_argument("--queries", type=int, default=5, help="queries Q (default 5)")
    ap.add_argument("--top", type=int, default=5, help="K nearest (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="warm sketch runs per query and scan repeats (default 3)")
    ap.add_argument("--scan-entries", type=int, default=10_000, help="mean sketches in the first-stage scan (0: skip)")
    ap.add_argument("--catalog", help="build/reuse the catalog here (kept); default: a temp dir, deleted")
    ap.add_argument("--workdir", default=tempfile.gettempdir(), help="parent of the temp directory (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (catalog included)")
    ap.add_argument("--json", help="also write the raw measurements to this JSON file")
    ap.add_argument("--jobs", type=int, default=1, help="processes for building (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-minutes", type=float, default=15.0,
                    help="stop after the probe if build + brute force is projected longer (default 15)")
    ap.add_argument("--force", action="store_true", help="run even if over --budget-minutes")
    ap.add_argument("--scale", type=int, default=0,
                    help="catalog scale: add sketch-only entries up to this many in all (e.g. 100000); see above")
    ap.add_argument("--_worker", choices=["cold", "sketch", "brute", "scan", "scale", "subset"], help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        spec = json.loads(Path(args._spec).read_text())
        res = {"scan": worker_scan, "scale": worker_scale, "subset": worker_subset}.get(args._worker, worker_queries)(spec)
        Path(spec["result"]).write_text(json.dumps(res))
        return 0
    if args.entries < 2 or args.neurons < 1 or args.queries < 1 or args.top < 1 or args.repeat < 1:
        log("error: need --entries >= 2 and positive --neurons, --queries, --top, --repeat")
        return 2
    if args.scale and args.scale <= args.entries:
        log("error: --scale must exceed --entries (the real entries)")
        return 2
    if args.scale and args.top >= args.entries // args.families - 1:
        log("error: with --scale, --top must be below the family size minus one (--entries / --families - 1): "
            "a query's K nearest must be its own family's real entries for the subset check to mean anything")
        return 2
    return main_bench(args)


if __name__ == "__main__":
    sys.exit(main())
