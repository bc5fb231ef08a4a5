"""The command line end to end on real images with the real offline extractor."""
from __future__ import annotations

import csv


def test_catalog_workflow(vdna, sample_dirs, tmp_path):
    for name in ("digits-a", "digits-b", "faces-a", "photos-a"):
        r = vdna("add", name, sample_dirs[name], "--kind", "hist,gauss")
        assert r.code == 0, r.stderr
    listed = vdna("list", "--json").json()
    assert sorted(e["name"] for e in listed) == ["digits-a", "digits-b", "faces-a", "photos-a"]
    info = vdna("show", "digits-a", "--json").json()
    assert info["num_images"] == 40 and info["extractor"] == "efficientnet-lite0"
    assert info["kinds"] == ["hist", "gauss"]

    cmp = vdna("compare", "digits-a", "faces-a", "--json").json()
    assert cmp["metric"] == "emd" and cmp["distance"] > 0
    assert set(cmp["per_layer"]) == {"stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head"}
    assert vdna("compare", "digits-a", "digits-a", "--json").json()["distance"] == 0
    head = vdna("compare", "digits-a", "faces-a", "--layer", "head", "--json").json()
    assert list(head["per_layer"]) == ["head"] and head["distance"] == cmp["per_layer"]["head"]
    nfd = vdna("compare", "digits-a", "faces-a", "--metric", "nfd", "--json").json()
    assert nfd["metric"] == "nfd" and nfd["distance"] > 0

    near = vdna("nearest", "digits-a", "--top", "2", "--json").json()
    assert [r["name"] for r in near][0] == "digits-b"
    assert near == vdna("nearest", "digits-a", "--top", "2", "--exact", "--json").json()

    # plain-text table when not a terminal
    text = vdna("nearest", "digits-a", "--top", "3")
    assert text.code == 0 and "digits-b" in text.stdout and "\x1b[" not in text.stdout

    m = vdna("matrix", "--json").json()
    assert m["names"] == ["digits-a", "digits-b", "faces-a", "photos-a"]
    assert all(m["matrix"][i][i] == 0 for i in range(4))

    ref = tmp_path / "ref.csv"
    with open(ref, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "digits-a"])
        w.writerows([["digits-b", 80], ["faces-a", 20], ["photos-a", 30]])
    rt = vdna("rank-transfer", "--target", "digits-a", "--reference", ref, "--json").json()
    assert rt["rankings"]["digits-a"][0]["name"] == "digits-b"
    assert rt["discrepancy"] is not None and rt["spearman"] is not None

    # errors leave the registry as it was
    before = vdna("list", "--json").json()
    dup = vdna("add", "digits-a", sample_dirs["faces-a"])
    assert dup.code == 1 and "already exists" in dup.stderr and "Traceback" not in dup.stderr
    bad = vdna("compare", "digits-a", "nope")
    assert bad.code == 3 and len(bad.stderr.strip().splitlines()) == 1  # not found (docs/cli.md)
    assert vdna("list", "--json").json() == before


def test_append_equals_union_and_is_idempotent(vdna, sample_dirs, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    for sub in ("faces-a", "faces-b"):
        for p in sample_dirs[sub].glob("*.png"):
            (both / f"{sub}-{p.name}").write_bytes(p.read_bytes())
    assert vdna("add", "union", both).code == 0
    assert vdna("add", "grown", sample_dirs["faces-a"]).code == 0
    r = vdna("add", "grown", sample_dirs["faces-b"], "--append", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["num_images"] == 80
    assert vdna("compare", "grown", "union", "--json").json()["distance"] == 0
    again = vdna("add", "grown", sample_dirs["faces-b"], "--append")
    assert again.code == 1 and "already counted" in again.stderr
    assert vdna("show", "grown", "--json").json()["num_images"] == 80
    assert vdna("show", "grown", "--json").json()["images_sha256"] == vdna("show", "union", "--json").json()["images_sha256"]


def test_demo_runs_and_twins_match(vdna):
    r = vdna("demo", "--per-half", "20", "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    assert out["twins_ok"] is True and len(out["entries"]) == 6
