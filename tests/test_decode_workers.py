"""Issue 14 row 3 (second half): a decode worker that dies — SIGKILL as the kernel's OOM killer
sends it, SIGSEGV as a crashing decoder library raises it — costs the image it was preparing,
reported as failed with the signal; the rest of the run goes on and counts exactly the other
images (random-access folders and streamed tar shards).

The deaths are real: decode_pool reads VDNA_TEST_DECODE_DEATH in the worker only, and the
worker sends itself the signal just before preparing the named file.
"""
from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pytest

from vdnacli.decode_pool import TEST_DEATH_ENV
from vdnacli.pipeline import Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.sources import list_images, open_source

KILLERS = {"oom-killed.png": "SIGKILL", "segfault.png": "SIGSEGV"}


@pytest.fixture(scope="module")
def folder(sample_dirs, tmp_path_factory):
    """8 real images; 2 of them named to kill their worker."""
    d = tmp_path_factory.mktemp("deaths") / "images"
    d.mkdir()
    src = sorted(sample_dirs["photos-a"].iterdir())
    for p in src[:6]:
        shutil.copy(p, d / p.name)
    for (name, _), p in zip(KILLERS.items(), src[6:]):
        shutil.copy(p, d / name)
    return d


@pytest.fixture(scope="module")
def expected(folder, lite0):
    """The DNA of the images that do not kill, computed in this process."""
    settings = ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist",))
    refs = [r for r in list_images(folder) if r.name not in KILLERS]
    dna, _ = compute_dna(refs, lite0, settings, Run(batch_size=4))
    return dna


def _check(dna, report, expected):
    failed = {name.rsplit("/", 1)[-1]: why for name, why in report.failed}  # a shard's members: shard-1.tar/x.png
    assert failed.keys() == KILLERS.keys()
    for name, sig in KILLERS.items():
        assert f"the decode worker died on this image: killed by {sig}" in failed[name]
    assert report.images == dna.num_images == expected.num_images == 6
    for layer in expected.hist:
        np.testing.assert_array_equal(dna.hist[layer], expected.hist[layer])
    np.testing.assert_array_equal(dna.image_hashes, expected.image_hashes)


def test_a_dead_worker_costs_one_image_in_a_folder(folder, expected, lite0, monkeypatch):
    monkeypatch.setenv(TEST_DEATH_ENV, ",".join(f"{s.removeprefix('SIG')}:{n}" for n, s in KILLERS.items()))
    settings = ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist",))
    calls = []
    dna, report = compute_dna(list_images(folder), lite0, settings,
                              Run(batch_size=3, workers=2, progress=lambda done, total: calls.append((done, total))))
    _check(dna, report, expected)
    assert calls == [(0, 8), (3, 8), (6, 8), (8, 8)]  # every image counted as done, the dead ones too


def test_a_dead_worker_costs_one_image_in_a_stream(folder, expected, lite0, monkeypatch, tmp_path):
    shards = []
    for k, chunk in enumerate((sorted(folder.iterdir())[:4], sorted(folder.iterdir())[4:])):
        shards.append(tmp_path / f"shard-{k}.tar")
        with tarfile.open(shards[-1], "w") as t:
            for p in chunk:
                t.add(p, arcname=p.name)
    monkeypatch.setenv(TEST_DEATH_ENV, ",".join(f"{s.removeprefix('SIG')}:{n}" for n, s in KILLERS.items()))
    settings = ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist",))
    source = open_source(str(tmp_path / "shard-{0..1}.tar"))
    assert source.streamed
    dna, report = compute_dna(source, lite0, settings, Run(batch_size=3, workers=2))
    _check(dna, report, expected)


def test_cli_add_goes_on_after_a_worker_death(vdna, folder, registry_dir):
    r = vdna("add", "survivor", folder, "--workers", "2", "--json", env={TEST_DEATH_ENV: "KILL:oom-killed.png"})
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["num_images"] == 7
    assert [(f["image"], f["reason"]) for f in rep["failed"]] == [
        ("oom-killed.png", "the decode worker died on this image: killed by SIGKILL (out of memory?)")]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
