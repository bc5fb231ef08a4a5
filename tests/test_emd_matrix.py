"""`matrix` by the blocked, threaded path equals pairwise `compare` to the last bit: every
bin count, selection and weighting, blocks of rows smaller than the matrix, and the same
errors for incompatible, empty or forged entries."""
from __future__ import annotations

import numpy as np
import pytest

from vdnacli import emd_matrix as em
from vdnacli.catalog import Catalog
from vdnacli.distances import compare, make_selection
from vdnacli.dna import DNA, new_meta
from vdnacli.errors import FormatError, IncompatibleDNAError


def _counts(rng, rows, bins, scale=20):
    h = rng.poisson(rng.uniform(0, scale, (rows, bins)) * (rng.random((rows, bins)) < 0.5)).astype(np.int64)
    h[np.arange(rows), rng.integers(0, bins, rows)] += 1  # no empty row
    return h


def _catalog(path, rng, n, layers, bins, big=False, **meta_kw):
    cat = Catalog(path)
    for i in range(n):
        meta = new_meta(extractor="x", weights_sha256=meta_kw.get("w", "w" * 64), ranges_sha256="r" * 64,
                        layers=layers, bins=bins, preprocessing={}, kinds=["hist"])
        meta["num_images"] = 1
        hist = {l: _counts(rng, k, bins, scale=70_000 if big and i % 2 else 20) for l, k in layers.items()}
        cat.put(f"e{i:02d}", DNA(meta=meta, hist=hist))
    return cat


def _pairwise(cat, names, layers=None, neurons=None, weights=None):
    dnas = [cat.get(n, ["hist"]) for n in names]
    sel = make_selection(dnas[0].layers, layers, neurons)
    m = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            m[i, j] = m[j, i] = compare(dnas[i], dnas[j], "emd", sel, weights).distance
    return m


@pytest.mark.parametrize("bins", [2, 7, 100, 1001])
def test_matrix_is_bit_identical_to_pairwise_compare(tmp_path, bins):
    rng = np.random.default_rng(bins)
    layers = {"a": 13, "b": 5, "c": 9}
    cat = _catalog(tmp_path / "reg", rng, 9, layers, bins, big=True)  # uint16 and int32 storage mixed
    names = cat.names()
    expected = _pairwise(cat, names)
    for workers in (1, 3):
        assert np.array_equal(cat.matrix(names, workers=workers), expected)
    assert np.array_equal(cat.matrix(names[::-1]), _pairwise(cat, names[::-1]))


def test_matrix_with_selections_and_weights(tmp_path):
    rng = np.random.default_rng(1)
    layers = {"a": 40, "b": 17}
    cat = _catalog(tmp_path / "reg", rng, 7, layers, 60)
    names = cat.names()
    full = {"a": rng.random(40) * (rng.random(40) < 0.6), "b": rng.random(17)}
    for lay, neu, w in ((["b"], None, None), (None, {"a": [0, 3, 39, 7], "b": [16]}, None), (None, None, full),
                        (["a"], None, {"a": full["a"]})):
        assert np.array_equal(cat.matrix(names, "emd", lay, neu, w), _pairwise(cat, names, lay, neu, w))


def test_matrix_in_row_blocks(tmp_path, monkeypatch):
    """A pair table too small for the matrix: rows in blocks, entries read again per block."""
    rng = np.random.default_rng(2)
    cat = _catalog(tmp_path / "reg", rng, 11, {"a": 30, "b": 3}, 50)
    names = cat.names()
    expected = _pairwise(cat, names)
    for memory in (1, 33 * 8 * 4, 33 * 8 * 20):
        assert np.array_equal(em.emd_matrix(cat, names, memory=memory, workers=2), expected)
    monkeypatch.setattr(em, "_CHUNK_BYTES", 8 * 50 * 7)  # chunks of 7 rows: a partial last chunk per layer
    monkeypatch.setattr(em, "_TILE_BYTES", 8 * 50 * 7 * 3)  # tiles of 3 entries
    assert np.array_equal(em.emd_matrix(cat, names, workers=2), expected)


def test_matrix_refuses_what_compare_refuses(tmp_path):
    rng = np.random.default_rng(3)
    cat = _catalog(tmp_path / "reg", rng, 3, {"a": 4}, 10)
    other = new_meta(extractor="x", weights_sha256="v" * 64, ranges_sha256="r" * 64, layers={"a": 4}, bins=10,
                     preprocessing={}, kinds=["hist"])
    other["num_images"] = 1
    cat.put("other", DNA(meta=other, hist={"a": _counts(rng, 4, 10)}))
    with pytest.raises(IncompatibleDNAError, match="different weights"):
        cat.matrix(cat.names())
    unknown = dict(other, weights_sha256=None)  # an imported DNA: matches any digest, as in compare
    cat.put("imported", DNA(meta=unknown, hist={"a": _counts(rng, 4, 10)}))
    names = ["e00", "e01", "imported"]
    assert np.array_equal(cat.matrix(names), _pairwise(cat, names))
    empty = _counts(rng, 4, 10)
    empty[2] = 0
    cat.put("empty", DNA(meta=dict(unknown), hist={"a": empty}))
    with pytest.raises(IncompatibleDNAError, match="no counts"):
        cat.matrix(["e00", "empty"])
    with pytest.raises(IncompatibleDNAError, match="no counts"):
        _pairwise(cat, ["e00", "empty"])


def test_matrix_on_forged_entries(tmp_path):
    import h5py

    rng = np.random.default_rng(4)
    cat = _catalog(tmp_path / "reg", rng, 3, {"a": 4}, 10)
    path = cat.registry.entries_dir / "e02.h5"
    with h5py.File(path, "r+") as f:
        data = f["hist/a"][()].astype(np.int32)
        data[1, 1] = -5
        del f["hist/a"]
        f["hist/a"] = data
    for run in (lambda: cat.matrix(cat.names()), lambda: _pairwise(cat, cat.names())):
        with pytest.raises(FormatError, match="negative"):
            run()
    with h5py.File(path, "r+") as f:
        del f["hist/a"]
        f["hist/a"] = np.ones((3, 10), dtype=np.int32)  # a neuron missing
    with pytest.raises(FormatError):
        cat.matrix(cat.names())


def test_matrix_of_real_dnas_equals_compare(real_dnas, tmp_path):
    cat = Catalog(tmp_path / "reg")
    for n, d in real_dnas.items():
        cat.put(n, d)
    names = cat.names()
    m = cat.matrix(names, workers=2)
    assert np.array_equal(m, _pairwise(cat, names))
    assert np.array_equal(cat.matrix(names, layers=["stage2", "head"]), _pairwise(cat, names, ["stage2", "head"]))
