"""The method on real images with the real offline extractor (EfficientNet-Lite0)."""
from __future__ import annotations

import numpy as np
import pytest

from vdnacli.catalog import Catalog
from vdnacli.distances import compare, emd_rows
from vdnacli.dna import merge
from vdnacli.interop import export_upstream, import_upstream
from vdnacli.pipeline import Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.sources import list_images


def test_dna_shapes_and_metadata(real_dnas, lite0):
    d = real_dnas["faces-a"]
    assert d.num_images == 40
    assert d.layers == dict(lite0.spec.layers)
    assert sum(d.layers.values()) == 2064
    for layer, n in d.layers.items():
        h = d.hist[layer]
        assert h.shape == (n, 1000) and h.dtype == np.int64
        positions = h[0].sum() // 40  # counts accumulate over spatial positions and images (Eq. 1-2)
        assert (h.sum(axis=1) == positions * 40).all()
    m = d.meta
    assert m["weights_sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert len(m["ranges_sha256"]) == 64 and len(m["images_sha256"]) == 64
    assert m["preprocessing"]["size"] == 224 and m["preprocessing"]["crop"] == "center"
    assert "/" not in str(m.get("origin", "")), "no paths in a shareable DNA"


def test_self_distance_zero_and_twins_closest(real_dnas):
    names = list(real_dnas)
    for a in names:
        assert compare(real_dnas[a], real_dnas[a]).distance == 0.0
        twin = a[:-1] + ("b" if a.endswith("a") else "a")
        dists = {b: compare(real_dnas[a], real_dnas[b]).distance for b in names if b != a}
        assert min(dists, key=dists.get) == twin, dists
        # disjoint halves of one source are closer than any other source, by a margin
        others = [v for k, v in dists.items() if k != twin]
        assert dists[twin] < 0.6 * min(others)


def test_gaussian_dna_also_separates_sources(real_dnas):
    d = {b: compare(real_dnas["digits-a"], real_dnas[b], "nfd").distance for b in real_dnas if b != "digits-a"}
    assert min(d, key=d.get) == "digits-b"


def test_union_equals_sum_of_parts(sample_dirs, lite0, real_dnas, tmp_path):
    refs = list_images(sample_dirs["digits-a"]) + list_images(sample_dirs["faces-a"])
    both, _ = compute_dna(refs, lite0, ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist", "gauss")), Run(batch_size=16))
    summed = merge([real_dnas["digits-a"], real_dnas["faces-a"]])
    for layer in both.layers:
        np.testing.assert_array_equal(both.hist[layer], summed.hist[layer])
        np.testing.assert_allclose(both.gauss[layer].sum, summed.gauss[layer].sum, rtol=1e-6, atol=1e-6)
    assert both.num_images == summed.num_images == 80
    assert both.meta["images_sha256"] == summed.meta["images_sha256"]


def test_batch_size_does_not_change_counts(sample_dirs, lite0, real_dnas):
    d, _ = compute_dna(list_images(sample_dirs["photos-b"]), lite0, run=Run(batch_size=7, workers=2))
    assert compare(d, real_dnas["photos-b"]).distance == 0.0


def test_export_import_gives_identical_distance(real_dnas, tmp_path):
    a, b = real_dnas["photos-a"], real_dnas["faces-b"]
    export_upstream(a, tmp_path / "pa")
    back = import_upstream(tmp_path / "pa")
    assert compare(back, b).distance == compare(a, b).distance
    assert compare(back, a).distance == 0.0


def test_emd_matches_scipy_on_real_histograms(real_dnas):
    from scipy.stats import wasserstein_distance

    a, b = real_dnas["digits-a"].hist["head"], real_dnas["photos-a"].hist["head"]
    centres = (np.arange(1000) + 0.5) / 1000 * 2 - 1
    ours = emd_rows(a[:50], b[:50]) * (2 / 1000)
    ref = [wasserstein_distance(centres, centres, a[i], b[i]) for i in range(50)]
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-12)


def test_corrupt_images_are_skipped_and_reported(sample_dirs, lite0, tmp_path):
    import shutil

    from vdnacli.errors import ImageDecodeError

    folder = tmp_path / "mixed"
    shutil.copytree(sample_dirs["digits-a"], folder)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    good = (folder / "0000.png").read_bytes()
    (folder / "trunc.png").write_bytes(good[: len(good) // 2])
    d, report = compute_dna(list_images(folder), lite0)
    assert d.num_images == 40
    assert sorted(n for n, _ in report.failed) == ["empty.png", "text.jpg", "trunc.png"]
    with pytest.raises(ImageDecodeError):
        compute_dna(list_images(folder), lite0, run=Run(strict=True))


def test_catalog_roundtrip_and_nearest(real_dnas, tmp_path):
    cat = Catalog(tmp_path / "reg")
    for n, d in real_dnas.items():
        cat.put(n, d)
    got = cat.get("faces-a")
    for layer in got.layers:
        np.testing.assert_array_equal(got.hist[layer], real_dnas["faces-a"].hist[layer])
    ranked, skipped = cat.nearest("faces-a", top=3)
    assert ranked[0][0] == "faces-b" and not skipped
    assert [d for _, d in ranked] == sorted(d for _, d in ranked)
    assert cat.registry.verify("faces-a") == []
