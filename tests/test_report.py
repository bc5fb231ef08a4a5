"""`vdna report`: exact pairwise distances, grouping, clustering, the text report, and the
HTML page rendered in a real headless Chromium (skipped, with the reason, where none is
installed)."""
from __future__ import annotations

import hashlib
import json
import re
import time

import numpy as np
import pytest

from headless_chromium import chromium, console_errors, why_unavailable
from vdnacli import report as R
from vdnacli.catalog import Catalog
from vdnacli.clustering import leaf_order, upgma_order
from vdnacli.distances import compare, make_selection
from vdnacli.dna import DNA, new_meta
from vdnacli.masks import Mask
from vdnacli.pairwise import emd_matrix
from vdnacli.sources import list_images
from vdnacli.thumbnails import collect

NO_BROWSER = why_unavailable()
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=f"browser tests skipped: {NO_BROWSER}")


@pytest.fixture(scope="module")
def thumbs_of(sample_dirs):
    """Real thumbnails of each sample folder (16 each)."""
    out = {}
    for name, folder in sample_dirs.items():
        refs = list_images(folder)
        hs = sorted({hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs})
        out[name] = collect(refs, np.frombuffer(b"".join(hs), dtype=np.uint8).reshape(-1, 16), 16)
    return out


@pytest.fixture(scope="module")
def tutorial(real_dnas, thumbs_of, tmp_path_factory) -> Catalog:
    """The README tutorial's catalog (digits-a/b, faces-a, photos-a) from real DNAs and images."""
    cat = Catalog(tmp_path_factory.mktemp("tutorial") / "my-catalog")
    for name in ("digits-a", "digits-b", "faces-a", "photos-a"):
        d = real_dnas[name]
        kinds = ["hist", "gauss"] if name == "photos-a" else ["hist"]  # as the tutorial adds them
        cat.put(name, DNA(meta=dict(d.meta, kinds=kinds), hist=d.hist, gauss=d.gauss if "gauss" in kinds else None,
                          image_hashes=d.image_hashes, thumbnails=thumbs_of[name]))
    return cat


def _synthetic(extractor="synthetic", kinds=("hist",), layers=None, bins=32, seed=0, center=None):
    rng = np.random.default_rng(seed)
    layers = layers or {"low": 6, "high": 10}
    meta = new_meta(extractor=extractor, weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=layers, bins=bins,
                    preprocessing={"size": 32, "crop": "center"}, kinds=list(kinds))
    meta["num_images"] = 50
    meta["origin"] = {"kind": "images", "source_name": f"set{seed}", "limit": None, "seed": None}
    hist = None
    if "hist" in kinds:
        hist = {}
        for l, n in layers.items():
            c = center if center is not None else rng.integers(0, bins - 6)
            pos = np.clip(c + rng.integers(-3, 4, size=(n, 200)), 0, bins - 1)
            hist[l] = np.stack([np.bincount(p, minlength=bins) for p in pos]).astype(np.int64)
    gauss = None
    if "gauss" in kinds:
        from vdnacli.dna import Gaussian

        gauss = {l: Gaussian(50, rng.normal(size=n), rng.normal(size=n) ** 2 + 60) for l, n in layers.items()}
    return DNA(meta=meta, hist=hist, gauss=gauss)


def synthetic_catalog(root, n: int, thumbs: list, clusters: int = 8) -> Catalog:
    """n small DNAs in `clusters` clusters, each with real thumbnails."""
    cat = Catalog(root)
    for i in range(n):
        d = _synthetic(seed=i, center=4 + 3 * (i % clusters))
        d.thumbnails = thumbs[i % len(thumbs)]
        cat.put(f"set-{i:04d}", d)
    return cat


# -- exact distances ----------------------------------------------------------------------
def test_pairwise_is_compare_to_the_last_bit(tutorial, real_dnas):
    cat = Catalog(tutorial.root.parent / "six")
    for name, d in real_dnas.items():
        cat.put(name, d)
    names = cat.names()
    sel = make_selection(cat.get(names[0], ["hist"]).layers)
    want = cat.matrix(names)
    for memory in (1 << 30, 40 << 20):  # one block; blocks of two entries (three passes)
        got = emd_matrix(cat, names, sel, memory_bytes=memory)
        assert np.array_equal(got.distance, want)
    c = compare(cat.get(names[0], ["hist"]), cat.get(names[3], ["hist"]))
    assert {l: got.per_layer[l][0, 3] for l in c.per_layer} == c.per_layer
    # a neuron selection with weights (an ignore mask's EMD_W) too
    neurons = {"stage3": [1, 5, 7], "head": list(range(0, 1280, 3))}
    sel2 = make_selection(cat.get(names[0], ["hist"]).layers, ["stage3", "head"], neurons)
    w = {"stage3": np.array([0.1, 0.5, 0.2]), "head": np.linspace(0, 1, len(neurons["head"]))}
    got = emd_matrix(cat, names, sel2, weights=w, memory_bytes=40 << 20)
    assert np.array_equal(got.distance, cat.matrix(names, layers=["stage3", "head"], neurons=neurons, weights=w))


def test_leaf_order_puts_clusters_together(monkeypatch):
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.repeat(np.arange(4), 6))
    pts = labels[:, None] * 10.0 + rng.normal(size=(24, 2))
    m = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    for order in (leaf_order(m), upgma_order(m)):
        assert sorted(order) == list(range(24))
        runs = 1 + sum(labels[a] != labels[b] for a, b in zip(order, order[1:]))
        assert runs == 4  # each cluster contiguous
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *a, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert leaf_order(m) == upgma_order(m)


# -- what the report gathers ----------------------------------------------------------------
def test_groups_hide_nothing_and_agree_with_nearest(tutorial, tmp_path):
    import shutil

    cat = Catalog(tmp_path / "reg")
    cat.put("other-1", _synthetic(seed=1))  # the first write creates the registry
    cat.put("other-2", _synthetic(seed=2))
    for name in tutorial.names():
        shutil.copy(tutorial.registry.entries_dir / f"{name}.h5", cat.registry.entries_dir / f"{name}.h5")
    cat.put("gauss-only", _synthetic(extractor="efficientnet-lite0", kinds=("gauss",),
                                     layers=dict(tutorial.get("digits-a").layers)))
    (cat.registry.entries_dir / "broken.h5").write_bytes(b"not an HDF5 file")
    rep = R.build_report(cat)
    assert [e.name for e in rep.entries] == sorted(cat.names())
    titles = [g.title for g in rep.groups]
    assert titles == ["efficientnet-lite0 · 1000 bins", "synthetic · 32 bins", "efficientnet-lite0 · no histograms"]
    assert sorted(rep.groups[0].names) == ["digits-a", "digits-b", "faces-a", "photos-a"]
    assert rep.entry("broken").problem and rep.entry("broken").group is None
    for name in rep.groups[0].names:
        want, _ = cat.nearest(name, top=5)
        assert rep.neighbours(name) == want  # exactly `vdna nearest`
    assert rep.neighbours("digits-a")[0][0] == "digits-b"
    assert rep.neighbours("other-1") == [("other-2", cat.compare("other-1", "other-2").distance)]
    nb, rows = rep.profile("faces-a")
    assert [r[0] for r in rows] == list(cat.get("faces-a").layers)
    assert [r[1] for r in rows] == list(cat.compare("faces-a", nb).per_layer.values())
    text = R.render_text(rep)
    for name in cat.names():
        assert name in text
    assert "BROKEN" in text and "no histograms" in text
    # --entries: names and globs; a pattern matching nothing is one clear error
    assert [e.name for e in R.build_report(cat, entries=["digits-*", "faces-a"]).entries] == \
        ["digits-a", "digits-b", "faces-a"]
    with pytest.raises(R.NotFoundError, match="no entry matches 'nope'"):
        R.build_report(cat, entries=["nope"])


def test_mask_and_layer_apply_where_they_can(tutorial, tmp_path):
    layers = dict(tutorial.get("digits-a").layers)
    weights = {l: np.zeros(n) for l, n in layers.items()}
    weights["head"][:200] = 1.0
    weights["stage4"][10:20] = 1.0
    meta = tutorial.registry.meta("digits-a")
    tutorial.put_mask("heads", Mask("focus", "efficientnet-lite0", meta["weights_sha256"], layers, weights),
                      replace=True)
    tutorial.put("other-1", _synthetic(seed=1))
    tutorial.put("other-2", _synthetic(seed=2))
    try:
        rep = R.build_report(tutorial, mask="heads")
        g = rep.groups[0]
        neurons = {"stage4": list(range(10, 20)), "head": list(range(200))}  # the mask's layer order
        names = g.pairwise.names
        assert np.array_equal(g.pairwise.distance, tutorial.matrix(names, neurons=neurons))
        assert "mask 'heads': 210 of 2,064 neurons" == g.focus
        assert "does not apply" in rep.groups[1].note
        rep = R.build_report(tutorial, layers=["head"])
        assert rep.groups[0].focus == "layer head: 1,280 of 2,064 neurons"
        assert "not in synthetic" in rep.groups[1].note
    finally:
        tutorial.remove("other-1")
        tutorial.remove("other-2")


# -- the page without a browser ---------------------------------------------------------------
def test_page_is_self_contained(tutorial):
    page = R.render_html(R.build_report(tutorial))
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "@import" not in page and "url(http" not in page and "<script src" not in page
    for name in tutorial.names():
        assert f'id="entry-{name}"' in page
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1))
    g = data["groups"][0]
    assert len(g["values"]) == 6 and sorted(g["names"]) == tutorial.names()
    assert page.count("data:image/webp;base64,") == 4 * 16


@pytest.mark.slow
def test_500_entries_stay_under_10_mb(thumbs_of, tmp_path):
    cat = synthetic_catalog(tmp_path / "big", 500, list(thumbs_of.values()))
    rep = R.build_report(cat)
    page = R.render_html(rep)
    size = len(page.encode())
    assert size < 10e6, size
    assert len(rep.groups) == 1 and len(rep.groups[0].names) == 500
    assert page.count('class="card"') == 500
    (tmp_path / "big.html").write_text(page)
    if NO_BROWSER is None:  # and it renders: every card, the heatmap drawn
        with chromium() as drv:
            drv.get((tmp_path / "big.html").as_uri())
            assert console_errors(drv) == []
            assert drv.execute_script("return document.querySelectorAll('article.card').length") == 500
            assert _distinct_colours(drv) > 20


# -- the page in a real browser -----------------------------------------------------------------
def _distinct_colours(drv) -> int:
    return drv.execute_script("""
        const c = document.querySelector('canvas.heatmap');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let k = 0; k < d.length; k += 4) seen.add((d[k] << 16) | (d[k + 1] << 8) | d[k + 2]);
        return seen.size;""")


@needs_browser
def test_page_in_a_real_browser(tutorial, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    rep = R.build_report(tutorial)
    out = tmp_path / "report.html"
    out.write_text(R.render_html(rep))
    with chromium() as drv:
        drv.get(out.as_uri())
        assert console_errors(drv) == []
        # nothing fetched: every resource the page loaded is inline
        urls = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith("data:") for u in urls), urls
        for name in tutorial.names():
            card = drv.find_element(By.ID, f"entry-{name}")
            assert name in card.text
            assert drv.find_elements(By.CSS_SELECTOR, f"#catalog-table tr[data-name='{name}']")
            imgs = card.find_elements(By.TAG_NAME, "img")
            assert len(imgs) == 16 and all(drv.execute_script("return arguments[0].naturalWidth", i) == 96 for i in imgs)
        # the heatmap is drawn: cells of many colours, and hovering one tells its value
        assert _distinct_colours(drv) > 8
        canvas = drv.find_element(By.CSS_SELECTOR, "canvas.heatmap")
        g = json.loads(drv.find_element(By.ID, "report-data").get_attribute("textContent"))["groups"][0]
        drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        cell, margin = float(canvas.get_attribute("data-cell")), float(canvas.get_attribute("data-margin"))
        x, y = margin + 1.5 * cell, margin + 0.5 * cell  # row 0, column 1 (offsets are from the centre)
        ActionChains(drv).move_to_element_with_offset(canvas, int(x - canvas.size["width"] / 2),
                                                      int(y - canvas.size["height"] / 2)).perform()
        tip = drv.find_element(By.ID, "tip")
        assert tip.is_displayed()
        assert tip.text.startswith(f"{g['names'][0]} ↔ {g['names'][1]}") and f"EMD {R.fmt_distance(g['values'][0])}" in tip.text
        # a click on a card's neighbour scrolls to that card
        first_nb = rep.neighbours("faces-a")[0][0]
        link = drv.find_element(By.CSS_SELECTOR, f"#entry-faces-a .near a.nb[href='#entry-{first_nb}']")
        drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
        before = drv.execute_script("return window.scrollY")
        link.click()
        time.sleep(0.3)
        top = drv.execute_script(f"return document.getElementById('entry-{first_nb}').getBoundingClientRect().top")
        assert 100 <= top <= 140, top  # at the top, just under the sticky header (scroll-margin-top 120px)
        assert drv.execute_script("return location.hash") == f"#entry-{first_nb}"
        assert drv.execute_script("return window.scrollY") != before or top <= 200
        # the table sorts, both ways
        drv.execute_script("window.scrollTo(0, 0)")
        header = drv.find_element(By.XPATH, "//table[@id='catalog-table']//th[text()='Size']")
        header.click()
        sizes = [int(td.get_attribute("data-v")) for td in
                 drv.find_elements(By.CSS_SELECTOR, "#catalog-table tbody td:nth-child(5)")]
        assert sizes == sorted(sizes)
        header.click()
        sizes = [int(td.get_attribute("data-v")) for td in
                 drv.find_elements(By.CSS_SELECTOR, "#catalog-table tbody td:nth-child(5)")]
        assert sizes == sorted(sizes, reverse=True)
        assert console_errors(drv) == []


def test_report_command(vdna, tutorial, tmp_path):
    env = {"VDNA_REGISTRY": str(tutorial.root)}
    r = vdna("report", tmp_path / "out.html", env=env)
    assert r.code == 0 and "wrote" in r.stderr, r.stderr
    assert (tmp_path / "out.html").read_text().startswith("<!doctype html>")
    r = vdna("report", "-", "--entries", "digits-*", env=env)
    assert r.code == 0 and "digits-a" in r.stdout and "faces-a" not in r.stdout and "<html" not in r.stdout
    r = vdna("report", tmp_path / "out.txt", "--text", env=env)
    assert r.code == 0 and "nearest:" in (tmp_path / "out.txt").read_text()
    r = vdna("report", tmp_path / "out.pdf", env=env)
    assert r.code == 1 and r.stderr.startswith("error: the report is an HTML page") and "Traceback" not in r.stderr
    r = vdna("report", tmp_path / "x.html", "--entries", "zzz", env=env)
    assert r.code == 3 and "no entry matches 'zzz'" in r.stderr  # not found (docs/cli.md)
