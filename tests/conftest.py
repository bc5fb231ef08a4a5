"""Shared fixtures: real sample images, the real offline extractor, real DNAs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_dirs(tmp_path_factory) -> dict[str, Path]:
    """Six folders of real PNGs: digits-a/b, faces-a/b, photos-a/b (40 images each, disjoint halves)."""
    from vdnacli import samples

    return samples.write_demo_sets(tmp_path_factory.mktemp("samples"), per_half=40)


@pytest.fixture(scope="session")
def lite0():
    from vdnacli.extractors import load_extractor

    return load_extractor("efficientnet-lite0", "cpu")


@pytest.fixture(scope="session")
def real_dnas(sample_dirs, lite0):
    """DNAs (hist + gauss) of each sample folder, computed with the real extractor."""
    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.sources import list_images

    out = {}
    for name, folder in sample_dirs.items():
        dna, _ = compute_dna(list_images(folder), lite0, ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist", "gauss")),
                             Run(batch_size=16), name=name)
        out[name] = dna
    return out


class CLIResult:
    def __init__(self, p: subprocess.CompletedProcess):
        self.code, self.stdout, self.stderr = p.returncode, p.stdout, p.stderr

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def registry_dir(tmp_path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def vdna(registry_dir, tmp_path):
    """Run the real `vdna` command line (python -m vdnacli) against a scratch registry."""

    def run(*args, env=None) -> CLIResult:
        e = dict(os.environ, VDNA_REGISTRY=str(registry_dir), NO_COLOR="1", HF_HUB_OFFLINE="1", VDNA_WORKERS="0")
        e.pop("VDNA_DEBUG", None)
        if env:
            e.update(env)
        p = subprocess.run([sys.executable, "-m", "vdnacli", *map(str, args)], capture_output=True, text=True,
                           env=e, cwd=tmp_path, timeout=900)
        return CLIResult(p)

    return run
