"""Figures rendered from real DNAs are valid PNGs of plausible size."""
from __future__ import annotations

import pytest
from PIL import Image

pytest.importorskip("matplotlib")


def _png(path, min_w=300, min_h=200):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h
        extrema = im.convert("L").getextrema()
        assert extrema[0] < extrema[1], "blank image"


def test_plot_commands(vdna, sample_dirs, tmp_path):
    for n in ("digits-a", "faces-a", "photos-a"):
        assert vdna("add", n, sample_dirs[n], "--limit", "15").code == 0
    r = vdna("compare", "digits-a", "faces-a", "--plot", tmp_path / "cmp.png")
    assert r.code == 0, r.stderr
    _png(tmp_path / "cmp.png", 800, 600)
    assert vdna("matrix", "--plot", tmp_path / "m.png").code == 0
    _png(tmp_path / "m.png")
    assert vdna("show", "faces-a", "--plot", tmp_path / "show.png").code == 0
    _png(tmp_path / "show.png", 600, 600)
    src = tmp_path / "src"
    src.mkdir()
    for sub in ("faces-b", "digits-b"):
        for p in sorted(sample_dirs[sub].glob("*.png"))[:6]:
            (src / f"{sub}-{p.name}").write_bytes(p.read_bytes())
    assert vdna("score", src, "--against", "faces-a", "--sheet", tmp_path / "sheet.png").code == 0
    _png(tmp_path / "sheet.png", 500, 300)
    assert vdna("similar", src / "faces-b-0000.png", "--in", src, "--sheet", tmp_path / "sim.png").code == 0
    _png(tmp_path / "sim.png", 500, 300)
    bad = vdna("matrix", "--plot", tmp_path / "m.jpg")
    assert bad.code == 1 and "PNG" in bad.stderr


def test_cluster_order_groups_close_items():
    import numpy as np

    from vdnacli.plots import cluster_order

    pts = np.array([0.0, 10.0, 0.5, 10.4, 0.2])
    m = np.abs(pts[:, None] - pts[None])
    order = cluster_order(m)
    groups = [set(order[:3]), set(order[3:])]
    assert {0, 2, 4} in groups and {1, 3} in groups
