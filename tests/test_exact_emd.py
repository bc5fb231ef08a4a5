"""The exact stage of nearest: the cached-query EMD equals `emd_rows` bit for bit, histograms
are stored in the narrowest integer type, lazy entry reads and index row reads return
exactly what was written, and the float32 first-stage bound never exceeds the true one."""
from __future__ import annotations

import numpy as np
import pytest

from registry import Registry
from registry.errors import CorruptEntryError
from registry.index import SideIndex
from vdnacli.catalog import Catalog
from vdnacli.distances import emd_rows
from vdnacli.dna import DNA, from_arrays, new_meta, storage_dtype, to_arrays
from vdnacli.emd_query import QueryCDF
from vdnacli.errors import FormatError, IncompatibleDNAError
from vdnacli.sketch import mean_bound, sketch_counts


def _counts(rng, rows, bins, scale=50):
    h = rng.poisson(rng.uniform(0, scale, (rows, bins)) * (rng.random((rows, bins)) < 0.5)).astype(np.int64)
    h[:, rng.integers(0, bins)] += 1  # no empty row
    return h


@pytest.mark.parametrize("bins", [2, 7, 1000, 1001])
def test_query_cdf_is_bit_identical_to_emd_rows(bins):
    rng = np.random.default_rng(bins)
    h1, h2 = _counts(rng, 300, bins), _counts(rng, 300, bins)
    for idx in (None, np.array([5, 3, 299, 0, 3])):
        q = QueryCDF({"a": h1}, {"a": idx})
        ref = emd_rows(h1 if idx is None else h1[idx], h2 if idx is None else h2[idx])
        for dtype in (np.uint16, np.int32, np.int64):
            got = q.layer("a", h2.astype(dtype))
            assert got.dtype == np.float64 and np.array_equal(got, ref)


def test_emd_rows_int64_cumsum_matches_float64_cumsum():
    rng = np.random.default_rng(0)
    h1, h2 = _counts(rng, 200, 500, scale=10_000), _counts(rng, 200, 500)
    n1 = h1.sum(-1, keepdims=True, dtype=np.float64)
    n2 = h2.sum(-1, keepdims=True, dtype=np.float64)
    float_cdf = np.cumsum(h1, -1, dtype=np.float64) / n1 - np.cumsum(h2, -1, dtype=np.float64) / n2
    assert np.array_equal(emd_rows(h1, h2), np.abs(float_cdf).sum(-1))


def test_query_cdf_refuses_what_compare_refuses():
    rng = np.random.default_rng(1)
    h = _counts(rng, 6, 10)
    q = QueryCDF({"a": h}, {"a": None})
    bad = h.astype(np.int32)
    bad[2, 3] = -1
    with pytest.raises(FormatError, match="negative"):
        q.layer("a", bad)
    with pytest.raises(FormatError, match="integer"):
        q.layer("a", h.astype(np.float64))
    with pytest.raises(FormatError):
        q.layer("a", h[:5])  # a forged entry with a missing neuron
    with pytest.raises(FormatError):
        QueryCDF({"a": h}, {"a": np.array([1])}).layer("a", np.vstack([h, h]))  # extra rows
    empty = h.copy()
    empty[4] = 0
    with pytest.raises(IncompatibleDNAError, match="no counts"):
        q.layer("a", empty)


def test_histograms_are_stored_in_the_narrowest_type():
    assert storage_dtype(np.array([[0, 65535]])) == np.uint16
    assert storage_dtype(np.array([[0, 65536]])) == np.int32
    assert storage_dtype(np.array([[2**31]])) == np.int64
    meta = new_meta(extractor="x", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers={"small": 2, "big": 2},
                    bins=3, preprocessing={}, kinds=["hist"])
    meta["num_images"] = 1
    hist = {"small": np.array([[1, 2, 3], [0, 0, 65535]]), "big": np.array([[2**40, 0, 1], [70_000, 1, 1]])}
    arrays = to_arrays(DNA(meta=meta, hist=hist))
    assert arrays["hist/small"].dtype == np.uint16 and arrays["hist/big"].dtype == np.int64
    back = from_arrays(meta, arrays)
    for layer in hist:
        assert back.hist[layer].dtype == np.int64 and np.array_equal(back.hist[layer], hist[layer])


def test_entry_reader_reads_arrays_on_demand(tmp_path):
    reg = Registry(tmp_path / "reg")
    arrays = {"hist/a": np.arange(12, dtype=np.uint16).reshape(3, 4), "x": np.ones(5)}
    reg.put("e", {"k": 1}, arrays)
    with reg.open("e") as entry:
        assert entry.meta == {"k": 1}
        assert np.array_equal(entry.array("hist/a"), arrays["hist/a"]) and entry.array("hist/a").dtype == np.uint16
        with pytest.raises(CorruptEntryError, match="missing"):
            entry.array("hist/b")
    (reg.entries_dir / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(CorruptEntryError):
        reg.open("bad")


def test_index_reads_scattered_rows_in_any_order(tmp_path):
    reg = Registry(tmp_path / "reg")
    names = [f"n{i:03d}" for i in range(40)]
    for n in names:
        reg.put(n, {}, {"v": np.zeros(1)})
    rows_of = {n: np.arange(i * 6, i * 6 + 6, dtype=np.float32).reshape(2, 3) for i, n in enumerate(names)}
    index = SideIndex(reg, "t", {"v": ((2, 3), "float32")})
    rows = index.sync(names, lambda n: {"v": rows_of[n]})
    for pick in (["n005", "n006", "n007", "n020"], ["n039", "n000", "n013", "n012", "n030", "n013"], names[::-1]):
        got = SideIndex(reg, "t", {"v": ((2, 3), "float32")})
        got.sync(names, lambda n: pytest.fail("index rows must be reused"))
        assert np.array_equal(got.read("v", [rows[n] for n in pick]), np.stack([rows_of[n] for n in pick]))


def test_float32_mean_bound_never_exceeds_the_exact_bound():
    """Stored float32 means near the top of a 65,535-bin range, gaps of a few ulps."""
    rng = np.random.default_rng(5)
    n = 5000
    exact_q = rng.uniform(60_000, 65_000, n)
    for scale in (0.0, 1e-3, 1e-2, 1.0):
        exact_m = exact_q[None, :] + rng.normal(0, scale, (20, n))
        w = rng.random(n)
        w /= w.sum()
        lb = mean_bound(exact_q.astype(np.float32), exact_m.astype(np.float32), w)
        assert (lb <= np.abs(exact_m - exact_q) @ w).all()


def test_abandoned_candidates_do_not_change_the_top_k(tmp_path):
    """Families of near-identical entries: many candidates reach the exact stage and are
    abandoned part-way; the answer is still brute force's, distance for distance."""
    rng = np.random.default_rng(11)
    layers = {f"l{i}": 40 for i in range(6)}
    bins = 120
    cat = Catalog(tmp_path / "reg")
    base = {l: _counts(rng, 40, bins, scale=20) for l in layers}
    for i in range(30):
        hist = {l: h + rng.poisson(0.3 + 0.05 * i, h.shape) for l, h in base.items()}
        meta = new_meta(extractor="x", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=layers, bins=bins,
                        preprocessing={}, kinds=["hist"])
        meta["num_images"] = 1
        cat.put(f"e{i:02d}", DNA(meta=meta, hist=hist))
    abandoned = 0
    for q in ("e00", "e15", "e29"):
        stats = {}
        fast, _ = cat.nearest(q, top=3, stats=stats)
        assert fast == cat.nearest(q, top=3, exact=True)[0]
        abandoned += stats["abandoned"]
    assert abandoned > 0


def test_sketch_quantiles_of_uint16_storage_match_int64():
    rng = np.random.default_rng(2)
    h = _counts(rng, 30, 200)
    m1, q1 = sketch_counts(h)
    m2, q2 = sketch_counts(h.astype(np.uint16))
    assert np.array_equal(m1, m2) and np.array_equal(q1, q2)


def test_top_zero_asks_for_nothing(tmp_path):
    rng = np.random.default_rng(3)
    cat = Catalog(tmp_path / "reg")
    meta = new_meta(extractor="x", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers={"l": 4}, bins=9,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = 1
    for i in range(3):
        cat.put(f"e{i}", DNA(meta=dict(meta), hist={"l": _counts(rng, 4, 9)}))
    assert cat.nearest("e0", top=0)[0] == [] == cat.nearest("e0", top=0, exact=True)[0]


def test_entries_with_unknown_digests_are_compared_as_compare_does(tmp_path):
    """An imported DNA (weights/ranges sha256 unknown) is comparable with any, as in
    check_compatible; a different known digest is not. Sketch search and brute force agree."""
    rng = np.random.default_rng(8)
    cat = Catalog(tmp_path / "reg")

    def put(name, weights="w" * 64, ranges="r" * 64):
        meta = new_meta(extractor="x", weights_sha256=weights, ranges_sha256=ranges, layers={"l": 5}, bins=30,
                        preprocessing={}, kinds=["hist"])
        meta["num_images"] = 1
        cat.put(name, DNA(meta=meta, hist={"l": _counts(rng, 5, 30)}))

    put("query")
    put("same")
    put("imported", weights=None, ranges=None)
    put("half-known", ranges=None)
    put("other-weights", weights="v" * 64)
    put("other-ranges", ranges="s" * 64)
    fast, skipped = cat.nearest("query", top=10)
    brute, brute_skipped = cat.nearest("query", top=10, exact=True)
    assert fast == brute and sorted(skipped) == sorted(brute_skipped) == ["other-ranges", "other-weights"]
    assert {n for n, _ in fast} == {"same", "imported", "half-known"}
    assert dict(fast)["imported"] == cat.compare("query", "imported").distance


def test_damaged_index_rows_are_recomputed_on_a_full_scan(tmp_path):
    import h5py

    reg = Registry(tmp_path / "reg")
    names = [f"n{i}" for i in range(8)]
    for n in names:
        reg.put(n, {}, {"v": np.zeros(1)})
    values = {n: np.full(3, i, dtype=np.float32) for i, n in enumerate(names)}
    index = SideIndex(reg, "t", {"v": ((3,), "float32")})
    rows = index.sync(names, lambda n: {"v": values[n]})
    seg = next((reg.root / "index" / "t").glob("seg-*.h5"))
    with h5py.File(seg, "r") as f:
        info = f["v"].id.get_chunk_info(0)
    with open(seg, "r+b") as fh:  # flip bytes inside the first chunk: its fletcher32 no longer matches
        fh.seek(info.byte_offset)
        fh.write(bytes(range(1, 9)))  # (0xff bytes would not do: fletcher32 cannot tell 0xffff from 0)
    again = SideIndex(reg, "t", {"v": ((3,), "float32")})
    again.sync(names, lambda n: {"v": values[n]})
    assert np.array_equal(again.read("v", [rows[n] for n in names]), np.stack([values[n] for n in names]))



def test_both_nearest_paths_report_compare_distances_to_the_last_bit(tmp_path):
    """Sketch search and --exact share the exact stage; `compare` (emd_rows) is the
    independent reference, with neuron selections and weights."""
    from vdnacli.distances import compare, make_selection

    rng = np.random.default_rng(21)
    cat = Catalog(tmp_path / "reg")
    layers = {"a": 7, "b": 5}
    meta = new_meta(extractor="x", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=layers, bins=50,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = 1
    for i in range(9):
        cat.put(f"e{i}", DNA(meta=dict(meta), hist={l: _counts(rng, k, 50) for l, k in layers.items()}))
    weights = {"a": rng.random(7), "b": rng.random(5)}
    query = cat.get("e0")
    for lay, neu, w in ((None, None, None), (["b"], None, None), (None, {"a": [1, 4]}, None), (None, None, weights)):
        sel = make_selection(query.layers, lay, neu)
        wsel = None if w is None else {l: w[l][sel[l]] if sel[l] is not None else w[l] for l in sel}
        expected = sorted(((n, compare(query, cat.get(n), "emd", sel, wsel).distance) for n in cat.names() if n != "e0"),
                          key=lambda r: (r[1], r[0]))
        for exact in (False, True):
            got, _ = cat.nearest("e0", top=8, layers=lay, neurons=neu, weights=w, exact=exact)
            assert got == expected
