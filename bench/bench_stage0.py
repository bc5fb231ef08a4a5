"""Benchmark: which stage 0 prunes more — group sums of the neuron means, or clustering of
the mean vectors with the triangle inequality — on two shapes of catalog.

Entries are mean vectors only (the stage-0 question needs nothing else), drawn from
bench_nearest.py's generative model: a family centre per neuron, a per-entry and a global
shift, a family-dependent spike weight, the sampling noise of ~5,000 values per neuron.
  clustered:  F = 50 families of E/50 entries (few, large families)
  spread:     F = E/20 families of 20 entries (every entry has 19 relatives; the rest is far)
For each of Q queries, the threshold is the K-th smallest exact mean-vector distance (L1,
averaged over neurons) x 1.07 — a stand-in for the K-th smallest EMD, which is 6-9 % above
it on this model's histograms — and the table counts the entries whose stage-0 bound does
not exceed it (they go on to stage 1), and the bytes read per query.
  groups g:   sum_g |S_q,g - S_e,g| / N (vdnacli.sketch.group_bound, groups of <= g neurons)
  k-means C:  Lloyd's k-means (L2, C = sqrt(E) centres); bound D(q, c) - D(c, e) per entry,
              and D(q, c) - max_e D(c, e) per cluster (whole clusters skipped)

Run:  python bench/bench_stage0.py            (E=10,000, N=10,000: ~2 min, 2 GB)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vdnacli.sketch import group_bound, group_starts, group_sums, group_weights  # noqa: E402


def means_model(E: int, F: int, N: int, B: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.25 * B, 0.75 * B, N)
    spiky = rng.random(N) < 0.3
    per = E // F
    M = np.empty((F * per, N), dtype=np.float32)
    for f in range(F):
        r = np.random.default_rng([seed, 3, f])
        centre = base + r.normal(0, 0.04 * B, N)
        w = np.where(spiky, r.uniform(0.1, 0.5, N), 0.0)
        sd = r.uniform(0.015 * B, 0.06 * B, N)
        for k in range(per):
            mu = centre + r.normal(0, 0.004 * B, N) + r.normal(0, 0.002 * B)
            M[f * per + k] = (1 - w) * mu + w * (B / 2) + r.normal(0, 1, N) * sd / np.sqrt(5000)
    return M, np.repeat(np.arange(F), per)


def kmeans(M: np.ndarray, C: int, iters: int, rng) -> tuple[np.ndarray, np.ndarray]:
    cent = M[rng.choice(len(M), C, replace=False)].astype(np.float64)
    sq = (M.astype(np.float64) ** 2).sum(1)
    for _ in range(iters):
        d2 = sq[:, None] - 2 * (M @ cent.T.astype(np.float32)) + (cent ** 2).sum(1)[None]
        a = d2.argmin(1)
        for c in range(C):
            if (a == c).any():
                cent[c] = M[a == c].mean(0)
    return cent.astype(np.float32), a


def run(name: str, E: int, F: int, N: int, B: int, K: int, Q: int, seed: int) -> list[tuple[str, str]]:
    t0 = time.perf_counter()
    M, _ = means_model(E, F, N, B, seed)
    E = len(M)
    rng = np.random.default_rng(seed + 1)
    queries = rng.choice(E, Q, replace=False)
    thresholds = []
    for q in queries:
        d = np.abs(M - M[q]).mean(1)
        d[q] = np.inf
        thresholds.append(np.sort(d)[K - 1] * 1.07)
    rows = []
    w = np.full(N, 1.0 / N)
    for g in (8, 16, 32, 64, 128):
        starts = group_starts([N], size=g)
        S = group_sums(M, starts)
        mg = group_weights(w, starts)
        kept = [int(((group_bound(S[q], S, mg) <= thr).sum()) - 1) for q, thr in zip(queries, thresholds)]
        rows.append((f"groups of {g} neurons ({starts.size} per entry)",
                     f"{np.mean(kept):.0f} of {E - 1}", f"{E * starts.size * 4 / 1e6:.1f} MB"))
    C = int(np.sqrt(E))
    cent, a = kmeans(M, C, 6, rng)
    r = np.abs(M - cent[a]).mean(1)
    rmax = np.array([r[a == c].max() if (a == c).any() else 0.0 for c in range(C)])
    kept_e, kept_c = [], []
    for q, thr in zip(queries, thresholds):
        dqc = np.abs(cent - M[q]).mean(1)
        ok_c = dqc - rmax <= thr
        kept_c.append(int(ok_c.sum()))
        kept_e.append(int(((dqc[a] - r <= thr) & ok_c[a]).sum()) - 1)
    members = float(np.mean([(a == c).sum() for c in range(C)]))
    rows.append((f"k-means, {C} centres: clusters kept", f"{np.mean(kept_c):.1f} of {C}",
                 f"{C * N * 4 / 1e6:.1f} MB + {np.mean(kept_c) * members * 8 / 1e3:.0f} KB"))
    rows.append((f"k-means, {C} centres: entries kept", f"{np.mean(kept_e):.0f} of {E - 1}", ""))
    print(f"\n{name}: E={E}, F={F} families of {E // F}, N={N:,}, K={K}, Q={Q} ({time.perf_counter() - t0:.0f} s)\n")
    print("| stage 0 | entries left for stage 1 (mean) | read per query |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--neurons", type=int, default=10_000)
    ap.add_argument("--bins", type=int, default=1000)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    E = args.entries
    run("clustered", E, 50, args.neurons, args.bins, args.top, args.queries, args.seed)
    run("spread", E, max(1, E // 20), args.neurons, args.bins, args.top, args.queries, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
