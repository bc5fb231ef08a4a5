"""Scale-out and streaming: torchrun with gloo gives the single-process DNA; memory does
not grow with the number of images."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from vdnacli.catalog import Catalog


def _env(registry, **extra):
    e = dict(os.environ, VDNA_REGISTRY=str(registry), NO_COLOR="1", OMP_NUM_THREADS="1", VDNA_WORKERS="0")
    e.update(extra)
    return e


@pytest.mark.slow
def test_torchrun_two_processes_equal_single_process(sample_dirs, tmp_path):
    """Same intra-op thread count (torchrun sets OMP_NUM_THREADS=1) and batch shape in both runs:
    oneDNN picks its convolution algorithm by thread count and batch size, and a different float
    rounding can move a few activations across a bin edge (EMD ~1e-5); the reduction itself is exact."""
    reg = tmp_path / "reg"
    src = sample_dirs["faces-a"]
    single = subprocess.run([sys.executable, "-m", "vdnacli", "add", "single", src, "--kind", "hist,gauss", "--batch-size", "4"],
                            env=_env(reg), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "vdnacli",
                           "add", "dist", str(src), "--kind", "hist,gauss", "--batch-size", "4"],
                          env=_env(reg), capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, dist.stderr[-2000:]
    assert dist.stdout.count("added dist") == 1  # rank 0 alone reports and writes
    cat = Catalog(reg)
    a, b = cat.get("single"), cat.get("dist")
    assert a.num_images == b.num_images == 40
    assert a.meta["images_sha256"] == b.meta["images_sha256"]
    assert len(a.thumbnails) == 16 and a.thumbnails.images == b.thumbnails.images  # rank 0 re-lists the source
    for layer in a.layers:
        np.testing.assert_array_equal(a.hist[layer], b.hist[layer])
        np.testing.assert_allclose(a.gauss[layer].sum, b.gauss[layer].sum, rtol=1e-9)
        assert a.gauss[layer].count == b.gauss[layer].count == 40


PEAK = """
import resource, sys
from vdnacli.extractors import load_extractor
from vdnacli.pipeline import Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.sources import ImageRef
ext = load_extractor("efficientnet-lite0", "cpu")
refs = [ImageRef(name=f"{i}.png", path=sys.argv[1]) for i in range(int(sys.argv[2]))]
dna, report = compute_dna(refs, ext, ComputeSettings.for_extractor(ext.spec.name, kinds=("hist", "gauss")), Run(batch_size=32))
assert dna.num_images == int(sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_images(sample_dirs):
    image = str(sorted(sample_dirs["photos-a"].glob("*.png"))[0])
    peaks = {}
    for n in (96, 960):
        r = subprocess.run([sys.executable, "-c", PEAK, image, str(n)], capture_output=True, text=True, timeout=900,
                           env=dict(os.environ, OMP_NUM_THREADS="2"))
        assert r.returncode == 0, r.stderr[-1500:]
        peaks[n] = int(r.stdout.split()[-1])
    assert peaks[960] <= 1.10 * peaks[96], peaks
