"""compare --ci, nearest --ci, drift and plan on the command line, on real images and the real extractor."""
from __future__ import annotations

import shutil

import pytest

from vdnacli.catalog import Catalog
from vdnacli.pipeline import Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.sources import list_images

N = 24  # images per entry


@pytest.fixture(scope="module")
def stats_registry(tmp_path_factory, sample_dirs, lite0):
    """digits-a, digits-b, faces-a with 8 shards and digits-plain without, from 24 real images each."""
    root = tmp_path_factory.mktemp("stats") / "registry"
    cat = Catalog(root)
    s = ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist", "gauss"), shards=8)
    for name, src, k in (("digits-a", "digits-a", 8), ("digits-b", "digits-b", 8), ("faces-a", "faces-a", 8),
                         ("digits-plain", "digits-b", 0)):
        dna, _ = compute_dna(list_images(sample_dirs[src])[:N], lite0, s.replace(shards=k), Run(batch_size=12),
                             name=name)
        cat.put(name, dna)
    return root


@pytest.fixture
def run(vdna, stats_registry):
    def call(*args):
        return vdna(*args, env={"VDNA_REGISTRY": str(stats_registry)})

    return call


@pytest.fixture(scope="module")
def small(tmp_path_factory, sample_dirs):
    """Folders of 12 images: new batches for drift."""
    root = tmp_path_factory.mktemp("batches")
    out = {}
    for name in ("faces-b", "digits-b"):
        d = root / name
        d.mkdir()
        for f in sorted(sample_dirs[name].glob("*.png"))[-12:]:
            shutil.copy(f, d / f.name)
        out[name] = d
    return out


def test_compare_ci_json_text_and_focus(run):
    r = run("compare", "digits-a", "faces-a", "--ci", "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    lo, hi = out["ci"]
    assert lo <= out["distance"] <= hi and out["noise_floor"] >= 0 and 0 <= out["p_value"] <= 1
    assert out["p_value"] <= 0.01 and lo > out["noise_floor"]  # digits and faces differ beyond doubt
    assert out["shards"] == [8, 8] or min(out["shards"]) >= 6  # shards that hold images
    assert set(out["per_layer_ci"]) == set(out["per_layer"])
    for v in out["per_layer_ci"].values():
        assert v["ci"][0] <= v["distance"] <= v["ci"][1]
    same = run("compare", "digits-a", "digits-b", "--ci", "--json", "--permutations", "199").json()
    assert same["p_value"] > 0.05 and same["ci"][0] == 0.0  # one source: no difference shown
    head = run("compare", "digits-a", "faces-a", "--ci", "--json", "--layer", "head", "--permutations", "99").json()
    assert list(head["per_layer_ci"]) == ["head"] and head["distance"] == out["per_layer"]["head"]
    some = run("compare", "digits-a", "faces-a", "--ci", "--json", "--neuron", "head:0-99", "--permutations", "0").json()
    assert some["p_value"] is None and some["ci"][0] <= some["distance"] <= some["ci"][1]
    nfd = run("compare", "digits-a", "faces-a", "--ci", "--json", "--metric", "nfd", "--permutations", "99").json()
    assert nfd["metric"] == "nfd" and nfd["ci"][0] <= nfd["distance"] <= nfd["ci"][1]
    text = run("compare", "digits-a", "faces-a", "--ci", "--permutations", "99")
    assert text.code == 0 and "95 % interval" in text.stdout and "noise floor" in text.stdout and "p = 0.01" in text.stdout


def test_compare_ci_without_shards_gives_no_interval(run):
    r = run("compare", "digits-a", "digits-plain", "--ci", "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    assert out["ci"] is None and out["p_value"] is None and out["noise_floor"] is None
    assert "digits-plain" in out["note"] and "--shards" in out["note"] and out["distance"] > 0
    assert "no interval" in r.stderr


def test_nearest_ci(run):
    r = run("nearest", "digits-a", "--top", "3", "--ci", "--json")
    assert r.code == 0, r.stderr
    rows = r.json()
    assert [x["name"] for x in rows][:2] == ["digits-b", "digits-plain"] or rows[0]["name"] in ("digits-b", "digits-plain")
    by = {x["name"]: x for x in rows}
    assert by["digits-plain"]["ci"] is None and "note" in by["digits-plain"]
    assert by["faces-a"]["ci"][0] <= by["faces-a"]["distance"] <= by["faces-a"]["ci"][1]
    text = run("nearest", "digits-a", "--top", "3", "--ci")
    assert text.code == 0 and "distinct from next" in text.stdout


def test_drift_exit_codes(run, small, stats_registry):
    moved = run("drift", "digits-a", small["faces-b"], "--json")
    assert moved.code == 1, moved.stderr
    out = moved.json()
    assert out["drift"] is True and out["p_value"] < 0.01 and out["ci"][0] <= out["distance"] <= out["ci"][1]
    assert out["source_images"] == 12 and out["top_neurons"]
    same = run("drift", "digits-a", small["digits-b"], "--save", "batch-1")
    assert same.code == 0, same.stderr
    assert same.stdout.startswith("no drift")
    saved = Catalog(stats_registry).get("batch-1", shards=True)
    assert saved.shards.count == 8 and saved.num_images == 12  # computed sharded like the reference
    assert run("drift", "digits-a", small["faces-b"], "--threshold", "1000").code == 0  # real, but below what matters
    for args in (("digits-a", "does-not-exist"),  # no such source
                 ("no-such-entry", small["digits-b"]),
                 ("digits-plain", small["digits-b"]),  # the reference keeps no shards
                 ("digits-a", small["digits-b"], "--alpha", "0.0001"),  # unreachable with 999 permutations
                 ("digits-a", small["digits-b"], "--save", "digits-b"),  # the name exists
                 ("digits-a", small["digits-b"], "--metric", "fd")):
        r = run("drift", *args)
        assert r.code >= 2 and "Traceback" not in r.stderr and r.stderr.startswith("error:"), (args, r.code, r.stderr)


def test_plan(run):
    r = run("plan", "digits-a", "--precision", "0.2", "--json")
    assert r.code == 0, r.stderr
    p = r.json()
    assert 0.2 <= p["model"]["beta"] <= 1.5 and p["model"]["kappa"] > 0
    assert {e["name"] for e in p["entries"]} >= {"digits-b", "digits-plain", "faces-a"}
    far = next(e for e in p["entries"] if e["name"] == "faces-a")
    near = next(e for e in p["entries"] if e["name"] == "digits-b")
    assert far["images_needed"] is not None and (near["images_needed"] is None or near["images_needed"] > far["images_needed"])
    given = run("plan", "digits-a", "--precision", "0.2", "--distance", "50", "--json").json()
    assert given["distance"] == 50 and given["images_needed"] <= far["images_needed"]
    text = run("plan", "digits-a", "--precision", "0.2")
    assert text.code == 0 and "images" in text.stdout
    assert run("plan", "digits-plain").code == 4  # no shards: incompatible (docs/cli.md)


def test_add_shards_flag_and_export_note(vdna, sample_dirs, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for f in sorted(sample_dirs["photos-a"].glob("*.png"))[:6]:
        shutil.copy(f, folder / f.name)
    assert vdna("add", "few", folder, "--shards", "1").code == 1  # not a shard count
    r = vdna("add", "few", folder, "--shards", "4", "--json")
    assert r.code == 0, r.stderr
    assert vdna("show", "few", "--json").json()["shards"] == {"count": 4, "rule": "sha256-mod"}
    default = vdna("add", "dflt", folder)
    assert default.code == 0 and vdna("show", "dflt", "--json").json()["shards"]["count"] == 8
    exp = vdna("export", "few", tmp_path / "out" / "few")
    assert exp.code == 0 and "shard" in exp.stderr
