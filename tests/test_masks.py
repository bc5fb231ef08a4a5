"""Attribute masks on DNAs with planted sensitive neurons, and end to end on real images."""
from __future__ import annotations

import numpy as np
import pytest

from vdnacli.catalog import Catalog
from vdnacli.distances import compare, make_selection
from vdnacli.dna import DNA, new_meta
from vdnacli.errors import ConfigError, IncompatibleDNAError
from vdnacli.masks import Mask, create_focus_mask, learn_ignore_mask

LAYERS = {"l1": 120, "l2": 80}
BINS = 200
PLANTED = {"a": np.arange(5, 15), "b": np.arange(40, 50), "c": np.arange(130, 140)}  # global neuron indices


def planted_dna(rng, attrs: set[str], base: np.ndarray, samples: int = 4000, shift: float = 45.0) -> DNA:
    n = sum(LAYERS.values())
    mu = base.copy()
    for attr in attrs:
        mu[PLANTED[attr]] += shift
    x = rng.normal(mu[:, None], 12.0, (n, samples))
    idx = np.clip(x.astype(np.int64), 0, BINS - 1)
    h = np.zeros((n, BINS), dtype=np.int64)
    np.add.at(h, (np.repeat(np.arange(n), samples), idx.ravel()), 1)
    meta = new_meta(extractor="synthetic", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=LAYERS, bins=BINS,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = 100
    return DNA(meta=meta, hist={"l1": h[:120], "l2": h[120:]})


def global_selected(mask: Mask) -> set[int]:
    offs = {"l1": 0, "l2": 120}
    return {int(offs[l] + i) for l, idx in mask.selected.items() for i in idx}


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    out = {}
    for attr in PLANTED:
        out[attr] = []
        for _ in range(6):
            base = rng.uniform(40, 110, sum(LAYERS.values()))  # each pair: other content
            out[attr].append((planted_dna(rng, {attr}, base), planted_dna(rng, set(), base)))
    return out


def test_focus_mask_recovers_planted_neurons(pairs):
    withs = [w for w, _ in pairs["b"][:3]]
    withouts = [wo for _, wo in pairs["b"][:3]]
    mask = create_focus_mask(withs, withouts, top=10)
    assert global_selected(mask) == set(PLANTED["b"].tolist())
    assert mask.kind == "focus" and mask.info["most_sensitive"][0]["sensitivity"] > 30


def test_learned_weights_ignore_target_and_keep_others(pairs):
    mask, report = learn_ignore_mask(pairs, "a", max_steps=5000, seed=1)
    assert report.delta_a >= 0.9, report
    assert report.mean_abs_delta_b <= 0.15, report
    assert all((w >= 0).all() for w in mask.weights.values())
    # the masked distance is insensitive to the planted attribute, the unmasked one is not
    w_with, w_without = pairs["a"][0]
    sel = make_selection(w_with.layers)
    plain = compare(w_with, w_without).distance
    masked = compare(w_with, w_without, "emd", sel, mask.weights).distance
    assert masked < 0.15 * plain
    b_with, b_without = pairs["b"][0]
    plain_b = compare(b_with, b_without).distance
    masked_b = compare(b_with, b_without, "emd", sel, mask.weights).distance
    assert abs(masked_b - plain_b) < 0.2 * plain_b


def test_mask_errors(pairs):
    w, wo = pairs["a"][0]
    with pytest.raises(ConfigError):
        create_focus_mask([w], [], top=5)
    with pytest.raises(ConfigError):
        create_focus_mask([w], [wo], top=10_000)
    with pytest.raises(ConfigError, match="at least 2"):
        learn_ignore_mask({"a": pairs["a"][:1], "b": pairs["b"]}, "a")
    with pytest.raises(ConfigError):
        learn_ignore_mask({"a": pairs["a"]}, "a")
    mask = create_focus_mask([w], [wo], top=5)
    other = dict(w.meta, extractor="efficientnet-lite0")
    with pytest.raises(IncompatibleDNAError):
        mask.check(other)


def test_masks_in_registry_and_masked_nearest(pairs, tmp_path):
    cat = Catalog(tmp_path / "reg")
    # A catalog: plain sets and sets with attribute a, all from one content base.
    rng = np.random.default_rng(5)
    base = rng.uniform(40, 110, sum(LAYERS.values()))
    cat.put("query-a", planted_dna(rng, {"a"}, base))
    cat.put("same-content-no-a", planted_dna(rng, set(), base))
    cat.put("other-content-a", planted_dna(rng, {"a"}, rng.uniform(40, 110, sum(LAYERS.values()))))
    mask, _ = learn_ignore_mask(pairs, "a", max_steps=5000, seed=1)
    cat.put_mask("ignore-a", mask)
    back = cat.get_mask("ignore-a")
    for l in LAYERS:
        np.testing.assert_array_equal(back.weights[l], mask.weights[l])
    assert cat.masks.names() == ["ignore-a"] and "ignore-a" not in cat.names()
    _, _, weights = back.focus()
    fast, _ = cat.nearest("query-a", top=2, weights=weights)
    brute, _ = cat.nearest("query-a", top=2, weights=weights, exact=True)
    assert fast == brute
    assert fast[0][0] == "same-content-no-a"  # content matters once the attribute is ignored
    plain, _ = cat.nearest("query-a", top=2)
    assert plain[0][0] != "same-content-no-a" or plain[0][1] > 2 * fast[0][1]


def test_cli_mask_workflow_on_real_images(vdna, sample_dirs, tmp_path):
    """Real images: digits with and without a planted attribute (a white frame)."""
    from PIL import Image, ImageOps

    def framed(src, dst):
        dst.mkdir()
        for p in sorted(src.glob("*.png"))[:20]:
            img = Image.open(p).convert("L").resize((32, 32))
            ImageOps.expand(img, border=6, fill=255).save(dst / p.name)

    def plain(src, dst):
        dst.mkdir()
        for p in sorted(src.glob("*.png"))[:20]:
            Image.open(p).convert("L").resize((44, 44)).save(dst / p.name)

    framed(sample_dirs["digits-a"], tmp_path / "frame")
    plain(sample_dirs["digits-a"], tmp_path / "plain")
    for n in ("frame", "plain"):
        assert vdna("add", n, tmp_path / n).code == 0
    r = vdna("mask", "create", "frame-mask", "--with", "frame", "--without", "plain", "--top", "20", "--json")
    assert r.code == 0, r.stderr
    assert len(r.json()["most_sensitive"]) == 20
    lst = vdna("mask", "list", "--json").json()
    assert [m["name"] for m in lst] == ["frame-mask"] and lst[0]["neurons_selected"] == 20
    focused = vdna("compare", "frame", "plain", "--mask", "frame-mask", "--json").json()
    full = vdna("compare", "frame", "plain", "--json").json()
    assert focused["distance"] > 2 * full["distance"]  # the focus neurons are the sensitive ones
    bad = vdna("compare", "frame", "plain", "--ignore", "frame-mask")
    assert bad.code == 1 and "--mask" in bad.stderr
    assert vdna("mask", "remove", "frame-mask").code == 0
    assert vdna("mask", "list", "--json").json() == []
