"""Clustering for `vdna matrix --plot` (and the report): before and after, side by side.

  python bench/bench_clustering.py [--sizes 50 100 150 200] [--repeat 3] [--render]

before:   the hand-written average linkage that plots.py carried until issue 16 (kept here
          verbatim as `handwritten_order`: a Python double loop over cluster pairs per merge,
          each pair's mean by fancy indexing; cubic or worse)
after:    vdnacli.clustering.cluster: scipy's average linkage + optimal leaf ordering (what the
          `plot` extra installs), the one implementation the PNG and the HTML report share
fallback: vdnacli.clustering.upgma_order: the same clustering in numpy, for installs without scipy
          (the report needs no extra)
--render: also the time to draw and write the whole PNG (matplotlib, Agg) at each size.

Input: n points in 12 well-separated families (Euclidean distances), the same matrix for every
implementation; the best of --repeat runs is reported (the hand-written one runs once above 100).
All three orders are checked to be clusterings of the same families.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vdnacli.clustering import cluster, upgma_order  # noqa: E402


def handwritten_order(m: np.ndarray) -> list[int]:
    """plots.cluster_order before issue 16 (verbatim): average linkage, leaves in merge order."""
    clusters = {i: [i] for i in range(len(m))}
    while len(clusters) > 1:
        keys = list(clusters)
        best = None
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                d = m[np.ix_(clusters[a], clusters[b])].mean()
                if best is None or d < best[0]:
                    best = (d, a, b)
        _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)
    return next(iter(clusters.values())) if clusters else []


def matrix(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fam = rng.integers(0, 12, n)
    pts = fam[:, None] * 20.0 + rng.normal(size=(n, 4))
    return np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)), fam


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def runs(order, fam) -> int:
    return 1 + sum(fam[a] != fam[b] for a, b in zip(order, order[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 150, 200])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    import numpy
    import scipy

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}")
    head = "| entries | before: hand-written (s) | after: scipy + optimal leaf order (s) | numpy fallback (s) | before / after |"
    if args.render:
        head += " whole PNG (s) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n in args.sizes:
        m, fam = matrix(n)
        families = len(set(fam))
        t_before, o_before = best_of(lambda: handwritten_order(m), args.repeat if n <= 100 else 1)
        t_after, c = best_of(lambda: cluster(m), args.repeat)
        t_fallback, o_fallback = best_of(lambda: upgma_order(m), args.repeat)
        for order in (o_before, c.order, o_fallback):
            assert sorted(order) == list(range(n)) and runs(order, fam) == families, "a family was split"
        row = f"| {n} | {t_before:.3f} | {t_after:.4f} | {t_fallback:.4f} | {t_before / t_after:.0f}x |"
        if args.render:
            from vdnacli.plots import matrix_figure

            names = [f"entry-{i:03d}-family-{f}" for i, f in enumerate(fam)]
            with tempfile.TemporaryDirectory() as d:
                t_png, _ = best_of(lambda: matrix_figure(names, m, "emd", Path(d) / "m.png"), 1)
            row += f" {t_png:.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
