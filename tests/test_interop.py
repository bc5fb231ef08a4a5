"""Upstream vdna 0.1.1 file pairs (export/import, hostile files) and transfer scoring."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from vdnacli import transfer
from vdnacli.dna import DNA, Gaussian, new_meta
from vdnacli.errors import FormatError, SourceError
from vdnacli.interop import export_upstream, import_upstream

LAYERS = {"block1": 5, "block2": 3}
PRE = {"crop": "center", "resize": "pil-bicubic-antialias", "size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
RELEVANT = ("extractor", "weights_sha256", "ranges_sha256", "layers", "bins", "preprocessing", "num_images", "kinds",
            "precision")


def hist_dna(seed=0, bins=20, images=12, extractor="efficientnet-lite0") -> DNA:
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor=extractor, weights_sha256="a" * 64, ranges_sha256="b" * 64, layers=LAYERS, bins=bins,
                    preprocessing=PRE, kinds=("hist",))
    meta["num_images"] = images
    meta["name"] = "synthetic"
    return DNA(meta=meta, hist={l: rng.integers(0, 5000, size=(n, bins)).astype(np.int64) for l, n in LAYERS.items()})


def gauss_dna(seed=0, images=40) -> DNA:
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor="mugs-vit-b16", weights_sha256="c" * 64, ranges_sha256=None, layers=LAYERS, bins=0,
                    preprocessing=PRE, kinds=("gauss",))
    meta["num_images"] = images
    gauss = {}
    for l, n in LAYERS.items():
        x = rng.normal(rng.normal(0, 3, n), rng.uniform(0.2, 2, n), size=(images, n))
        gauss[l] = Gaussian(images, x.sum(0), (x * x).sum(0))
    return DNA(meta=meta, gauss=gauss)


def write_pair(stem: Path, meta, arrays: dict | None = None, raw_npz: bytes | None = None) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    if raw_npz is not None:
        stem.with_suffix(".npz").write_bytes(raw_npz)
    elif arrays is not None:
        np.savez(stem.with_suffix(".npz"), **arrays)
    return stem


def upstream_meta(**over) -> dict:
    m = {
        "type": "histogram",
        "neurons_list": {"block1": 5, "block2": 3},
        "num_images": 10,
        "distribution": {"hist_nb_bins": 4},
        "feature_extractor_name": "mugs_vit_base",
        "vdna_version": "0.1.1",
    }
    m.update(over)
    return m


def upstream_arrays(seed=0, bins=4) -> dict:
    rng = np.random.default_rng(seed)
    return {l: rng.integers(0, 100, size=(n, bins)).astype(np.int32) for l, n in LAYERS.items()}


# -- round trips -------------------------------------------------------------------------------
def test_hist_roundtrip(tmp_path):
    dna = hist_dna(1)
    j, n = export_upstream(dna, tmp_path / "out" / "syn")
    assert j == tmp_path / "out" / "syn.json" and n == tmp_path / "out" / "syn.npz"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["syn.json", "syn.npz"]  # no .part left
    meta = json.loads(j.read_text())
    assert meta["type"] == "histogram"
    assert meta["neurons_list"] == LAYERS
    assert meta["num_images"] == 12
    assert meta["distribution"]["hist_nb_bins"] == 20
    with np.load(n, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(meta["neurons_list"])
        for l in LAYERS:
            assert z[l].dtype == np.int32
            np.testing.assert_array_equal(z[l], dna.hist[l])
    back = import_upstream(tmp_path / "out" / "syn")
    for key in RELEVANT:
        assert back.meta[key] == dna.meta[key], key
    assert back.kinds == ["hist"] and back.gauss is None
    for l in LAYERS:
        assert back.hist[l].dtype == np.int64
        np.testing.assert_array_equal(back.hist[l], dna.hist[l])
    # the .json or .npz path works as well as the stem
    for p in (j, n):
        np.testing.assert_array_equal(import_upstream(p).hist["block2"], dna.hist["block2"])


def test_gauss_roundtrip(tmp_path):
    dna = gauss_dna(2)
    j, n = export_upstream(dna, tmp_path / "g.json")
    meta = json.loads(j.read_text())
    assert meta["type"] == "gaussian"
    assert meta["feature_extractor_name"] == "mugs_vit_base"
    with np.load(n, allow_pickle=False) as z:
        assert sorted(z.files) == sorted([f"mu-{l}" for l in LAYERS] + [f"var-{l}" for l in LAYERS])
        assert all(z[k].dtype == np.float32 for k in z.files)
    back = import_upstream(tmp_path / "g")
    for key in RELEVANT:
        if key != "bins":
            assert back.meta[key] == dna.meta[key], key
    assert back.meta["bins"] is None
    assert back.kinds == ["gauss"] and back.hist is None
    for l in LAYERS:
        g0, g1 = dna.gauss[l], back.gauss[l]
        assert g1.count == g0.count
        np.testing.assert_allclose(g1.mean, g0.mean, rtol=2e-7, atol=1e-7)
        np.testing.assert_allclose(g1.var, g0.var, rtol=2e-6, atol=1e-7)


def test_dna_with_both_kinds_exports_histograms(tmp_path):
    h = hist_dna(3)
    g = gauss_dna(3)
    both = DNA(meta=dict(h.meta, kinds=["hist", "gauss"]), hist=h.hist, gauss=g.gauss)
    export_upstream(both, tmp_path / "b")
    back = import_upstream(tmp_path / "b")
    assert back.kinds == ["hist"]
    np.testing.assert_array_equal(back.hist["block1"], h.hist["block1"])


def test_handwritten_upstream_pair_imports(tmp_path):
    arrays = upstream_arrays(4)
    stem = write_pair(tmp_path / "ffhq_mugs", upstream_meta(data_settings={"crop_to_square_pre_resize": "center"}),
                      arrays)
    dna = import_upstream(stem)
    assert dna.meta["extractor"] == "mugs-vit-b16"
    assert dna.meta["weights_sha256"] is None and dna.meta["ranges_sha256"] is None
    assert dna.meta["bins"] == 4
    assert dna.num_images == 10
    assert dna.layers == {"block1": 5, "block2": 3}
    assert dna.meta["preprocessing"]["crop"] == "center"
    assert dna.meta["origin"]["kind"] == "upstream-vdna"
    for l in LAYERS:
        np.testing.assert_array_equal(dna.hist[l], arrays[l])
    # an unknown upstream extractor keeps its name
    stem2 = write_pair(tmp_path / "other", upstream_meta(feature_extractor_name="my_net"), arrays)
    assert import_upstream(stem2).meta["extractor"] == "my_net"


def test_handwritten_upstream_gaussian_imports(tmp_path):
    mu = {l: np.linspace(-1, 1, n).astype(np.float32) for l, n in LAYERS.items()}
    var = {l: np.linspace(0.5, 2, n).astype(np.float32) for l, n in LAYERS.items()}
    arrays = {**{f"mu-{l}": v for l, v in mu.items()}, **{f"var-{l}": v for l, v in var.items()}}
    stem = write_pair(tmp_path / "g", upstream_meta(type="gaussian", num_images=50, feature_extractor_name="vgg16"),
                      arrays)
    dna = import_upstream(stem)
    assert dna.meta["extractor"] == "vgg16" and dna.kinds == ["gauss"]
    for l in LAYERS:
        np.testing.assert_allclose(dna.gauss[l].mean, mu[l], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dna.gauss[l].var, var[l], rtol=1e-9)


# -- hostile files -------------------------------------------------------------------------------
class _Trap:
    """Unpickling this runs Path.touch(marker): proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_npz_with_pickled_objects_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"
    arrays = upstream_arrays()
    arrays["block1"] = np.array([_Trap(marker)], dtype=object)
    write_pair(tmp_path / "evil", upstream_meta(), arrays)
    with zipfile.ZipFile(tmp_path / "evil.npz") as z:  # the archive really holds a pickle
        assert any(b"touch" in z.read(i) for i in z.namelist())
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "evil")
    assert not marker.exists()


def test_npz_with_dict_object_array_is_refused(tmp_path):
    arrays = upstream_arrays()
    arrays["block2"] = np.array([{"a": 1}], dtype=object)
    write_pair(tmp_path / "obj", upstream_meta(), arrays)
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "obj")


def test_raw_pickle_instead_of_npz_is_refused(tmp_path):
    marker = tmp_path / "executed"
    write_pair(tmp_path / "pk", upstream_meta(), raw_npz=pickle.dumps(_Trap(marker)))
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "pk")
    assert not marker.exists()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a.update(block1=a["block1"][:, :3]),  # wrong number of bins
        lambda a: a.update(block2=a["block2"][:2]),  # wrong number of neurons
        lambda a: a.update(block1=a["block1"].ravel()),  # wrong rank
        lambda a: a.pop("block2"),  # missing layer
        lambda a: a.update(block1=a["block1"].astype(np.float32)),  # not integer counts
        lambda a: a["block1"].__setitem__((0, 0), -1),  # negative count
    ],
    ids=["bins", "neurons", "rank", "missing", "float", "negative"],
)
def test_bad_histogram_arrays(tmp_path, mutate):
    arrays = upstream_arrays()
    mutate(arrays)
    write_pair(tmp_path / "bad", upstream_meta(), arrays)
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "bad")


@pytest.mark.parametrize(
    "arrays",
    [
        {"mu-block1": np.zeros(5, np.float32), "var-block1": np.ones(5, np.float32), "mu-block2": np.zeros(3, np.float32)},
        {"mu-block1": np.zeros(5), "var-block1": -np.ones(5), "mu-block2": np.zeros(3), "var-block2": np.ones(3)},
        {"mu-block1": np.full(5, np.nan), "var-block1": np.ones(5), "mu-block2": np.zeros(3), "var-block2": np.ones(3)},
        {"mu-block1": np.zeros(4), "var-block1": np.ones(4), "mu-block2": np.zeros(3), "var-block2": np.ones(3)},
    ],
    ids=["missing-var", "negative-var", "nan-mean", "shape"],
)
def test_bad_gaussian_arrays(tmp_path, arrays):
    write_pair(tmp_path / "bad", upstream_meta(type="gaussian"), arrays)
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "bad")


@pytest.mark.parametrize(
    "meta",
    [
        {k: v for k, v in upstream_meta().items() if k != "type"},
        {k: v for k, v in upstream_meta().items() if k != "neurons_list"},
        {k: v for k, v in upstream_meta().items() if k != "num_images"},
        upstream_meta(neurons_list=["block1", "block2"]),
        upstream_meta(neurons_list={"block1": "five"}),
        upstream_meta(num_images="many"),
        upstream_meta(type="poisson"),
        [1, 2, 3],
        "a string",
        None,
        "{not json",
    ],
    ids=["no-type", "no-neurons", "no-num-images", "neurons-list", "neurons-str", "num-images-str", "type",
         "json-list", "json-string", "json-null", "not-json"],
)
def test_bad_json(tmp_path, meta):
    text = meta if meta == "{not json" else json.dumps(meta)
    write_pair(tmp_path / "bad", text, upstream_arrays())
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "bad")


def test_missing_files(tmp_path):
    write_pair(tmp_path / "half", upstream_meta())  # json only
    with pytest.raises(SourceError, match="half.npz"):
        import_upstream(tmp_path / "half")
    np.savez(tmp_path / "lonely.npz", **upstream_arrays())
    with pytest.raises(SourceError, match="lonely.json"):
        import_upstream(tmp_path / "lonely.npz")
    with pytest.raises(SourceError):
        import_upstream(tmp_path / "nothing")


def test_npz_that_is_not_a_zip(tmp_path):
    write_pair(tmp_path / "bad", upstream_meta(), raw_npz=b"PK\x03\x04 truncated garbage")
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "bad")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    write_pair(tmp_path / "npy", upstream_meta(), raw_npz=(tmp_path / "plain.npy").read_bytes())
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "npy")


@pytest.mark.parametrize("kind", ["histogram", "gaussian"])
def test_negative_num_images_is_refused(tmp_path, kind):
    if kind == "histogram":
        arrays = upstream_arrays()
    else:
        arrays = {f"{p}-{l}": np.ones(n, np.float32) for l, n in LAYERS.items() for p in ("mu", "var")}
    write_pair(tmp_path / "neg", upstream_meta(type=kind, num_images=-4), arrays)
    with pytest.raises(FormatError):
        import_upstream(tmp_path / "neg")


# -- transfer scoring (Eq. 8, Spearman) ----------------------------------------------------------
def test_evaluate_worked_example():
    reference = {"t": {"s1": 90.0, "s2": 10.0, "s3": 12.0}}
    # ground truth order s1 (90), s3 (12), s2 (10); the prediction swaps the last two
    rankings = {"t": [("s1", 0.1), ("s2", 0.2), ("s3", 0.3)]}
    ev = transfer.evaluate(rankings, reference)
    assert ev.discrepancy == pytest.approx((0 + 2 + 2) / 3, rel=1e-15)
    rho = spearmanr([-0.1, -0.2, -0.3], [90, 10, 12]).statistic
    assert rho == pytest.approx(0.5)
    assert ev.spearman == pytest.approx(rho, rel=1e-12)
    assert ev.per_target["t"]["sources"] == 3
    # a perfect ranking: d = 0, rho = 1
    perfect = transfer.evaluate({"t": [("s1", 0.1), ("s3", 0.2), ("s2", 0.3)]}, reference)
    assert perfect.discrepancy == 0.0 and perfect.spearman == pytest.approx(1.0)


def test_evaluate_mean_over_targets_and_ignores_unscored_sources():
    reference = {"t1": {"a": 50.0, "b": 40.0, "c": 70.0}, "t2": {"a": 1.0, "b": 3.0}}
    rankings = {
        "t1": [("a", 1.0), ("x", 1.5), ("b", 2.0), ("c", 3.0)],  # x has no reference score
        "t2": [("a", 0.5), ("b", 0.7)],
        "t3": [("a", 0.1)],  # no reference column: skipped
    }
    ev = transfer.evaluate(rankings, reference)
    # t1: gt c,a,b vs predicted a,b,c -> |70-50|,|50-40|,|40-70| ; t2: gt b,a vs a,b -> 2, 2
    # each target weighs the same (Eq. 8): the mean of the per-target means
    assert ev.discrepancy == pytest.approx(np.mean([np.mean([20, 10, 30]), np.mean([2, 2])]))
    assert ev.per_target["t1"]["discrepancy"] == pytest.approx(20.0)
    assert ev.per_target["t1"]["sources"] == 3
    assert set(ev.per_target) == {"t1", "t2"}
    r1 = spearmanr([-1.0, -2.0, -3.0], [50, 40, 70]).statistic
    r2 = spearmanr([-0.5, -0.7], [1, 3]).statistic
    assert ev.spearman == pytest.approx((r1 + r2) / 2, rel=1e-12)


def test_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(5)
    names = [f"s{i}" for i in range(15)]
    scores = dict(zip(names, rng.integers(0, 5, 15).astype(float)))
    dists = rng.integers(0, 4, 15).astype(float)
    ranked = sorted(zip(names, dists), key=lambda r: r[1])
    ev = transfer.evaluate({"t": ranked}, {"t": scores})
    exp = spearmanr([-d for _, d in ranked], [scores[n] for n, _ in ranked]).statistic
    assert ev.spearman == pytest.approx(exp, rel=1e-12)


def test_spearman_undefined_cases():
    ev = transfer.evaluate({"t": [("a", 1.0)]}, {"t": {"a": 3.0}})
    assert ev.discrepancy == 0.0 and ev.spearman is None
    ev = transfer.evaluate({"t": [("a", 1.0), ("b", 2.0)]}, {"t": {"a": 3.0, "b": 3.0}})
    assert ev.spearman is None
    ev = transfer.evaluate({"t": [("a", 1.0)]}, {"u": {"a": 3.0}})
    assert ev.discrepancy is None and ev.spearman is None and ev.per_target == {}


def test_read_reference(tmp_path):
    p = tmp_path / "ref.csv"
    p.write_text("Source, t1 ,t2\ns1,90,1.5\n s2 ,10,\n\ns3,12,-2e1\n")
    ref = transfer.read_reference(p)
    assert ref == {"t1": {"s1": 90.0, "s2": 10.0, "s3": 12.0}, "t2": {"s1": 1.5, "s3": -20.0}}


@pytest.mark.parametrize(
    "text",
    [
        "name,t1\ns1,1\n",  # header must start with 'source'
        "t1,source\ns1,1\n",
        "source,t1\n",  # no rows
        "",
        "source,t1\ns1,ninety\n",  # non-numeric cell
        "source,t1,t2\ns1,1,2x\n",
    ],
)
def test_read_reference_errors(tmp_path, text):
    p = tmp_path / "ref.csv"
    p.write_text(text)
    with pytest.raises(FormatError):
        transfer.read_reference(p)


def test_read_reference_missing_file(tmp_path):
    with pytest.raises(FormatError):
        transfer.read_reference(tmp_path / "absent.csv")


def test_discrepancy_weighs_every_target_the_same():
    """Eq. 8's 1/|V|: a target with fewer reference cells does not weigh less in d."""
    reference = {"t1": {"a": 10.0, "b": 0.0}, "t2": {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0}}
    rankings = {"t1": [("b", 1.0), ("a", 2.0)],  # swapped: |0 - 10| at both ranks -> mean 10
                "t2": [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]}  # perfect -> 0
    ev = transfer.evaluate(rankings, reference)
    assert ev.per_target["t1"]["discrepancy"] == 10.0 and ev.per_target["t2"]["discrepancy"] == 0.0
    assert ev.discrepancy == 5.0  # (10 + 0) / 2, not (10 + 10 + 0 * 4) / 6
