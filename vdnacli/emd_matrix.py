"""All pairwise EMDs of catalog entries (`vdna matrix`): blocked, threaded, and equal to
`compare` of every pair to the last bit.

Pairwise `compare` loads every DNA whole (int64: 80 MB per entry at 10^4 neurons x 1000
bins) and, for each of the N(N-1)/2 pairs, accumulates and normalises both histograms
again. Here the work is arranged by layer and by chunks of a few neurons:

  * each entry's layer is read once per pass (as stored, uint16 mostly), its cumulative
    distribution computed once per chunk of rows (int64 cumsum, one division), for all
    entries at once: an entry's CDF is computed once, not once per pair;
  * the pairs of a chunk are split over threads (numpy's subtract, abs and sum release the
    GIL), each working through tiles of entries small enough to stay in cache;
  * every pair's per-neuron EMDs land in one row of a float64 table, in selection order,
    and the pair's distance is that row's mean (or weighted sum), the same float64
    operations in the same order as `distances.emd_rows` and `distances.weighted`, so
    each value is bit-identical to `compare(...).distance`;
  * the table is bounded (`memory`): when all pairs do not fit, the rows of the matrix are
    done in blocks, each block reading the entries it needs again.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping

import numpy as np

from vdnacli.distances import make_selection
from vdnacli.dna import DNA, check_compatible, current_meta, must_match
from vdnacli.errors import ConfigError, FormatError, IncompatibleDNAError
from vdnacli.integrity import meta_problem

_CHUNK_BYTES = 1 << 16  # one entry's CDF rows per chunk (float64): 8 rows at 1000 bins
_TILE_BYTES = 1 << 19  # one thread's difference buffer: a few entries' chunks, in L2
DEFAULT_MEMORY = 2 << 30  # bytes of per-neuron pair distances held at once (200 entries x 10^4 neurons: 1.6 GB)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


def _light_dna(name: str, meta: dict) -> DNA:
    """A DNA of metadata only, for the checks `compare` makes before reading any array."""
    if (bad := meta_problem(meta)) is not None:
        raise FormatError(f"entry '{name}': {bad}; run 'vdna verify'")
    meta = dict(current_meta(meta), name=name)  # as catalog.get reads it (a renamed extractor's current name)
    return DNA(meta=meta, hist={} if "hist" in meta.get("kinds", []) else None)


def _check_all(dnas: list[DNA]) -> None:
    """Raise what `compare` would raise for the first incompatible pair (in row order):
    every distinct set of compatibility fields is checked against every other."""
    seen: dict = {}
    for d in dnas:
        d.require("hist")
        sig = tuple(str(d.meta.get(k)) for k in must_match("hist"))
        seen.setdefault(sig, d)
    reps = list(seen.values())
    for i, a in enumerate(reps):
        for b in reps[i + 1 :]:
            check_compatible(a, b, "hist")


def _layer_counts(catalog, name: str, layer: str, shape: tuple[int, int], idx) -> np.ndarray:
    """One layer of one entry as stored, validated as `dna.from_arrays` does, rows selected."""
    with catalog.registry.open(name) as entry:
        h = entry.array(f"hist/{layer}")
    if h.dtype.kind not in "iu" or h.shape != shape:
        raise FormatError(f"entry '{name}': histogram of layer {layer!r} is missing or not an integer "
                          f"[{shape[0]}, {shape[1]}] array")
    if h.size and h.dtype.kind == "i" and h.min() < 0:
        raise FormatError(f"entry '{name}': histogram of layer {layer!r} has negative counts")
    return h if idx is None else h[idx]


def _cdfs(counts: list[np.ndarray], a: int, b: int, out: np.ndarray) -> np.ndarray:
    """out[e] = the normalised cumulative counts of rows a:b of entry e, as emd_rows makes them."""
    for e, h in enumerate(counts):
        cum = np.cumsum(h[a:b], axis=-1, dtype=np.int64)
        total = cum[:, -1:].astype(np.float64)  # = h.sum(dtype=float64): exact integers below 2^53
        if (total == 0).any():
            raise IncompatibleDNAError("a histogram has no counts: its EMD is undefined")
        np.divide(cum, total, out=out[e])
    return out[: len(counts)]


def emd_matrix(catalog, names: list[str], layers=None, neurons=None,
               weights: Mapping[str, np.ndarray] | None = None, workers: int | None = None,
               memory: int = DEFAULT_MEMORY, progress=None) -> np.ndarray:
    """The symmetric matrix of EMD distances (EMD_avg, or EMD_W with `weights`) between
    `names`, each value equal to `catalog.compare(a, b, "emd", ...)`'s distance.
    `progress(pairs done, pairs in all)`: called after each slice of neurons of each block of
    rows (a pair counts as done in proportion to the neurons compared)."""
    E = len(names)
    dnas = [_light_dna(n, catalog.registry.meta(n)) for n in names]
    out = np.zeros((E, E))
    if E < 2:
        for n in names:  # nothing to compare, but the entry is still read and checked, as compare would
            catalog.get(n, ["hist"])
        return out
    _check_all(dnas)
    shape = dnas[0].layers
    bins = int(dnas[0].meta["bins"])
    sel = make_selection(shape, layers, neurons)
    sizes = [shape[l] if idx is None else len(idx) for l, idx in sel.items()]
    n_sel = int(sum(sizes))
    if n_sel == 0:
        raise ConfigError("no neurons selected")
    w = None
    if weights is not None:
        w = np.concatenate([np.asarray(weights[l], dtype=np.float64).ravel() for l in sel])
        if w.shape != (n_sel,):
            raise ConfigError("weights do not match the selected neurons")

    workers = default_workers() if workers is None else max(1, int(workers))
    rows_per_chunk = max(1, _CHUNK_BYTES // (8 * bins))
    tile = max(1, _TILE_BYTES // (8 * bins * rows_per_chunk))
    first_pair = np.concatenate([[0], np.cumsum(np.arange(E - 1, 0, -1))])  # pairs (i, j > i) before row i

    pairs = E * (E - 1) // 2
    if progress is not None:
        progress(0, pairs)
    with ThreadPoolExecutor(workers) as pool:
        i0 = 0
        while i0 < E - 1:
            # rows i0..i1-1 of the matrix: as many as the pair table allows (at least one)
            i1 = i0 + 1
            while i1 < E - 1 and (first_pair[i1 + 1] - first_pair[i0]) * n_sel * 8 <= memory:
                i1 += 1
            table = np.empty((int(first_pair[i1] - first_pair[i0]), n_sel))
            base = int(first_pair[i0])
            col = 0
            for (layer, idx), size in zip(sel.items(), sizes):
                counts = [_layer_counts(catalog, names[e], layer, (shape[layer], bins), idx) for e in range(i0, E)]
                cdf_buf = np.empty((E - i0, rows_per_chunk, bins))
                for a in range(0, size, rows_per_chunk):
                    b = min(a + rows_per_chunk, size)
                    cdf = _cdfs(counts, a, b, cdf_buf[:, : b - a])

                    def row_task(rows, cdf=cdf, a=a, b=b, col=col):
                        c = b - a
                        buf = np.empty((tile, c, bins))
                        sums = np.empty(tile * c)
                        for i in rows:
                            ci = cdf[i - i0]
                            dst = int(first_pair[i]) - base + (i0 - i) - 1  # + j: the table row of pair (i, j)
                            for j0 in range(i + 1, E, tile):
                                m = min(tile, E - j0)
                                t = buf[:m]
                                np.subtract(cdf[j0 - i0 : j0 - i0 + m], ci, out=t)
                                np.abs(t, out=t)
                                # [(pair, neuron), bins] rows, each reduced over its bins as emd_rows does
                                t.reshape(m * c, bins).sum(axis=-1, out=sums[: m * c])
                                table[dst + j0 - i0 : dst + j0 - i0 + m, col + a : col + b] = sums[: m * c].reshape(m, c)

                    # deal the rows round-robin: row i has E - 1 - i pairs, so each worker gets a fair share
                    list(pool.map(row_task, [range(i0 + k, i1, workers) for k in range(min(workers, i1 - i0))]))
                    if progress is not None:
                        block = int(first_pair[i1] - first_pair[i0])
                        progress(base + block * (col + b) // n_sel, pairs)
                col += size
                del counts
            for i in range(i0, i1):
                for j in range(i + 1, E):
                    d = table[int(first_pair[i]) - base + j - i - 1]  # 1-D and contiguous, as weighted() sees it
                    out[i, j] = out[j, i] = float(d.mean()) if w is None else float((w * d).sum())
            del table
            i0 = i1
    return out
