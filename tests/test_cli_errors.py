"""User errors at the real command line: one line on stderr, the exit code of the error's class
(vdnacli.errors; 2 for usage), no traceback, and the registry left as it was. The registry is seeded with synthetic DNAs through `vdna import`
(no network is run here)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vdnacli import __version__
from vdnacli.distances import emd_rows
from vdnacli.dna import DNA, new_meta
from vdnacli.interop import export_upstream

LAYERS = {"stage1": 4, "head": 6}
PRE = {"crop": "center", "resize": "pil-bicubic-antialias", "size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}


def synthetic(seed: int, bins: int = 16, extractor: str = "efficientnet-lite0") -> DNA:
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor=extractor, weights_sha256="a" * 64, ranges_sha256="b" * 64, layers=LAYERS, bins=bins,
                    preprocessing=PRE, kinds=("hist",))
    meta["num_images"] = 20 + seed
    return DNA(meta=meta, hist={l: rng.integers(1, 400, size=(n, bins)).astype(np.int64) for l, n in LAYERS.items()})


SEEDS = {"seed-a": synthetic(1), "seed-b": synthetic(2), "wide": synthetic(3, bins=32)}


def _run(registry: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, VDNA_REGISTRY=str(registry), NO_COLOR="1", HF_HUB_OFFLINE="1", VDNA_WORKERS="0")
    env.pop("VDNA_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "vdnacli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A registry seeded once through `vdna import`, and its `vdna list --json`."""
    base = tmp_path_factory.mktemp("template")
    reg = base / "registry"
    for name, dna in SEEDS.items():
        export_upstream(dna, base / "pairs" / name)
        p = _run(reg, base, "import", base / "pairs" / name, "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["name"] == name
    p = _run(reg, base, "list", "--json")
    assert p.returncode == 0, p.stderr
    listing = json.loads(p.stdout)
    assert sorted(r["name"] for r in listing) == sorted(SEEDS)
    assert all(r["problem"] is None for r in listing)
    return reg, listing


@pytest.fixture
def seeded(template, registry_dir):
    reg, listing = template
    shutil.copytree(reg, registry_dir)
    return listing


def assert_user_error(r, code: int = 1) -> None:
    both = r.stdout + r.stderr
    assert r.code == code, (r.code, r.stdout, r.stderr)
    assert "Traceback" not in both
    if code != 2:
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].strip(), r.stderr
        assert lines[0].startswith("error: ")
        assert "internal error" not in lines[0]


def listing_of(vdna):
    r = vdna("list", "--json")
    assert r.code == 0, r.stderr
    return r.json()


# -- seeding sanity: the imported entries are real, comparable DNAs --------------------------------
def test_seeded_registry_compares(seeded, vdna):
    r = vdna("compare", "seed-a", "seed-b", "--json")
    assert r.code == 0, r.stderr
    a, b = SEEDS["seed-a"], SEEDS["seed-b"]
    per = np.concatenate([emd_rows(a.hist[l], b.hist[l]) for l in LAYERS])
    assert r.json()["distance"] == pytest.approx(per.mean(), rel=1e-12)
    assert listing_of(vdna) == seeded


# -- user errors ------------------------------------------------------------------------------------
def _folder_with_text_only(tmp_path: Path) -> Path:
    d = tmp_path / "texts"
    d.mkdir()
    (d / "readme.txt").write_text("no images here\n")
    return d


def _folder_with_image(tmp_path: Path) -> Path:
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(d / "one.png")
    return d


def _hostile_pair(tmp_path: Path) -> Path:
    stem = tmp_path / "evil"
    meta = {"type": "histogram", "neurons_list": LAYERS, "num_images": 3, "distribution": {"hist_nb_bins": 16},
            "feature_extractor_name": "mugs_vit_base"}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    np.savez(stem.with_suffix(".npz"), stage1=np.array([{"a": 1}], dtype=object),
             head=np.ones((6, 16), dtype=np.int32))
    return stem


def _reference_csv(tmp_path: Path) -> Path:
    p = tmp_path / "ref.csv"
    p.write_text("source,seed-a\nseed-b,ninety\n")
    return p


CASES = {  # case -> (arguments, a word the one-line message must contain, exit code of its class)
    "compare-unknown": (lambda t: ["compare", "seed-a", "nope"], "nope", 3),
    "show-unknown": (lambda t: ["show", "nope"], "nope", 3),
    "remove-unknown": (lambda t: ["remove", "nope"], "nope", 3),
    "export-unknown": (lambda t: ["export", "nope", t / "out" / "nope"], "nope", 3),
    "add-missing-path": (lambda t: ["add", "x", t / "does-not-exist"], "does-not-exist", 3),
    "add-no-images": (lambda t: ["add", "x", _folder_with_text_only(t)], "no images", 1),
    "add-invalid-name": (lambda t: ["add", "bad/name", _folder_with_image(t)], "bad/name", 1),
    "add-bins-0": (lambda t: ["add", "x", _folder_with_image(t), "--bins", "0"], "bins", 1),
    "add-unknown-extractor": (lambda t: ["add", "x", _folder_with_image(t), "--extractor", "nope"], "nope", 3),
    "add-existing-name": (lambda t: ["add", "seed-a", _folder_with_image(t)], "already exists", 1),
    "import-missing": (lambda t: ["import", t / "absent" / "pair"], "pair.json", 3),
    "import-hostile": (lambda t: ["import", _hostile_pair(t)], "evil.npz", 5),
    "import-existing": (lambda t: ["import", t / "absent" / "seed-b"], "already exists", 1),
    "compare-incompatible-bins": (lambda t: ["compare", "seed-a", "wide"], "bins", 4),
    "compare-unknown-layer": (lambda t: ["compare", "seed-a", "seed-b", "--layer", "nope"], "nope", 3),
    "compare-neuron-out-of-range": (lambda t: ["compare", "seed-a", "seed-b", "--neuron", "stage1:4"], "range", 1),
    "compare-bad-neuron-spec": (lambda t: ["compare", "seed-a", "seed-b", "--neuron", "stage1"], "--neuron", 1),
    "compare-unknown-metric": (lambda t: ["compare", "seed-a", "seed-b", "--metric", "l2"], "l2", 1),
    "rank-transfer-bad-reference": (
        lambda t: ["rank-transfer", "--target", "seed-a", "--reference", _reference_csv(t)], "ninety", 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_and_leaves_registry_alone(case, seeded, vdna, tmp_path):
    make_args, word, code = CASES[case]
    r = vdna(*make_args(tmp_path))
    assert_user_error(r, code)
    assert word in r.stderr
    assert listing_of(vdna) == seeded
    if case == "export-unknown":
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_nearest_top_zero_is_a_usage_error(seeded, vdna):
    r = vdna("nearest", "seed-a", "--top", "0")
    assert_user_error(r, 2)
    assert r.stderr.strip()
    assert listing_of(vdna) == seeded


def test_unknown_command_and_option_are_usage_errors(seeded, vdna):
    assert_user_error(vdna("frobnicate"), 2)
    assert_user_error(vdna("list", "--no-such-flag"), 2)
    assert listing_of(vdna) == seeded


# -- informational commands -------------------------------------------------------------------------
def test_version(vdna):
    r = vdna("--version")
    assert r.code == 0
    assert r.stdout.strip() == f"vdna {__version__}"


def test_help_lists_commands(vdna):
    r = vdna("--help")
    assert r.code == 0, r.stderr
    section = r.stdout.split("Commands", 1)[1]
    commands = set(re.findall(r"^  ([a-z][a-z-]+) ", section, flags=re.M))
    expected = {"add", "list", "show", "remove", "compare", "nearest", "import", "export", "extractors", "demo",
                "rank-transfer"}
    assert expected <= commands, expected - commands


def test_extractors_json(vdna):
    r = vdna("extractors", "--json")
    assert r.code == 0, r.stderr
    items = {i["name"]: i for i in r.json()}
    lite = items["efficientnet-lite0"]
    assert lite["input_size"] == 224
    assert lite["weights_present"] is True
    assert lite["ranges"] is True
    assert list(lite["layers"]) == [f"stage{i}" for i in range(1, 8)] + ["head"]
    assert lite["layers"]["head"] == 1280
    # neurons is the sum over the listed layers: 16+24+40+80+112+192+320 stage channels + 1280 head
    assert lite["neurons"] == sum(lite["layers"].values()) == 2064
