"""Stage 0 of nearest (group sums of the neuron means) and the shared entry listing: the
group bound never exceeds the exact EMD_W, and with stage 0 in the path the search still
returns brute force's top K, distance for distance, on random, real and forged catalogs,
with layer and neuron selections and weights (masks)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vdnacli import search
from vdnacli.catalog import Catalog
from vdnacli.distances import emd_rows
from vdnacli.dna import DNA, new_meta
from vdnacli.sketch import group_bound, group_starts, group_sums, group_weights, sketch_counts

sys.path.insert(0, str(Path(__file__).parent))
from test_hostile_dna import hostile  # noqa: E402,F401  (the forged catalog, as a fixture here too)
from test_search import synthetic  # noqa: E402


@pytest.fixture
def stage0(monkeypatch):
    """Stage 0 on for catalogs of a few entries (it starts above _EXPAND candidates), and the
    stage-1 reads it drives two rows at a time, so that every path of the merge runs."""
    monkeypatch.setattr(search, "_EXPAND", 2)
    monkeypatch.setattr(search, "_GROUP_ROWS", 5)


def _counts(rng, rows, bins, scale=5.0):
    h = rng.poisson(rng.uniform(0, scale, (rows, bins)) * (rng.random((rows, bins)) < 0.3))
    h[np.arange(rows), rng.integers(0, bins, rows)] += 1
    return h


def test_groups_cut_layers_into_near_equal_runs():
    starts = group_starts([70, 32, 5, 33])
    assert starts.tolist() == [0, 23, 46, 70, 102, 107, 123]
    assert group_starts([10_000]).size == 313 and group_starts([]).size == 0
    m = np.arange(140, dtype=np.float32)
    assert np.array_equal(group_sums(m, starts), np.add.reduceat(m.astype(np.float64), starts).astype(np.float32))


def test_group_bound_never_exceeds_exact_weighted_emd():
    rng = np.random.default_rng(4)
    layers = [37, 64, 3]
    starts = group_starts(layers, size=8)
    n = sum(layers)
    for trial in range(30):
        bins = int(rng.integers(2, 400))
        a = _counts(rng, n, bins)
        others = [_counts(rng, n, bins) for _ in range(6)]
        if trial % 3 == 0:  # near-identical entries: bounds close to the exact value
            others = [a + rng.poisson(0.05, a.shape) for _ in range(6)]
        w = rng.random(n) * (rng.random(n) < [0.2, 0.9, 1.0][trial % 3])  # zeros: unselected neurons
        if not w.any():
            w[0] = 1.0
        qa = group_sums(sketch_counts(a)[0], starts)
        g = np.stack([group_sums(sketch_counts(o)[0], starts) for o in others])
        lb = group_bound(qa, g, group_weights(w, starts))
        exact = np.array([emd_rows(a, o) @ w for o in others])
        assert (lb <= exact).all(), (lb, exact)


def test_group_bound_float32_rounding_near_the_top_of_65535_bins():
    """Exact means near 65,000 whose float32 roundings and group sums differ by a few ulps."""
    rng = np.random.default_rng(5)
    n = 4096
    starts = group_starts([n])
    exact_q = rng.uniform(60_000, 65_000, n)
    w = np.full(n, 1.0 / n)
    for scale in (0.0, 1e-3, 1e-2, 1.0):
        exact_m = exact_q[None, :] + rng.normal(0, scale, (20, n))
        lb = group_bound(group_sums(exact_q.astype(np.float32), starts),
                         group_sums(exact_m.astype(np.float32), starts), group_weights(w, starts))
        assert (lb <= np.abs(exact_m - exact_q) @ w).all()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Six families of similar entries in three layers, one layer wider than a group."""
    rng = np.random.default_rng(17)
    layers = {"l1": 70, "l2": 40, "l3": 9}
    bins = 150
    cat = Catalog(tmp_path_factory.mktemp("stage0") / "reg")
    families = [{l: rng.uniform(20, bins - 20) for l in layers} for _ in range(6)]
    for i in range(40):
        cat.put(f"e{i:02d}", synthetic(rng, layers, bins, families[i % 6], spread=rng.uniform(3, 30), n=800))
    return cat


@pytest.mark.parametrize("top", [1, 4, 12, 39, 60])
def test_stage0_search_equals_brute_force(catalog, stage0, top):
    for q in ("e00", "e13", "e39"):
        stats = {}
        fast, skipped = catalog.nearest(q, top=top, stats=stats)
        assert (fast, skipped) == catalog.nearest(q, top=top, exact=True)
        assert stats["stage0"] == stats["candidates"] == 39


def test_stage0_prunes_before_stage1(catalog, stage0):
    stats = {}
    catalog.nearest("e07", top=2, stats=stats)
    assert stats["stage1"] < stats["candidates"] and stats["exact"] < stats["candidates"]
    assert set(stats["seconds"]) >= {"listing", "index", "query", "stage0", "stage1", "stage2", "stage3"}


def test_stage0_with_selections_and_weights(catalog, stage0):
    rng = np.random.default_rng(2)
    full = {"l1": rng.random(70), "l2": rng.random(40), "l3": rng.random(9)}
    sparse = {l: w * (rng.random(w.size) < 0.5) for l, w in full.items()}  # an ignore mask zeroes neurons
    cases = [
        (["l2"], None, None),
        (None, {"l1": list(range(0, 70, 3)), "l3": [0, 8]}, None),  # a focus mask: scattered neurons
        (None, {"l1": list(range(40))}, None),  # whole groups of l1 selected, the rest not
        (None, None, full),
        (None, None, sparse),
        (["l1", "l3"], None, {"l1": full["l1"], "l3": full["l3"]}),
    ]
    for layers, neurons, weights in cases:
        for q in ("e03", "e22"):
            fast = catalog.nearest(q, top=5, layers=layers, neurons=neurons, weights=weights)
            assert fast == catalog.nearest(q, top=5, layers=layers, neurons=neurons, weights=weights, exact=True)


def test_stage0_on_real_dnas(real_dnas, tmp_path, stage0):
    cat = Catalog(tmp_path / "reg")
    for n, d in real_dnas.items():
        cat.put(n, d)
    for n in real_dnas:
        stats = {}
        fast, _ = cat.nearest(n, top=4, stats=stats)
        assert fast == cat.nearest(n, top=4, exact=True)[0]
        assert fast[0][0] == n[:-1] + ("b" if n.endswith("a") else "a")
        assert stats["stage0"] == len(real_dnas) - 1
        for layers in (["stage3"], ["stage5", "head"]):
            assert cat.nearest(n, top=3, layers=layers) == cat.nearest(n, top=3, layers=layers, exact=True)


def test_stage0_on_forged_catalog(hostile, stage0):  # noqa: F811
    cat, _ = hostile
    everything = len(cat.names())
    for q in ("good-a", "good-b"):
        fast, skipped = cat.nearest(q, top=everything)
        brute, _ = cat.nearest(q, top=everything, exact=True)
        assert fast == brute  # no forgery stops the search or changes a distance
        assert {n for n, _ in fast} | set(skipped) == set(cat.names()) - {q}


# -- the listing shared by the indexes ----------------------------------------------------
def _young_is_old(monkeypatch):
    """Let a directory changed a moment ago count as settled (the 2 s racy window is for
    real clocks; the tests below change the registry between queries, 50 ms apart)."""
    from registry import index

    monkeypatch.setattr(index, "_RACY_NS", 0)


def test_cached_listing_follows_adds_replacements_and_removals(tmp_path, monkeypatch, stage0):
    from registry.index import Listing

    _young_is_old(monkeypatch)
    rng = np.random.default_rng(3)
    cat = Catalog(tmp_path / "reg")
    layers = {"l1": 20}
    for i in range(6):
        cat.put(f"x{i}", synthetic(rng, layers, 100, {"l1": 20 + 10 * i}))
    time.sleep(0.05)
    assert cat.nearest("x0", top=1)[0][0][0] == "x1"
    assert Listing.current(cat.registry).cached  # the first query cached it; nothing changed since
    time.sleep(0.05)
    cat.put("x5", synthetic(rng, layers, 100, {"l1": 20}), replace=True)  # now the twin of x0
    time.sleep(0.05)
    assert not Listing.current(cat.registry).cached
    assert cat.nearest("x0", top=1)[0][0][0] == "x5"
    cat.remove("x5")
    time.sleep(0.05)
    assert cat.nearest("x0", top=5) == cat.nearest("x0", top=5, exact=True)
    assert [n for n, _ in cat.nearest("x0", top=5)[0]] == ["x1", "x2", "x3", "x4"]


def test_entry_edited_in_place_is_noticed(tmp_path, monkeypatch, stage0):
    """Not what the registry does (it always renames), but a user's `cp` over an entry file
    keeps the inode and the directory's stamp. The cached listing is re-checked entry by
    entry while the search runs; the changed entry is found and the search starts again
    from a full listing (x4's old rows would have pruned it)."""
    from registry.index import Listing

    _young_is_old(monkeypatch)
    rng = np.random.default_rng(4)
    cat = Catalog(tmp_path / "reg")
    layers = {"l1": 20}
    for i in range(5):
        cat.put(f"x{i}", synthetic(rng, layers, 100, {"l1": 20 + 12 * i}))
    cat.put("twin", synthetic(rng, layers, 100, {"l1": 20}))
    time.sleep(0.05)
    cat.nearest("x3", top=1)
    assert Listing.current(cat.registry).cached
    src, dst = cat.registry.entries_dir / "twin.h5", cat.registry.entries_dir / "x4.h5"
    with open(dst, "r+b") as f:  # rewrite x4 in place with twin's bytes (same inode)
        f.truncate(0)
        f.write(src.read_bytes())
    import h5py

    with h5py.File(dst, "r+") as f:
        f.attrs["name"] = "x4"
    assert cat.nearest("x0", top=2) == cat.nearest("x0", top=2, exact=True)
    assert [n for n, _ in cat.nearest("x0", top=2)[0]] == ["twin", "x4"]


def test_large_catalog_checks_what_it_reads_in_full(tmp_path, monkeypatch, stage0):
    """Above _VERIFY_MAX entries no thread re-stats the listing; an entry edited in place
    that the search reads in full (its stale bounds are small) is still noticed."""
    import h5py

    from registry import index

    _young_is_old(monkeypatch)
    monkeypatch.setattr(index, "_VERIFY_MAX", 0)
    rng = np.random.default_rng(8)
    cat = Catalog(tmp_path / "reg")
    for i in range(6):
        cat.put(f"x{i}", synthetic(rng, {"l1": 20}, 100, {"l1": 20 + 12 * i}, spread=3.0))
    time.sleep(0.05)
    assert cat.nearest("x0", top=1)[0][0][0] == "x1"
    assert index.Listing.current(cat.registry).cached
    src, dst = cat.registry.entries_dir / "x5.h5", cat.registry.entries_dir / "x1.h5"
    with open(dst, "r+b") as f:  # x1 becomes a copy of the far x5, in place
        f.truncate(0)
        f.write(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        f.attrs["name"] = "x1"
    stats = {}
    assert cat.nearest("x0", top=2, stats=stats) == cat.nearest("x0", top=2, exact=True)
    assert stats["listing_cached"] is False and cat.nearest("x0", top=1)[0][0][0] == "x2"


def test_nearest_on_a_registry_that_cannot_be_written(tmp_path, monkeypatch, stage0):
    """EROFS, ENOSPC, EACCES on every index write (segments, listing, locks, temp files,
    unlinks): the query answers from memory, exactly, and leaves nothing behind."""
    import errno
    import os

    import h5py

    rng = np.random.default_rng(6)
    cat = Catalog(tmp_path / "reg")
    for i in range(8):
        cat.put(f"x{i}", synthetic(rng, {"l1": 40}, 100, {"l1": 20 + 8 * i}))
    expected = cat.nearest("x0", top=3, exact=True)
    real_file, real_replace, real_unlink, real_open = h5py.File, os.replace, Path.unlink, os.open
    for code in (errno.EROFS, errno.ENOSPC, errno.EACCES):
        def refuse(*a, **k):
            raise OSError(code, os.strerror(code))

        def h5(path, mode="r", *a, **k):
            return refuse() if mode != "r" else real_file(path, mode, *a, **k)

        def opener(path, flags, *a, **k):
            return refuse() if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) else real_open(path, flags, *a, **k)

        with monkeypatch.context() as m:
            m.setattr(h5py, "File", h5)
            m.setattr(os, "replace", refuse)
            m.setattr(os, "open", opener)
            m.setattr(Path, "unlink", lambda self, missing_ok=False: refuse())
            m.setattr(Path, "mkdir", lambda self, *a, **k: refuse())
            assert cat.nearest("x0", top=3) == expected
    assert not (cat.root / "index").exists() and cat.registry.leftovers() == []


def _mount_readonly_copy(src: Path, mnt: Path) -> bool:
    import shutil
    import subprocess

    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode:
        return False
    shutil.copytree(src, mnt / "reg")
    return subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0


def test_nearest_on_a_read_only_filesystem(tmp_path, vdna, stage0):
    """Issue 14 row 5: a read-only registry whose index was never built still answers."""
    import subprocess

    rng = np.random.default_rng(7)
    cat = Catalog(tmp_path / "reg")
    for i in range(8):
        cat.put(f"x{i}", synthetic(rng, {"l1": 40}, 100, {"l1": 20 + 8 * i}))
    expected = cat.nearest("x2", top=3, exact=True)[0]
    mnt = tmp_path / "ro"
    try:
        if not _mount_readonly_copy(tmp_path / "reg", mnt):
            pytest.skip("mounting a tmpfs is not allowed here")
        ro = Catalog(mnt / "reg")
        assert ro.nearest("x2", top=3)[0] == expected
        r = vdna("nearest", "x2", "--top", "3", "--json", "--registry", mnt / "reg")
        assert r.code == 0, r.stderr
        assert [(x["name"], x["distance"]) for x in r.json()] == expected
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
