"""Nearest-neighbour search over the catalog: sketch bounds first, exact EMD last.

Stage 0 scans the group sums of every comparable entry (the neuron means summed over
groups of <= 32 neurons: 4 bytes per 32 neurons) for a lower bound of EMD_W; stage 1 reads
the per-neuron means (4 bytes per neuron) for a tighter bound, lazily, in stage-0 order,
only as long as an entry's stage-0 bound does not exceed the best stage-1 bound still
waiting; stage 2, in increasing order of the stage-1 bound, reads quantile sketches (66
bytes per neuron) for a tighter bound, per layer; stage 3 computes the exact EMD only
while a candidate's bound does not exceed the current K-th best exact distance, layer by
layer, and abandons a candidate as soon as its exact part plus the bounds of its unread
layers exceed it. Every bound is a true lower bound (see `vdnacli.sketch`), so the result
is exactly the brute-force top K (ties broken by name), with the same distances to the
last bit. docs/nearest.md has the derivations and the measurements.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import time
import tracemalloc

import numpy as np

from registry import RegistryError
from registry.index import Listing, SideIndex, decode_names, encode_names
from vdnacli.distances import make_selection, weighted
from vdnacli.dna import DNA, current_meta, must_match
from vdnacli.emd_query import QueryCDF
from vdnacli.integrity import meta_problem
from vdnacli.errors import FormatError, IncompatibleDNAError
from vdnacli.sketch import (QUANTILES, combined_bound_neurons, group_bound, group_starts, group_sums, group_weights,
                            mean_bound, sketch_dna_hist)

_CHUNK = 32  # candidates whose quantile sketches are read at once (stage 2)
_SCAN_ROWS = 1024  # mean rows per block when stage 1 reads every entry
_EXPAND = 128  # mean rows read at a time, in stage-0 order, when stage 0 ranks the entries
_GROUP_ROWS = 8192  # group-sum rows per block of the stage-0 scan (10 MB at 10^4 neurons)


# what check_compatible requires of two histogram DNAs: digests (an unknown one matches any)
# and the fields that must be equal
_SHAS = tuple(k for k in must_match("hist") if k.endswith("sha256"))
_EQUAL = tuple(k for k in must_match("hist") if k not in _SHAS)


def compat_key(meta: dict) -> bytes:
    """A digest of the fields two histogram DNAs must share exactly to be compared
    (extractor, bins, layers); the weights/ranges digests are matched separately."""
    meta = current_meta(meta)
    fields = {k: meta.get(k) for k in _EQUAL}
    fields["extractor_revision"] = meta.get("extractor_revision") or 1  # unrecorded: revision 1
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).digest()[:16]


def _sha_rows(meta: dict) -> np.ndarray:
    """[len(_SHAS), 32] uint8: a digest of each weights/ranges sha256, zeros when unknown."""
    out = np.zeros((len(_SHAS), 32), dtype=np.uint8)
    for i, k in enumerate(_SHAS):
        if meta.get(k) is not None:
            out[i] = np.frombuffer(hashlib.sha256(str(meta[k]).encode()).digest(), dtype=np.uint8)
    return out


def _shas_match(a: np.ndarray, b: np.ndarray) -> bool:
    return all(not a[i].any() or not b[i].any() or (a[i] == b[i]).all() for i in range(len(_SHAS)))


def comparable_meta(a: dict, b: dict) -> bool:
    """True when check_compatible(a, b, "hist") would not refuse (histograms present aside)."""
    return compat_key(a) == compat_key(b) and _shas_match(_sha_rows(a), _sha_rows(b))


def compat_index(registry) -> SideIndex:
    """The side index of every entry's compatibility fields (one row per entry, any extractor)."""
    return SideIndex(registry, "compat-v3", {"key": ((16,), "uint8"), "has_hist": ((), "uint8"),
                                             "shas": ((len(_SHAS), 32), "uint8")})


def compat_row(meta: dict) -> dict[str, np.ndarray]:
    return {"key": np.frombuffer(compat_key(meta), dtype=np.uint8), "has_hist": int("hist" in meta.get("kinds", [])),
            "shas": _sha_rows(meta)}


def sketch_index(registry, meta: dict) -> SideIndex:
    """The side index of the sketches of every entry comparable with `meta`: neuron means
    (stage 1), quantiles (stage 2), group sums (stage 0), and the weights/ranges digests
    that decide, per query, which of them are comparable."""
    n_neurons = sum(int(k) for _, k in meta["layers"])
    groups = group_starts([int(k) for _, k in meta["layers"]]).size
    return SideIndex(registry, "sketch2-" + compat_key(meta).hex(),
                     {"mean": ((n_neurons,), "float32"), "quantiles": ((n_neurons, QUANTILES + 1), "uint16"),
                      "groups": ((groups,), "float32"), "shas": ((len(_SHAS), 32), "uint8")})


def scan_mean_bounds(sindex: SideIndex, rows: list[int], qmean: np.ndarray, w: np.ndarray | None = None,
                     cols: np.ndarray | None = None, block: int = _SCAN_ROWS) -> np.ndarray:
    """The mean bound of every row, reading the index block by block so that memory stays
    one block (40 MB at 10^4 neurons) whatever the size of the catalog."""
    out = np.empty(len(rows))
    for a in range(0, len(rows), block):
        out[a : a + block] = mean_bound(qmean, sindex.read("mean", rows[a : a + block]), w, cols)
    return out


def scan_group_bounds(sindex: SideIndex, rows, qgroups: np.ndarray, mg: np.ndarray,
                      block: int = _GROUP_ROWS) -> np.ndarray:
    """Stage 0: the group bound of every row (1.25 KB per entry at 10^4 neurons), streamed."""
    out = np.empty(len(rows))
    for a in range(0, len(rows), block):
        out[a : a + block] = group_bound(qgroups, sindex.read("groups", rows[a : a + block]), mg)
    return out


def _beyond(kth: float) -> float:
    """Prune only what is clearly worse than the K-th best: the exact EMD itself carries
    float64 rounding, so a bound equal to it up to rounding must not prune."""
    return kth * (1 + 1e-9) + 1e-12


class _Clock:
    """Seconds (and, while tracemalloc traces, peak traced bytes) spent per stage, into stats."""

    def __init__(self, stats: dict):
        self.seconds = stats.setdefault("seconds", {})
        self.peak = stats.setdefault("peak_bytes", {}) if tracemalloc.is_tracing() else None
        self.stage, self.t = None, time.perf_counter()

    def __call__(self, stage: str | None) -> None:
        now = time.perf_counter()
        if self.stage is not None:
            self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + now - self.t
            if self.peak is not None:
                self.peak[self.stage] = max(self.peak.get(self.stage, 0), tracemalloc.get_traced_memory()[1])
        if self.peak is not None:
            tracemalloc.reset_peak()
        self.stage, self.t = stage, now


class _StaleListing(Exception):
    """An entry read in full no longer has the stamp of the cached listing."""


def sketch_nearest(catalog, name, top, layers=None, neurons=None, candidates=None, stats=None, weights=None):
    """The exact top K by EMD (see the module docstring); (results, skipped names)."""
    stats = stats if stats is not None else {}
    clock = _Clock(stats)
    clock("listing")
    listing = Listing.current(catalog.registry)
    listing.verify()  # a small cached listing is re-checked entry by entry meanwhile, on another thread
    try:
        found = _search(catalog, listing, name, top, layers, neurons, candidates, stats, weights, clock)
        clock("verify")
        fine = listing.ok()
    except _StaleListing:
        fine = False
    clock(None)
    stats["listing_cached"] = listing.cached
    if fine:
        return found
    listing.forget()  # an entry file was changed in place: search again from a full listing
    stats.clear()
    clock = _Clock(stats)
    clock("listing")
    listing = Listing.current(catalog.registry, fresh=True)
    found = _search(catalog, listing, name, top, layers, neurons, candidates, stats, weights, clock)
    clock(None)
    stats["listing_cached"] = False
    return found


def _search(catalog, listing, name, top, layers, neurons, candidates, stats, weights, clock):
    clock("query")
    in_memory = isinstance(name, DNA)  # a one-off query (vdnacli.oneoff): no entry, no stored sketch
    query = name if in_memory else catalog.get(name, ["hist"])
    query.require("hist")
    sel = make_selection(query.layers, layers, neurons)
    skipped: list[str] = []
    if candidates is None:  # the query stays in until the end: the index then matches the listing as a whole
        names_b, stamps = listing.names_b, listing.stamps
    else:  # in the order given (ties are taken in that order); a name that is no entry is skipped
        cands = [n for n in dict.fromkeys(candidates) if in_memory or n != name]
        skipped += [n for n in cands if len(n.encode("utf-8")) > 128]
        names_b = encode_names([n for n in cands if len(n.encode("utf-8")) <= 128])
        stamps = listing.stamps_of(names_b)

    qname = b"" if in_memory else name.encode()  # no entry has an empty name
    clock("index")
    sizes_all = list(query.layers.values())
    n_neurons = sum(sizes_all)
    gstarts = group_starts(sizes_all)
    sindex = sketch_index(catalog.registry, query.meta)

    def sketch_of(n):
        try:
            meta, arrays = catalog.registry.read(n, keys=["sketch/mean", "sketch/quantiles"])
            m, q = arrays["sketch/mean"], arrays["sketch/quantiles"]
        except RegistryError:
            try:
                d = catalog.get(n, ["hist"])
            except (FormatError, RegistryError, IncompatibleDNAError):  # damaged, forged or without hist: skipped
                return None
            meta, (m, q) = d.meta, sketch_dna_hist(d.hist)
        if np.shape(m) != (n_neurons,):
            return None
        return {"mean": m, "quantiles": q, "groups": group_sums(m, gstarts), "shas": _sha_rows(meta)}

    # Entries with a current row in this sketch index have the query's extractor, bins and
    # layers (the index is keyed by them and a row is tied to one version of its file); only
    # the others go through the catalog-wide compatibility index, and those comparable get rows.
    srows = sindex.sync_rows(names_b, stamps, None)
    unknown = np.flatnonzero((srows < 0) & (stamps[:, 0] >= 0))
    if unknown.size:
        def meta_of(n):
            try:
                return catalog.registry.meta(n)
            except RegistryError:
                return {}

        clock("compat")
        cindex = compat_index(catalog.registry)
        crow = cindex.sync_rows(names_b[unknown], stamps[unknown], lambda n: compat_row(meta_of(n)))
        at = np.flatnonzero(crow >= 0)
        ok = cindex.read("has_hist", crow[at]).astype(bool)
        ok &= (cindex.read("key", crow[at]) == np.frombuffer(compat_key(query.meta), dtype=np.uint8)).all(axis=1)
        new = unknown[at[ok]]
        clock("index")
        srows[new] = sindex.update(names_b[new], stamps[new], sketch_of)
    qrow = srows[(names_b == qname) & (srows >= 0)]  # the query's own row, when the index has it
    have = np.flatnonzero((srows >= 0) & (names_b != qname))
    shas, qshas, ok = sindex.read("shas", srows[have]), _sha_rows(query.meta), np.ones(have.size, dtype=bool)
    for i in range(len(_SHAS)):
        if qshas[i].any():  # an unknown digest (all zeros) on either side matches any
            ok &= ~shas[:, i].any(axis=1) | (shas[:, i] == qshas[i]).all(axis=1)
    have = have[ok]
    left = np.ones(names_b.size, dtype=bool)
    left[have] = False
    left &= names_b != qname
    skipped += decode_names(names_b[left])
    comparable_b, srows = names_b[have], srows[have]
    clock("query")
    if in_memory:
        qmean, qquant = sketch_dna_hist(query.hist)
        stored = {"mean": qmean, "quantiles": qquant, "groups": group_sums(qmean, gstarts)}
    elif qrow.size:
        stored = {k: sindex.read(k, qrow)[0] for k in ("mean", "quantiles", "groups")}
    else:
        stored = sketch_of(name)  # the query's own stored sketch (computed only for old entries)
    if stored is None:
        raise FormatError(f"entry '{name}': its sketch does not match its layers; run 'vdna verify'")
    qmean, qquant = stored["mean"], stored["quantiles"]
    offsets = np.cumsum([0] + sizes_all)
    starts = dict(zip(query.layers, offsets[:-1]))
    cols = np.concatenate([starts[l] + (idx if idx is not None else np.arange(query.layers[l])) for l, idx in sel.items()])
    w = _neuron_weights(sel, cols.size, weights)
    if not (np.isfinite(w).all() and (w >= 0).all()):  # the bounds hold for weights >= 0 only
        return catalog.brute_nearest(name, top, "emd", layers, neurons, candidates, weights)
    w_all = np.zeros(n_neurons)
    w_all[cols] = w
    mg = group_weights(w_all, gstarts)
    if cols.size == n_neurons and (np.diff(cols) == 1).all():
        cols = None
    exact = ExactEMD(catalog, query, sel, weights)
    sizes = exact.sizes
    seg_starts = np.cumsum([0] + sizes[:-1])

    n = comparable_b.size
    stats.update(candidates=n, stage0=0, stage1=0, quantile_reads=0, exact=0, abandoned=0)
    clock("stage0")
    if top > 0 and n > _EXPAND and (mg > 0).any():
        lb0 = scan_group_bounds(sindex, srows, stored["groups"], mg)
        stats["stage0"] = n
        expand = _EXPAND
    else:  # no group is wholly selected (a sparse neuron selection), or too few entries to gain
        lb0 = np.zeros(n)
        expand = _SCAN_ROWS
    order0 = np.argsort(lb0, kind="stable")

    results: list[tuple[str, float]] = []
    kth = np.inf
    heap: list[tuple[float, int]] = []  # (stage-1 bound, position in comparable): ties go by name
    lb1 = np.zeros(n)
    pos = 0
    while top > 0:
        # Stage 1, lazily: the mean bound of entries in stage-0 order, until the best stage-1
        # bound known is no larger than the stage-0 bound of every entry not yet read (or
        # that stage-0 bound already exceeds the K-th best: nothing from there on can enter).
        clock("stage1")
        while pos < n and (not heap or lb0[order0[pos]] <= heap[0][0]) and not (
                len(results) >= top and lb0[order0[pos]] > _beyond(kth)):
            idx = np.sort(order0[pos : pos + expand])
            pos += idx.size
            lb1[idx] = mean_bound(qmean, sindex.read("mean", srows[idx]), w, cols)
            stats["stage1"] += idx.size
            for i, b in zip(idx.tolist(), lb1[idx].tolist()):
                heapq.heappush(heap, (b, i))
        # Every entry not yet read has a stage-0 bound above the heap's head or above the K-th
        # best; every entry in the heap, a stage-1 bound >= its head. Past the K-th best, or
        # with nothing left, the search is over.
        if not heap or (len(results) >= top and heap[0][0] > _beyond(kth)):
            break
        chunk = np.array([heapq.heappop(heap)[1] for _ in range(min(_CHUNK, len(heap)))])
        clock("stage2")
        chunk_rows = srows[chunk]
        quants = sindex.read("quantiles", chunk_rows)
        stats["quantile_reads"] += len(chunk)
        per_neuron = combined_bound_neurons(qmean, qquant, sindex.read("mean", chunk_rows), quants, cols)
        weighted_bounds = per_neuron * w
        per_layer = np.stack([weighted_bounds[:, a : a + k].sum(axis=1) for a, k in zip(seg_starts, sizes)], axis=1)
        lb2 = np.maximum(per_layer.sum(axis=1), lb1[chunk])
        clock("stage3")
        for j in np.argsort(lb2, kind="stable"):
            if len(results) >= top and lb2[j] > _beyond(kth):
                continue
            other = comparable_b[chunk[j]].decode("utf-8")
            if listing.cached and not listing.check(other):
                raise _StaleListing(other)
            try:
                d = exact.distance(other, per_layer[j], kth if len(results) >= top else np.inf)
            except (IncompatibleDNAError, FormatError, RegistryError):
                skipped.append(other)
                continue
            if d is None:  # provably worse than the K-th best: abandoned part-way
                stats["abandoned"] += 1
                continue
            stats["exact"] += 1
            results.append((other, d))
            results.sort(key=lambda r: (r[1], r[0]))
            del results[top:]
            if len(results) >= top:
                kth = results[-1][1]
    return results, sorted(skipped)


def _neuron_weights(sel, n_selected: int, weights) -> np.ndarray:
    """EMD_W's weight of each selected neuron, in selection order (uniform: EMD_avg)."""
    if weights is None:
        return np.full(n_selected, 1.0 / n_selected)
    return np.concatenate([np.asarray(weights[l], dtype=np.float64)[idx if idx is not None else slice(None)]
                           for l, idx in sel.items()])


class ExactEMD:
    """Exact EMD of one query DNA against catalog entries, layer by layer from one open entry
    file; the value is `compare`'s to the last bit (same per-neuron arithmetic, assembled in
    selection order by `distances.weighted`).

    With `layer_bounds` (lower bounds of each layer's weighted part, from the sketches) and
    the K-th best distance so far, the search stops reading a candidate once the exact part
    so far plus the bounds of the layers still unread exceed it: the candidate cannot enter
    the top K, and the rest of its file is never read. Layers are then read in decreasing
    order of their bound (the likeliest to decide first). Without them (brute force), every
    selected layer is read.
    """

    def __init__(self, catalog, query, sel, weights=None):
        self.catalog, self.query_meta, self.weights = catalog, query.meta, weights
        self.qcdf = QueryCDF(query.hist, sel)
        self.layers = list(sel)
        self.sizes = [query.layers[l] if idx is None else len(idx) for l, idx in sel.items()]
        w = _neuron_weights(sel, sum(self.sizes), weights)
        self.w_layers = np.split(w, np.cumsum(self.sizes)[:-1])

    def distance(self, name: str, layer_bounds: np.ndarray | None = None, kth: float = np.inf) -> float | None:
        """The exact distance, or None once it provably exceeds `kth` (abandoned part-way)."""
        bounds = np.zeros(len(self.layers)) if layer_bounds is None else layer_bounds
        with self.catalog.registry.open(name) as entry:
            if (bad := meta_problem(entry.meta)) is not None:
                raise FormatError(f"entry '{name}': {bad}")
            if not comparable_meta(self.query_meta, entry.meta):
                raise IncompatibleDNAError(f"entry '{name}' was computed with another extractor, weights, ranges, "
                                           "bins or layers than the query")
            if "hist" not in entry.meta.get("kinds", []):
                raise IncompatibleDNAError(f"entry '{name}' has no histograms")
            remaining = float(bounds.sum())
            partial = 0.0
            per_neuron = {}
            for i in np.argsort(-bounds, kind="stable"):
                layer = self.layers[i]
                d = self.qcdf.layer(layer, entry.array(f"hist/{layer}"))
                per_neuron[layer] = d
                partial += float(d @ self.w_layers[i])
                remaining -= float(bounds[i])
                if partial + max(remaining, 0.0) > _beyond(kth):
                    return None
        return weighted({l: per_neuron[l] for l in self.layers}, self.weights)
