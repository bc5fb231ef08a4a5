"""Catalog queries: sketch-pruned nearest equals brute force; image scores on real images."""
from __future__ import annotations

import numpy as np
import pytest

from vdnacli.catalog import Catalog
from vdnacli.distances import emd_rows
from vdnacli.dna import DNA, new_meta
from vdnacli.sketch import combined_bound, sketch_counts


def synthetic(rng, layers, bins, centre, spread=30.0, n=3000):
    hist = {}
    for layer, k in layers.items():
        mu = np.clip(centre[layer] + rng.normal(0, spread, k), 5, bins - 5)
        samples = rng.normal(mu[:, None], 10 + rng.uniform(0, 20, (k, 1)), (k, n))
        idx = np.clip(samples.astype(np.int64), 0, bins - 1)
        h = np.zeros((k, bins), dtype=np.int64)
        np.add.at(h, (np.repeat(np.arange(k), n), idx.ravel()), 1)
        hist[layer] = h
    meta = new_meta(extractor="synthetic", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=layers, bins=bins,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = 10
    return DNA(meta=meta, hist=hist)


@pytest.fixture(scope="module")
def random_catalog(tmp_path_factory):
    rng = np.random.default_rng(7)
    layers = {"l1": 60, "l2": 90, "l3": 50}
    bins = 200
    cat = Catalog(tmp_path_factory.mktemp("rand") / "reg")
    families = [{l: rng.uniform(20, bins - 20) for l in layers} for _ in range(6)]
    for i in range(36):
        cat.put(f"e{i:02d}", synthetic(rng, layers, bins, families[i % 6], spread=rng.uniform(5, 40)))
    return cat


def test_bounds_never_exceed_exact_emd():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.poisson(rng.uniform(0, 4, (40, 300)) * (rng.random((40, 300)) < 0.2))
        b = rng.poisson(rng.uniform(0, 4, (40, 300)) * (rng.random((40, 300)) < 0.2))
        a[:, 0] += 1
        b[:, -1] += 1
        ma, qa = sketch_counts(a)
        mb, qb = sketch_counts(b)
        exact = emd_rows(a, b).mean()
        assert combined_bound(ma, qa, mb[None], qb[None])[0] <= exact + 1e-9


@pytest.mark.parametrize("top", [1, 3, 10, 35, 50])
def test_sketch_nearest_equals_brute_force(random_catalog, top):
    for q in ("e00", "e07", "e20", "e35"):
        stats = {}
        fast, _ = random_catalog.nearest(q, top=top, stats=stats)
        brute, _ = random_catalog.nearest(q, top=top, exact=True)
        assert fast == brute
        assert stats["candidates"] == 35


def test_sketch_nearest_prunes(random_catalog):
    stats = {}
    random_catalog.nearest("e03", top=3, stats=stats)
    assert stats["exact"] < stats["candidates"]


def test_sketch_nearest_with_selection(random_catalog):
    for layers, neurons in ((["l2"], None), (None, {"l1": [0, 5, 7], "l3": list(range(10))}), (["l1"], {"l3": [1]})):
        fast, _ = random_catalog.nearest("e11", top=4, layers=layers, neurons=neurons)
        brute, _ = random_catalog.nearest("e11", top=4, layers=layers, neurons=neurons, exact=True)
        assert fast == brute


def test_index_follows_replaced_and_removed_entries(random_catalog, tmp_path):
    cat = Catalog(tmp_path / "reg")
    rng = np.random.default_rng(1)
    layers = {"l1": 20}
    for i in range(5):
        cat.put(f"x{i}", synthetic(rng, layers, 100, {"l1": 20 + 12 * i}))
    assert cat.nearest("x0", top=1)[0][0][0] == "x1"
    cat.put("x4", synthetic(rng, layers, 100, {"l1": 20}), replace=True)  # now the twin of x0
    assert cat.nearest("x0", top=1)[0] == cat.nearest("x0", top=1, exact=True)[0]
    assert cat.nearest("x0", top=1)[0][0][0] == "x4"
    cat.remove("x4")
    assert [n for n, _ in cat.nearest("x0", top=4)[0]] == ["x1", "x2", "x3"]


def test_incomparable_entries_are_skipped(random_catalog, tmp_path):
    cat = Catalog(tmp_path / "reg")
    rng = np.random.default_rng(2)
    cat.put("a", synthetic(rng, {"l1": 10}, 100, {"l1": 50}))
    cat.put("b", synthetic(rng, {"l1": 10}, 100, {"l1": 55}))
    other = synthetic(rng, {"l1": 10}, 50, {"l1": 25})
    cat.put("c", other)
    ranked, skipped = cat.nearest("a", top=5)
    assert [n for n, _ in ranked] == ["b"] and skipped == ["c"]


def test_sketch_nearest_on_real_dnas(real_dnas, tmp_path):
    cat = Catalog(tmp_path / "reg")
    for n, d in real_dnas.items():
        cat.put(n, d)
    for n in real_dnas:
        fast, _ = cat.nearest(n, top=5)
        assert fast == cat.nearest(n, top=5, exact=True)[0]
        assert fast[0][0] == n[:-1] + ("b" if n.endswith("a") else "a")


def test_score_puts_augmented_reference_images_first(sample_dirs, real_dnas, lite0, tmp_path):
    """Augmented copies of the reference set's images rank ahead of other domains (sec. 5.1)."""
    from PIL import Image, ImageEnhance, ImageOps

    from vdnacli.scoring import score_images
    from vdnacli.sources import list_images

    mix = tmp_path / "mix"
    (mix / "aug").mkdir(parents=True)
    for i, p in enumerate(sorted(sample_dirs["faces-a"].glob("*.png"))[:12]):
        img = Image.open(p)
        img = ImageOps.mirror(img) if i % 2 else ImageEnhance.Brightness(img).enhance(1.2)
        img.save(mix / "aug" / f"{i}.png")
    for other in ("digits-b", "photos-b"):
        (mix / other).mkdir()
        for p in sorted(sample_dirs[other].glob("*.png"))[:12]:
            (mix / other / p.name).write_bytes(p.read_bytes())
    scores, report = score_images(list_images(mix), real_dnas["faces-a"], extractor=lite0)
    assert len(scores) == 36 and not report.failed
    assert all(name.startswith("aug/") for name, _ in scores[:12]), scores[:14]
    assert [d for _, d in scores] == sorted(d for _, d in scores)


def test_cli_score_and_similar_json(vdna, sample_dirs, tmp_path):
    r = vdna("add", "faces", sample_dirs["faces-a"], "--limit", "20")
    assert r.code == 0, r.stderr
    src = tmp_path / "src"
    src.mkdir()
    for sub in ("faces-b", "digits-b"):
        for p in sorted(sample_dirs[sub].glob("*.png"))[:5]:
            (src / f"{sub}-{p.name}").write_bytes(p.read_bytes())
    out = vdna("score", src, "--against", "faces", "--top", "3", "--json")
    assert out.code == 0, out.stderr
    rows = out.json()
    assert len(rows) == 3 and all(set(r) == {"image", "distance"} for r in rows)
    assert all(r["image"].startswith("faces-b") for r in rows)
    ref = src / "digits-b-0000.png"
    sim = vdna("similar", ref, "--in", src, "--json").json()
    # the image itself first; not exactly 0: its DNA was computed alone, the others in a batch, and the
    # CPU convolution's rounding depends on the batch shape (one pre-activation value may change bin)
    assert sim[0]["image"] == "digits-b-0000.png" and sim[0]["distance"] < 1e-3
    assert all(r["image"].startswith("digits-b") for r in sim[:5])


def test_float32_mean_rounding_never_prunes_the_true_nearest(tmp_path):
    """Near-tie where both stored float32 means round to 500.0: b is closer, by 5e-6."""
    cat = Catalog(tmp_path / "reg")

    def put(name, counts):
        meta = new_meta(extractor="s", weights_sha256="w", ranges_sha256="r", layers={"l": 1}, bins=1000,
                        preprocessing={}, kinds=["hist"])
        meta["num_images"] = 1
        h = np.zeros((1, 1000), dtype=np.int64)
        for k, v in counts.items():
            h[0, k] = v
        cat.put(name, DNA(meta=meta, hist={"l": h}))

    put("q", {0: 10})
    put("a", {500: 99_999, 499: 1})
    put("b", {500: 199_997, 499: 3})
    assert cat.nearest("q", top=1) == cat.nearest("q", top=1, exact=True)
    assert cat.nearest("q", top=1)[0][0][0] == "b"
