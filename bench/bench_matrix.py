"""Benchmark: `Catalog.matrix` (EMD) by the blocked, threaded path vs pairwise `compare`.

Measures, side by side in one run, on a catalog built by bench_nearest.py's generator
(clustered synthetic histograms, N neurons x B bins; built here if --catalog is empty):
  1. before: the previous implementation (every DNA loaded whole as int64, then
     `compare` for each pair) on a subset of S entries, since at 10^4 neurons x 1000 bins
     it needs 80 MB per entry in memory (16 GB for 200); its time per pair is projected
     to all pairs;
  2. after: `Catalog.matrix` on the same subset with 1 worker and with the default (one
     per core; identical values required, bit for bit), and on all E entries;
  3. a spot check of P random pairs of the full matrix against `compare`.
Each measurement runs in its own subprocess (isolated peak RSS).

Quick run:    python bench/bench_matrix.py --entries 20 --neurons 1000 --subset 6
Default run:  python bench/bench_matrix.py --catalog DIR   (E=200, N=10,000, B=1000, S=12)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

from bench_nearest import PARAMS_FILE, build_catalog, gb, log, machine, peak_rss_bytes, table  # noqa: E402


def worker(spec: dict) -> dict:
    from vdnacli.catalog import Catalog
    from vdnacli.distances import compare, make_selection

    cat = Catalog(spec["root"])
    names, layers = spec["names"], spec["layers"]
    out = {"rss_start": peak_rss_bytes()}
    t0 = time.perf_counter()
    if spec["mode"] == "before":  # the previous Catalog.matrix, verbatim
        dnas = [cat.get(n, ["hist"]) for n in names]
        sel = make_selection(dnas[0].layers, layers, None)
        m = np.zeros((len(names), len(names)))
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                m[i, j] = m[j, i] = compare(dnas[i], dnas[j], "emd", sel).distance
    elif spec["mode"] == "spot":
        rng = np.random.default_rng(0)
        full = np.load(spec["matrix"])
        checked = 0
        for _ in range(spec["spot"]):
            i, j = rng.choice(len(names), 2, replace=False)
            d = cat.compare(names[i], names[j], "emd", layers).distance
            if d != full[i, j]:
                raise SystemExit(f"MISMATCH ({names[i]}, {names[j]}): compare {d!r} vs matrix {full[i, j]!r}")
            checked += 1
        out["checked"] = checked
        m = None
    else:
        m = cat.matrix(names, "emd", layers, workers=spec["workers"])
    out["s"] = time.perf_counter() - t0
    out["rss_peak"] = peak_rss_bytes()
    if m is not None:
        np.save(spec["out"], m)
    return out


def run(kind: str, spec: dict, workdir: Path) -> dict:
    spec = dict(spec, mode=kind, out=str(workdir / f"{kind}-{spec.get('tag', '')}.npy"))
    path = workdir / f"spec-{kind}-{spec.get('tag', '')}.json"
    path.write_text(json.dumps(spec))
    res_path = path.with_suffix(".result.json")
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", str(path), str(res_path)], check=True)
    res = json.loads(res_path.read_text())
    res["matrix"] = spec["out"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--catalog", help="catalog built by bench_nearest.py (or built here if missing)")
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--neurons", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--bins", type=int, default=1000)
    ap.add_argument("--families", type=int, default=10)
    ap.add_argument("--counts", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="processes for building")
    ap.add_argument("--subset", type=int, default=12, help="entries of the before/after side-by-side (S)")
    ap.add_argument("--select", help="comma-separated layers to compare (default: all)")
    ap.add_argument("--spot", type=int, default=8, help="random pairs of the full matrix checked against compare")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (matrices, specs)")
    ap.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        spec = json.loads(Path(args._worker[0]).read_text())
        Path(args._worker[1]).write_text(json.dumps(worker(spec)))
        return 0

    from vdnacli.catalog import Catalog
    from vdnacli.emd_matrix import default_workers

    m = machine()
    workdir = Path(tempfile.mkdtemp(prefix="vdna-bench-matrix-"))
    root = Path(args.catalog) if args.catalog else workdir / "catalog"
    params = dict(entries=args.entries, neurons=args.neurons, layers=args.layers, bins=args.bins,
                  families=args.families, counts=args.counts, seed=args.seed)
    if (root / PARAMS_FILE).exists():
        params.update({k: v for k, v in json.loads((root / PARAMS_FILE).read_text()).items() if k != "entries"})
    build_catalog(argparse.Namespace(jobs=args.jobs, queries=0, budget_minutes=1e9, force=True), params, root)
    cat = Catalog(root)
    names = sorted(n for n in cat.names() if n.startswith("e"))[: args.entries]
    E, S = len(names), min(args.subset, len(names))
    layers = args.select.split(",") if args.select else None
    meta = cat.registry.meta(names[0])
    N = sum(k for l, k in meta["layers"] if layers is None or l in layers)
    B = meta["bins"]
    subset = names[:: max(1, E // S)][:S]
    W = default_workers()
    base = dict(root=str(root), layers=layers)
    log(f"[matrix] before: previous implementation on {S} entries")
    before = run("before", dict(base, names=subset, tag="subset"), workdir)
    log(f"[matrix] after: Catalog.matrix on the same {S} entries, 1 worker and {W}")
    single = run("after", dict(base, names=subset, workers=1, tag="subset1"), workdir)
    after_s = run("after", dict(base, names=subset, workers=W, tag="subset"), workdir)
    same = all(np.array_equal(np.load(before["matrix"]), np.load(r["matrix"])) for r in (single, after_s))
    log(f"[matrix] after: all {E} entries, {W} workers")
    full = run("after", dict(base, names=names, workers=W, tag="all"), workdir)
    log(f"[matrix] spot check: {args.spot} random pairs of the full matrix against compare")
    spot = run("spot", dict(base, names=names, spot=args.spot, matrix=full["matrix"], tag="spot"), workdir)

    pairs_s, pairs = S * (S - 1) // 2, E * (E - 1) // 2
    per_pair = before["s"] / pairs_s
    rows = [
        ("machine", f"{m['model'] or m['processor']}, {m['cpus']} CPUs, {gb(m['mem'])} RAM, load avg at start "
                    f"{m['load'][0]:.2f}"),
        ("catalog", f"E={E} entries, N={N:,} neurons compared, B={B} bins ({B * N * 8 / 1e6:.0f} MB of float64 "
                    f"CDF per entry)"),
        (f"before: pairwise compare, {S} entries ({pairs_s} pairs)",
         f"{before['s']:.1f} s ({per_pair * 1e3:.0f} ms/pair), peak RSS {gb(before['rss_peak'])}"),
        (f"after: Catalog.matrix, same {S} entries, 1 worker",
         f"{single['s']:.1f} s ({before['s'] / single['s']:.1f}x faster), peak RSS {gb(single['rss_peak'])}"),
        (f"after: Catalog.matrix, same {S} entries, {W} workers",
         f"{after_s['s']:.1f} s ({before['s'] / after_s['s']:.1f}x faster), peak RSS {gb(after_s['rss_peak'])}"),
        ("identical values (subset: before, 1 worker, all workers)", "yes, bit for bit" if same else "NO"),
        (f"before, projected to {E} entries ({pairs:,} pairs)",
         f"{per_pair * pairs / 60:.0f} min, {gb(B * N * 8 * E)} of DNAs in memory"),
    ]
    rows += [
        (f"**after: all {E} entries, {W} workers**",
         f"**{full['s']:.1f} s** ({per_pair * pairs / full['s']:.0f}x the projected before), "
         f"peak RSS {gb(full['rss_peak'])}"),
        ("spot check against compare", f"{spot['checked']} random pairs identical"),
    ]
    print()
    print(table(rows))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir / "catalog" if args.catalog else workdir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
