"""Exact EMD between every pair of many histogram DNAs, each value `compare()`'s to the last bit.

`Catalog.matrix` calls `compare` per pair, which re-reads and re-accumulates both DNAs every
time (~35 ms per pair for efficientnet-lite0 on a 2-core box, an hour for 500 entries). Here
each entry's normalised cumulative distribution (the float64 CDF `distances.emd_rows` builds)
is computed once per pass: a block of entries whose CDFs fit a memory budget is held, every
later entry is read once and compared against the whole block. The per-neuron values are the
same float64 operations in the same order as `emd_rows` (|x - y| = |y - x| exactly), reduced
over bins per row as there, so distances, per-layer parts and rankings agree exactly with
`compare`, `matrix` and `nearest`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from vdnacli.errors import ConfigError, FormatError, IncompatibleDNAError, VdnaError

Progress = Callable[[int, int], None]
_BLOCK_BYTES = 1 << 22  # temporaries of one vectorised step (~4 MiB)


class EntryLoadError(VdnaError):
    """One entry could not be read or compared (its name is `.name`)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"entry '{name}': {reason}")
        self.name = name


@dataclass
class PairwiseEMD:
    names: list[str]
    distance: np.ndarray  # [n, n], zero diagonal, symmetric
    per_layer: dict[str, np.ndarray]  # layer -> [n, n]: mean EMD over the layer's selected neurons
    neurons: int  # selected neurons per entry

    def nearest(self, i: int, k: int = 5) -> list[tuple[int, float]]:
        """The k closest others of entry i, ascending, ties by name (as `Catalog.nearest`)."""
        others = [j for j in range(len(self.names)) if j != i]
        others.sort(key=lambda j: (self.distance[i, j], self.names[j]))
        return [(j, float(self.distance[i, j])) for j in others[:k]]


def _cdf(hist: Mapping[str, np.ndarray], selection: Mapping[str, np.ndarray | None],
         out: np.ndarray | None = None) -> np.ndarray:
    """[selected neurons, bins] float64: cumulative counts / total, as `emd_rows` computes them
    (written into `out` when given: the held block is filled without a copy)."""
    rows = [hist[layer] if idx is None else hist[layer][idx] for layer, idx in selection.items()]
    shape = (sum(h.shape[0] for h in rows), rows[0].shape[1])
    if any(h.shape[1] != shape[1] for h in rows) or (out is not None and out.shape != shape):
        raise FormatError("histograms do not have the shape of the others")
    out = np.empty(shape) if out is None else out
    start = 0
    for h in rows:
        n = h.sum(axis=-1, keepdims=True, dtype=np.float64)
        if (n == 0).any():
            raise IncompatibleDNAError("a histogram has no counts: its EMD is undefined")
        np.divide(np.cumsum(h, axis=-1, dtype=np.int64), n, out=out[start:start + h.shape[0]])
        start += h.shape[0]
    return out


def emd_matrix(catalog, names: Sequence[str], selection: Mapping[str, np.ndarray | None],
               weights: Mapping[str, np.ndarray] | None = None, progress: Progress | None = None,
               memory_bytes: int = 512 << 20) -> PairwiseEMD:
    """All pairwise EMD_W (Eq. 5; the average over the selected neurons without weights) of
    comparable histogram DNAs, with each pair's per-layer means (`Comparison.per_layer`).

    `memory_bytes` bounds the CDFs held at once (a block of entries); entries are read
    ceil(n / block) times at most. Raises EntryLoadError naming an entry that cannot be
    read or whose histograms do not fit the selection.
    """
    names = list(names)
    n = len(names)
    layers = list(selection)
    if not layers:
        raise ConfigError("no layer selected")
    dist = np.zeros((n, n))
    per_layer = {l: np.zeros((n, n)) for l in layers}
    if n < 2:
        return PairwiseEMD(names, dist, per_layer, 0)

    def load(j: int, out: np.ndarray | None = None) -> np.ndarray:
        try:
            d = catalog.get(names[j], ["hist"], layers=layers)
            d.require("hist")
            return _cdf(d.hist, selection, out)
        except (VdnaError, IndexError) as e:
            raise EntryLoadError(names[j], str(e)) from None
        except Exception as e:  # registry errors (damaged file) and the like
            if type(e).__module__.startswith("registry"):
                raise EntryLoadError(names[j], str(e)) from None
            raise

    first = load(0)
    shape = first.shape
    stored = {str(l): int(c) for l, c in catalog.registry.meta(names[0])["layers"]}
    offsets = np.concatenate([[0], np.cumsum([stored[l] if idx is None else len(idx) for l, idx in selection.items()])])
    if offsets[-1] != shape[0]:
        raise FormatError("selected neurons do not match the stored histograms")
    w = None
    if weights is not None:
        w = np.concatenate([np.asarray(weights[l], dtype=np.float64).ravel() for l in layers])
        if w.shape != (shape[0],):
            raise ConfigError("weights do not match the selected neurons")
    per_entry = shape[0] * shape[1] * 8
    block = int(max(1, min(n, memory_bytes // max(per_entry, 1))))
    total, done = n * (n - 1) // 2, 0
    neuron_d = np.empty((block, shape[0]))
    buffer = np.empty((block, *shape))  # reused by every pass: its pages are faulted in once
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        held = buffer[: b1 - b0]
        for i in range(b0, b1):
            if i == 0:
                held[0] = first
            else:
                load(i, held[i - b0])
        for j in range(b0 + 1, n):
            cj = held[j - b0] if j < b1 else load(j)
            if cj.shape != shape:
                raise EntryLoadError(names[j], "histograms differ in shape from the others")
            rows_i = min(j, b1) - b0  # block entries before j
            d = neuron_d[:rows_i]
            _abs_diff_sums(held[:rows_i], cj, d)
            # row-wise reductions over contiguous rows: the same pairwise sums as 1-D .mean() / .sum()
            col = d.mean(axis=1) if w is None else (w * d).sum(axis=1)
            dist[b0:b0 + rows_i, j] = dist[j, b0:b0 + rows_i] = col
            for k, l in enumerate(layers):
                v = d[:, offsets[k]:offsets[k + 1]]
                v = v.mean(axis=1) if v.shape[1] == shape[0] else np.ascontiguousarray(v).mean(axis=1)
                per_layer[l][b0:b0 + rows_i, j] = per_layer[l][j, b0:b0 + rows_i] = v
            done += rows_i
            if progress is not None:
                progress(done, total)
    return PairwiseEMD(names, dist, per_layer, int(shape[0]))


def _abs_diff_sums(held: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    """out[r, k] = sum over bins |held[r, k] - c[k]| in neuron blocks small enough for cache."""
    r, neurons, bins = held.shape
    step = max(1, _BLOCK_BYTES // (8 * bins * max(r, 1)))
    buf = np.empty((r, min(step, neurons), bins))
    for a in range(0, neurons, step):
        t = buf[:, : min(step, neurons - a)]
        np.subtract(held[:, a:a + step], c[a:a + step], out=t)
        np.abs(t, out=t)
        t.sum(axis=-1, out=out[:, a:a + step])
