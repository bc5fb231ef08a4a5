"""Figures from real DNAs (the offline efficientnet-lite0 on the real sample images): the PNGs
the commands write, and what the figures draw held against the numbers they explain (the
shaded area of each neuron panel is its EMD; the top axis's activations agree with the DNA's
own Gaussian; the matrix's order is scipy's; the colour bars are there and labelled)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from vdnacli import plots  # noqa: E402
from vdnacli.distances import compare  # noqa: E402


def _png(path, min_w=300, min_h=200):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h
        extrema = im.convert("L").getextrema()
        assert extrema[0] < extrema[1], "blank image"


@pytest.mark.slow  # seven CLI processes, each loading torch and the network
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
    assert bad.code != 0 and "PNG" in bad.stderr and "Traceback" not in bad.stderr


# -- compare ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_vs_faces(real_dnas):
    a, b = real_dnas["digits-a"], real_dnas["faces-a"]
    c = compare(a, b)
    fig = plots.draw_compare(c, a, b)
    yield c, a, b, fig
    import matplotlib.pyplot as plt

    plt.close(fig)


def _polygon_area(path) -> float:
    v = path.vertices
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _neuron_axes(fig):
    """{(layer, neuron): (CDF axes, title)} of the compare figure's neuron panels."""
    out = {}
    for ax in fig.axes:
        m = re.match(r"(\w+)\[(\d+)\]: EMD ([\d.]+) bins \((.*)\)$", ax.get_title())
        if m:
            out[(m[1], int(m[2]))] = (ax, float(m[3]), m[4])
    return out


def test_compare_shaded_area_is_each_neurons_emd(digits_vs_faces):
    c, a, b, fig = digits_vs_faces
    panels = _neuron_axes(fig)
    assert len(panels) == 6  # the 5 largest and a median one
    n = sum(len(v) for v in c.per_neuron.values())
    whys = [why for _, _, why in panels.values()]
    assert whys[:5] == [f"#{r} of {n:,}" for r in range(1, 6)] and whys[5].startswith("median")
    ranked = sorted(np.concatenate(list(c.per_neuron.values())), reverse=True)
    for (layer, idx), (ax, shown, why) in panels.items():
        emd = float(c.per_neuron[layer][idx])
        assert shown == pytest.approx(emd, rel=1e-3)  # the title's number
        if why.startswith("median"):
            assert emd == ranked[n // 2]
        # the two shaded polygons (A's CDF above, B's above) add up to the neuron's EMD in bins
        area = sum(_polygon_area(p) for coll in ax.collections for p in coll.get_paths())
        assert area == pytest.approx(emd, rel=1e-9)
        # the plotted CDFs are the EMD's own: their summed difference is the EMD to the last bit
        fa, fb = (np.asarray(line.get_ydata()) for line in ax.lines[:2])
        assert float(np.abs(fa - fb).sum()) == emd
        assert ax.get_ylabel() in ("cumulative fraction", "")
    assert plots.cdf_pair(a.hist["head"][0], b.hist["head"][0]).emd == float(c.per_neuron["head"][0])


def test_compare_axes_say_their_units(digits_vs_faces):
    c, a, b, fig = digits_vs_faces
    every = fig.axes + [child for ax in fig.axes for child in ax.child_axes]  # + the top (activation) axes
    labels = {ax.get_ylabel() for ax in every} | {ax.get_xlabel() for ax in every}
    assert {"mean EMD (bins)", "cumulative fraction", "fraction per bin", "bin (of 1,000)", "activation"} <= labels
    assert any(ax.get_yscale() == "log" for ax in fig.axes)  # the densities
    assert f"{c.distance:.4g} bins" in fig.get_suptitle()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["digits-a (40 images)", "faces-a (40 images)"]
    assert "shaded area" in legend.get_title().get_text()


def test_compare_says_when_the_distance_is_weighted(real_dnas):
    import matplotlib.pyplot as plt

    from vdnacli.distances import make_selection

    a, b = real_dnas["digits-a"], real_dnas["faces-a"]
    sel = make_selection(a.layers, ["stage1"])
    w = {"stage1": np.linspace(0.0, 2.0 / 16, 16)}
    c = compare(a, b, "emd", sel, w)
    fig = plots.draw_compare(c, a, b)
    try:
        assert f"EMD {c.distance:.4g} bins (weighted mean over 16 neurons)" in fig.get_suptitle()
        assert "weighted mean of these areas" in fig.legends[0].get_title().get_text()
    finally:
        plt.close(fig)


def test_top_axis_activations_agree_with_the_dna_gaussian(real_dnas):
    """A neuron's mean read off the histogram through the top axis's bin -> activation map is
    its mean activation (the Gaussian counted beside the histogram), within binning's half bin."""
    d = real_dnas["faces-a"]
    assert d.ranges is not None
    for layer in ("stage1", "stage7", "head"):
        h = d.hist[layer].astype(np.float64)
        bins = h.shape[1]
        for i in range(0, h.shape[0], max(1, h.shape[0] // 16)):
            lo, per_bin = plots.bin_axis(d.ranges, "float32", layer, i, bins)
            mean = float((h[i] * (lo + (np.arange(bins) + 0.5) * per_bin)).sum() / h[i].sum())
            assert abs(mean - d.gauss[layer].mean[i]) < 0.5 * per_bin


def test_compare_gaussian_metric_panels(real_dnas):
    import matplotlib.pyplot as plt

    a, b = real_dnas["digits-a"], real_dnas["photos-a"]
    c = compare(a, b, "nfd")
    fig = plots.draw_compare(c, a, b, top=2)
    try:
        titles = [ax.get_title() for ax in fig.axes if "NFD" in ax.get_title() and "[" in ax.get_title()]
        assert len(titles) == 3
        assert {ax.get_xlabel() for ax in fig.axes} >= {"activation"}
        assert "mean NFD" in {ax.get_ylabel() for ax in fig.axes}
    finally:
        plt.close(fig)


# -- show --------------------------------------------------------------------------------------
def test_show_has_a_labelled_colour_bar(real_dnas):
    import matplotlib.pyplot as plt

    fig = plots.draw_dna(real_dnas["digits-a"])
    try:
        bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
        assert len(bars) == 1
        assert "fraction of the neuron's activations" in bars[0].get_ylabel()
        assert bars[0].get_yscale() == "log"
        assert "bin" in fig.axes[len(real_dnas["digits-a"].layers) - 1].get_xlabel()
    finally:
        plt.close(fig)


# -- matrix --------------------------------------------------------------------------------------
def _scipy_order(m):
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    y = squareform(m, checks=False)
    return list(leaves_list(optimal_leaf_ordering(linkage(y, "average"), y)))


def test_matrix_order_is_scipys_and_the_reports(real_dnas):
    import matplotlib.pyplot as plt

    from vdnacli.clustering import leaf_order

    names = sorted(real_dnas)
    m = np.array([[compare(real_dnas[x], real_dnas[y]).distance for y in names] for x in names])
    fig = plots.draw_matrix(names, m, "emd")
    try:
        heat = next(ax for ax in fig.axes if ax.images and getattr(ax, "_colorbar", None) is None)
        shown = [t.get_text() for t in heat.get_yticklabels()]
        assert shown == [names[i] for i in _scipy_order(m)] == [names[i] for i in leaf_order(m)]
        assert [t.get_text() for t in heat.get_xticklabels()] == shown
        bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
        assert len(bars) == 1 and bars[0].get_ylabel() == "EMD (bins, mean over neurons)"
        # the twins sit next to each other
        for x in ("digits", "faces", "photos"):
            assert abs(shown.index(f"{x}-a") - shown.index(f"{x}-b")) == 1
    finally:
        plt.close(fig)


def test_matrix_labels_stay_legible_at_200_entries():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    n = 200
    pts = rng.integers(0, 10, n)[:, None] * 5.0 + rng.normal(size=(n, 2))
    m = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    names = [f"dataset-{i:03d}" + ("-with-a-rather-long-descriptive-suffix" if i % 3 == 0 else "") for i in range(n)]
    fig = plots.draw_matrix(names, m, "emd")
    try:
        heat = next(ax for ax in fig.axes if ax.images and getattr(ax, "_colorbar", None) is None)
        labels = heat.get_yticklabels()
        assert len(labels) == n
        assert all(t.get_fontsize() >= 5 for t in labels)
        texts = [t.get_text() for t in labels]
        assert max(map(len, texts)) <= 28 and len(set(texts)) == n  # cut, still telling entries apart
        assert plots.short_label(names[0]) == "dataset-000-with-a…ve-suffix"
        assert [t.get_text() for t in labels] == [plots.short_label(names[i]) for i in _scipy_order(m)]
        w, h = fig.get_size_inches()
        assert n * 0.1 <= h  # at least 0.1 in per row
    finally:
        plt.close(fig)


def test_matrix_without_scipy_draws_the_fallback_order(monkeypatch):
    import builtins

    import matplotlib.pyplot as plt

    from vdnacli.clustering import upgma_order

    real_import = builtins.__import__

    def no_scipy(name, *a, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    pts = np.array([0.0, 10.0, 0.5, 10.4, 0.2])
    m = np.abs(pts[:, None] - pts[None])
    monkeypatch.setattr(builtins, "__import__", no_scipy)
    fig = plots.draw_matrix(list("abcde"), m, "emd")
    try:
        heat = next(ax for ax in fig.axes if ax.images and getattr(ax, "_colorbar", None) is None)
        assert [t.get_text() for t in heat.get_yticklabels()] == ["abcde"[i] for i in upgma_order(m)]
        assert "scipy not installed" in "".join(ax.get_title() for ax in fig.axes)
    finally:
        plt.close(fig)
