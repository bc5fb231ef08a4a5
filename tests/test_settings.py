"""ComputeSettings: one value from flag to file and back; `--like` reproduces an entry exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vdnacli.build import AddRequest, add, resolve_settings
from vdnacli.catalog import Catalog
from vdnacli.errors import ConfigError, ExtractorError
from vdnacli.pipeline import Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.sources import list_images

LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def few(sample_dirs):
    return list_images(sample_dirs["faces-a"])[:6]


@pytest.mark.parametrize("overrides", [
    {},
    {"crop": "random", "crop_seed": 3, "kinds": ("hist", "gauss")},
    {"resize": "clean", "crop": "none", "decode_mode": "plain", "binning": "vdna-0.1.1", "bins": 64},
    {"resize": "legacy_pytorch", "precision": "bf16"},
    {"decoder": "torch", "crop": "none", "resize": "pil"},
    {"kinds": ("layer-gauss",)},
])
def test_settings_round_trip_through_a_dna(few, lite0, overrides):
    settings = ComputeSettings.for_extractor(LITE0, **overrides)
    dna, _ = compute_dna(few, lite0, settings, Run(batch_size=6))
    back = ComputeSettings.from_meta(dna.meta)
    assert back == settings.replace(weights_sha256=lite0.weights_sha256,
                                    ranges_sha256=dna.meta["ranges_sha256"])
    assert back.recipe_name() == settings.recipe_name()


def test_paper_extractors_default_to_vdna_011s_recipe_and_ours_to_ours():
    assert ComputeSettings.for_extractor("mugs-vit-b16").recipe_name() == "vdna-0.1.1"
    assert ComputeSettings.for_extractor(LITE0).recipe_name() in ("vdnacli", "custom")
    assert ComputeSettings.for_extractor(LITE0).binning == "float32"


def test_bad_settings_are_one_clear_error():
    for bad in ({"crop": "left"}, {"resize": "nearest"}, {"binning": "float16"}, {"bins": 1}, {"kinds": ("pdf",)},
                {"decoder": "torch", "resize": "clean"}):
        with pytest.raises(ConfigError):
            ComputeSettings.for_extractor(LITE0, **bad)


def test_like_reproduces_an_entry_without_its_ranges_file(tmp_path, sample_dirs, few):
    """The entry keeps the ranges it was binned with: --like needs neither the file nor the flags."""
    from vdnacli.extractors import packaged_ranges, get_spec

    r = packaged_ranges(get_spec(LITE0))
    for l in r.mins:  # a custom, narrower calibration
        r.mins[l], r.maxs[l] = r.mins[l] * 0.5, r.maxs[l] * 0.5
    path = tmp_path / "narrow.json"
    r.save(path)
    cat = Catalog(tmp_path / "reg")
    custom = ComputeSettings.for_extractor(LITE0, ranges=path, crop="random", crop_seed=7, bins=200, resize="clean")
    add(cat, AddRequest(name="a", source=sample_dirs["faces-a"], settings=custom, limit=6, workers=0))
    path.unlink()
    settings, kept, notes = resolve_settings(cat, like="a")
    assert kept is not None and kept.sha256() == r.sha256() and notes == []
    add(cat, AddRequest(name="b", source=sample_dirs["faces-a"], settings=settings, like_ranges=kept, limit=6,
                        workers=0))
    assert cat.compare("a", "b").distance == 0
    assert cat.get("b").meta["origin"]["like"] == "a"
    # explicit flags override, and say so
    s2, _, notes = resolve_settings(cat, like="a", bins=100)
    assert s2.bins == 100 and "overriding bins of 'a'" in notes[0]


def test_like_refuses_other_weights_naming_the_flag(tmp_path, sample_dirs):
    cat = Catalog(tmp_path / "reg")
    add(cat, AddRequest(name="a", source=sample_dirs["faces-a"], limit=3, workers=0))
    meta, arrays = cat.registry.read("a")
    meta["weights_sha256"] = "ab" * 32
    cat.registry.put("a", meta, arrays, replace=True)
    settings, kept, _ = resolve_settings(cat, like="a")
    with pytest.raises(ExtractorError, match="pass the original file with --weights"):
        add(cat, AddRequest(name="b", source=sample_dirs["faces-a"], settings=settings, like_ranges=kept, limit=3,
                            workers=0))


def test_like_an_imported_vdna_011_file_takes_its_recipe(tmp_path, sample_dirs):
    """A file of the paper's code records crop, resize and bins; --like computes with its recipe
    (plain decode, clean resize, float64 + histc binning) and notes the unverifiable weights."""
    from vdnacli.interop import import_upstream

    layers = {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192, "stage7": 320,
              "head": 1280}
    (tmp_path / "pub.json").write_text(json.dumps({
        "type": "histogram", "name": "histogram-100", "num_images": 5, "neurons_list": layers,
        "distribution": {"hist_nb_bins": 100}, "feature_extractor_name": LITE0, "vdna_version": "0.1.1",
        "data_settings": {"crop_to_square_pre_resize": "center", "resize_mode": "clean"}}))
    np.savez(tmp_path / "pub.npz", **{l: np.ones((n, 100), np.int32) for l, n in layers.items()})
    cat = Catalog(tmp_path / "reg")
    cat.put("pub", import_upstream(tmp_path / "pub"))
    settings, kept, notes = resolve_settings(cat, like="pub")
    assert (settings.decode_mode, settings.crop, settings.resize, settings.binning, settings.bins) == \
        ("plain", "center", "clean", "vdna-0.1.1", 100)
    assert settings.recipe_name() == "custom" and kept is None
    assert any("does not record its weights" in n for n in notes)
    dna, _ = add(cat, AddRequest(name="mine", source=sample_dirs["faces-a"], settings=settings, limit=4, workers=0))
    assert dna.meta["binning"] == "vdna-0.1.1" and dna.meta["preprocessing"]["resize"] == "clean"
    assert cat.compare("mine", "pub").distance > 0  # comparable: same extractor, layers, bins


def test_entries_made_before_settings_were_recorded_read_back(tmp_path, sample_dirs):
    """Old metadata (no decode mode, no binning rule, no kept ranges) means what it meant then."""
    cat = Catalog(tmp_path / "reg")
    add(cat, AddRequest(name="a", source=sample_dirs["faces-a"], limit=4, workers=0))
    meta, arrays = cat.registry.read("a")
    for key in ("binning", "ranges"):
        meta.pop(key)
    meta["preprocessing"].pop("decode")
    arrays = {k: v for k, v in arrays.items() if not k.startswith("ranges/")}
    cat.registry.put("old", meta, arrays)
    settings, kept, _ = resolve_settings(cat, like="old")
    assert kept is None and settings == ComputeSettings.from_meta(cat.registry.meta("a"))
    add(cat, AddRequest(name="again", source=sample_dirs["faces-a"], settings=settings, limit=4, workers=0))
    assert cat.compare("old", "again").distance == 0


def test_append_refuses_other_settings(tmp_path, sample_dirs):
    cat = Catalog(tmp_path / "reg")
    add(cat, AddRequest(name="a", source=sample_dirs["faces-a"], limit=3, workers=0))
    other = ComputeSettings.for_extractor(LITE0, crop="none")
    with pytest.raises(ConfigError, match=r"other settings \(crop: crop=center\)"):
        add(cat, AddRequest(name="a", source=sample_dirs["faces-b"], settings=other, append=True, limit=3, workers=0))
    dna, report = add(cat, AddRequest(name="a", source=sample_dirs["faces-b"], append=True, limit=3, workers=0))
    assert report.images == 3 and dna.num_images == 6


def test_cli_like_and_show(vdna, sample_dirs):
    assert vdna("add", "a", sample_dirs["digits-a"], "--limit", "4", "--resize", "clean").code == 0
    r = vdna("add", "b", sample_dirs["digits-a"], "--limit", "4", "--like", "a", "--json")
    assert r.code == 0, r.stderr
    assert vdna("compare", "a", "b", "--json").json()["distance"] == 0
    shown = vdna("show", "b", "--json").json()
    assert shown["preprocessing"]["resize"] == "clean" and shown["binning"] == "float32"
    r = vdna("add", "c", sample_dirs["digits-a"], "--like", "nothere")
    assert r.code != 0 and "Traceback" not in r.stderr and "nothere" in r.stderr


def test_dnas_of_the_renamed_seeded_network_read_under_its_new_name(tmp_path, sample_dirs):
    """Until 0.3, 'rand-resnet50' was the numpy-seeded network: such DNAs (told apart by their
    weights sha256) read back as 'rand-resnet50-seeded', never as vdna 0.1.1's network."""
    from vdnacli.extractors.resnet import RAND_SHA256

    cat = Catalog(tmp_path / "reg")
    add(cat, AddRequest(name="a", source=sample_dirs["faces-a"], limit=2, workers=0,
                        settings=ComputeSettings.for_extractor(LITE0, kinds=("gauss",))))
    meta, arrays = cat.registry.read("a")
    cat.registry.put("old", dict(meta, extractor="rand-resnet50", weights_sha256=RAND_SHA256), arrays)
    cat.registry.put("new", dict(meta, extractor="rand-resnet50", weights_sha256="cd" * 32), arrays)
    assert cat.get("old").meta["extractor"] == "rand-resnet50-seeded"
    assert cat.settings("old")[0].extractor == "rand-resnet50-seeded"
    assert cat.get("new").meta["extractor"] == "rand-resnet50"
    from vdnacli.errors import IncompatibleDNAError

    with pytest.raises(IncompatibleDNAError, match="different extractor"):
        cat.compare("old", "new", "nfd")
