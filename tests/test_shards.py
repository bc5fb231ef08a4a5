"""Shard DNAs computed by the real pipeline (efficientnet-lite0 on real sample images)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from vdnacli.build import AddRequest, add, merge_entries, resolve_settings
from vdnacli.catalog import Catalog
from vdnacli.dna import merge
from vdnacli.errors import ConfigError, FormatError
from vdnacli.integrity import check_entry
from vdnacli.pipeline import Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.shards import shard_of
from vdnacli.sources import list_images

KINDS = ("hist", "gauss", "layer-gauss")


@pytest.fixture(scope="module")
def photos(sample_dirs):
    return list_images(sample_dirs["photos-a"])[:9]


@pytest.fixture(scope="module")
def sharded(photos, lite0):
    s = ComputeSettings.for_extractor("efficientnet-lite0", kinds=KINDS, shards=3)
    dna, _ = compute_dna(photos, lite0, s, Run(batch_size=4), name="photos")
    return dna


def test_shards_add_up_to_the_dna_and_each_is_the_dna_of_its_images(photos, lite0, sharded):
    s = ComputeSettings.for_extractor("efficientnet-lite0", kinds=KINDS)
    plain, _ = compute_dna(photos, lite0, s, Run(batch_size=4))
    sh = sharded.shards
    assert sharded.meta["shards"] == {"count": 3, "rule": "sha256-mod"} and "shards" not in plain.meta
    for layer in plain.layers:  # the full DNA is unchanged by sharding
        assert np.array_equal(plain.hist[layer], sharded.hist[layer])
        assert np.array_equal(plain.gauss[layer].sum, sharded.gauss[layer].sum)
        assert np.array_equal(plain.layer_gauss[layer].outer, sharded.layer_gauss[layer].outer)
        assert np.array_equal(sh.hist[layer].sum(axis=0), plain.hist[layer])
        assert np.allclose(sh.gauss[layer][1].sum(axis=0), plain.gauss[layer].sumsq, rtol=1e-12)
        assert np.allclose(sh.layer_gauss[layer][1].sum(axis=0), plain.layer_gauss[layer].outer, rtol=1e-12)
    digests = {r.name: hashlib.sha256(r.read_bytes()).digest()[:16] for r in photos}
    for j in range(3):
        mine = [r for r in photos if shard_of(digests[r.name], 3) == j]
        assert sh.images[j] == len(mine)
        if not mine:
            continue
        alone, _ = compute_dna(mine, lite0, s, Run(batch_size=4))
        for layer in ("stage1", "head"):
            # the same activations, each in the same bin but for float32 forward passes rounding per
            # batch (an activation on a bin edge may move to its neighbour)
            assert np.array_equal(sh.hist[layer][j].sum(axis=1), alone.hist[layer].sum(axis=1))
            assert np.abs(sh.hist[layer][j] - alone.hist[layer]).sum() <= 1e-4 * alone.hist[layer].sum()
            assert np.allclose(sh.gauss[layer][0][j], alone.gauss[layer].sum, rtol=1e-4, atol=1e-6)  # float32 forward passes round per batch


def test_stored_shards_round_trip_and_are_read_only_when_asked(tmp_path, sharded):
    cat = Catalog(tmp_path / "reg")
    cat.put("p", sharded)
    assert check_entry(cat.registry, "p") == []
    assert cat.get("p").shards is None  # a plain read leaves the shards on disk
    assert cat.get("p").meta["shards"]["count"] == 3
    back = cat.get("p", shards=True).shards
    assert back.count == 3 and np.array_equal(back.images, sharded.shards.images)
    for layer in sharded.layers:
        assert np.array_equal(back.hist[layer], sharded.shards.hist[layer])
    part = cat.get("p", ["hist"], ["head"], shards=True).shards
    assert list(part.hist) == ["head"] and part.gauss is None
    assert ComputeSettings.from_meta(cat.registry.meta("p")).shards == 3

    # a shard that does not add up is refused on read and reported by verify
    meta, arrays = cat.registry.read("p")
    arrays["shards/hist/head"] = arrays["shards/hist/head"].copy()
    arrays["shards/hist/head"][0, 0, 0] += 1
    cat.registry.put("bad", dict(meta, name="bad"), arrays)
    with pytest.raises(FormatError, match="do not add up"):
        cat.get("bad", shards=True)
    assert any("do not add up" in p for p in check_entry(cat.registry, "bad"))
    # a record without its arrays is damage too
    cat.registry.put("lost", dict(meta, name="lost"), {k: v for k, v in arrays.items() if not k.startswith("shards/")})
    assert any("shard" in p for p in check_entry(cat.registry, "lost"))


def test_old_entries_without_shards_read_as_unsharded(tmp_path, sharded):
    cat = Catalog(tmp_path / "reg")
    plain = merge([sharded])
    plain.shards = None
    cat.put("old", plain)
    meta = cat.registry.meta("old")
    assert "shards" not in meta and ComputeSettings.from_meta(meta).shards == 0
    assert cat.get("old", shards=True).shards is None


def test_merge_folds_shard_counts_that_divide(sharded):
    k3 = sharded
    with pytest.raises(ConfigError):
        k3.shards.fold(2)
    a = merge([k3])
    a.shards = k3.shards  # K = 3
    merged = merge([a, k3])
    assert merged.shards.count == 3
    assert np.array_equal(merged.shards.hist["head"], 2 * k3.shards.hist["head"].astype(np.int64))
    assert merged.meta["shards"]["count"] == 3
    unsharded = merge([k3])
    unsharded.shards = None
    none = merge([k3, unsharded])
    assert none.shards is None and "shards" not in none.meta


def test_fold_is_what_fewer_shards_would_have_stored(photos, lite0):
    s = ComputeSettings.for_extractor("efficientnet-lite0", shards=4)
    four, _ = compute_dna(photos, lite0, s, Run(batch_size=8))
    two, _ = compute_dna(photos, lite0, s.replace(shards=2), Run(batch_size=8))
    folded = four.shards.fold(2)
    assert np.array_equal(folded.images, two.shards.images)
    for layer in four.layers:
        assert np.array_equal(folded.hist[layer], two.shards.hist[layer])


def test_append_and_merge_keep_shards_consistent(tmp_path, sample_dirs):
    first, second, union = tmp_path / "first", tmp_path / "second", tmp_path / "union"
    for d in (first, second, union):
        d.mkdir()
    files = sorted(sample_dirs["faces-a"].glob("*.png"))[:8]
    for i, f in enumerate(files):
        ((first if i < 4 else second) / f.name).write_bytes(f.read_bytes())
        (union / f.name).write_bytes(f.read_bytes())
    cat = Catalog(tmp_path / "reg")
    s = ComputeSettings.for_extractor("efficientnet-lite0", shards=4)
    add(cat, AddRequest("grown", first, s, device="cpu", workers=0, offline=True))
    add(cat, AddRequest("grown", second, None, device="cpu", workers=0, offline=True, append=True))
    add(cat, AddRequest("union", union, s, device="cpu", workers=0, offline=True))
    add(cat, AddRequest("second", second, s, device="cpu", workers=0, offline=True))
    grown, whole = cat.get("grown", shards=True), cat.get("union", shards=True)
    assert np.array_equal(grown.shards.images, whole.shards.images)
    for layer in whole.layers:  # equal up to activations on a bin edge (batches differ)
        g, w = grown.shards.hist[layer], whole.shards.hist[layer]
        assert np.array_equal(g.sum(axis=2), w.sum(axis=2)) and np.abs(g - w).sum() <= 1e-4 * w.sum()
    with pytest.raises(ConfigError, match="shards"):  # appending with another shard count is refused
        add(cat, AddRequest("grown", second, s.replace(shards=8), device="cpu", workers=0, offline=True, append=True))
    settings, _, _ = resolve_settings(cat, like="grown")
    assert settings.shards == 4  # --like computes sharded like the entry
    merged = merge_entries(cat, "merged", ["union", "second"])
    assert merged.shards.count == 4 and cat.get("merged", shards=True).shards.images.sum() == 12
