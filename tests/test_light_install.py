"""The base install (no torch) is the catalog: a fresh venv with only `pip install vdnacli`
pushes to and pulls from a (fake) Hub, imports, exports, compares, ranks and verifies real DNAs,
with the same numbers as the full install; commands that compute say which extra to install.

The venv gets the package from a copy of the sources (pyproject.toml, README.md, vdnacli/,
registry/) and its dependencies from the package index (pip's cache makes reruns fast); with
no index reachable the test skips and says so. Startup and size of this install are measured
by bench/bench_startup.py (docs/install.md), not here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hub_server import FakeHub

ROOT = Path(__file__).resolve().parents[1]
WRITE = "hf_test_write_token"
NETWORK_SIGNS = ("No matching distribution", "NewConnectionError", "Failed to establish", "Temporary failure in name",
                 "Network is unreachable", "ProxyError", "Read timed out", "ConnectTimeout", "Could not fetch URL",
                 "No route to host", "Connection refused", "Name or service not known")

pytestmark = pytest.mark.slow  # a venv and an install: ~20 s with pip's cache warm, longer cold


def _copy_sources(dest: Path) -> Path:
    """What a wheel is built from, without the checkout's caches or build folders."""
    dest.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, dest / f)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("vdnacli", "registry"):
        shutil.copytree(ROOT / d, dest / d, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> Path:
    """The `vdna` of a fresh venv holding the base install only."""
    try:
        import pip  # noqa: F401  (the test's own pip installs into the new venv: pip --python)
    except ImportError:
        pytest.skip("pip is not available to this interpreter")
    base = tmp_path_factory.mktemp("light")
    venv = base / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip()[-300:]}")
    py = venv / "bin" / "python"
    src = _copy_sources(base / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    constraints = os.environ.get("VDNA_LIGHT_CONSTRAINTS")  # .ci/floors --base: the lowest versions allowed
    extra = ["-c", constraints] if constraints else []
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--disable-pip-version-check",
                        *extra, str(src)], capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        log = p.stdout + p.stderr
        if any(s in log for s in NETWORK_SIGNS):
            pytest.skip("the base install needs the package index (h5py, numpy, ...), which is not reachable: "
                        + log.strip().splitlines()[-1][:200])
        pytest.fail(f"pip install of the base package failed:\n{log[-3000:]}")
    return venv / "bin" / "vdna"


def run(vdna: Path, *args, env: dict, cwd: Path, code: int | None = 0) -> subprocess.CompletedProcess:
    p = subprocess.run([str(vdna), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    if code is not None:
        assert p.returncode == code, f"vdna {' '.join(map(str, args))}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def test_base_install_has_no_torch(light):
    py = light.parent / "python"
    probe = ("import importlib.util as u; "
             "print([m for m in ('torch', 'torchvision', 'PIL', 'timm', 'open_clip') if u.find_spec(m)])")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_catalog_commands_without_torch(light, real_dnas, tmp_path):
    from vdnacli.catalog import Catalog
    from vdnacli.distances import compare, make_selection

    names = ("digits-a", "digits-b", "faces-a")
    publisher = Catalog(tmp_path / "publisher")
    for n in names:
        publisher.put(n, real_dnas[n])

    hub = FakeHub(tokens={WRITE: {"read", "write"}}).start()
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGING", "VDNA_")) and k not in ("PYTHONPATH",)}
        env.update(NO_COLOR="1", HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", VDNA_REGISTRY=str(tmp_path / "catalog"))
        pub = dict(env, HF_TOKEN=WRITE)
        for n in names:
            run(light, "push", n, "me/dnas", "--registry", tmp_path / "publisher", env=pub, cwd=tmp_path)

        pulled = json.loads(run(light, "pull", "me/dnas", "--json", env=env, cwd=tmp_path).stdout)
        assert sorted(e["name"] for e in pulled["entries"]) == sorted(names)
        listed = json.loads(run(light, "list", "--json", env=env, cwd=tmp_path).stdout)
        assert sorted(e["name"] for e in (listed["entries"] if isinstance(listed, dict) else listed)) == sorted(names)

        # the upstream file pair, both ways
        run(light, "export", "faces-a", tmp_path / "pair" / "faces", env=env, cwd=tmp_path)
        run(light, "import", tmp_path / "pair" / "faces", "--name", "faces-copy", env=env, cwd=tmp_path)

        # compare: the numpy path of the base install gives the full install's number
        got = json.loads(run(light, "compare", "digits-a", "faces-a", "--json", env=env, cwd=tmp_path).stdout)
        a, b = real_dnas["digits-a"], real_dnas["faces-a"]
        want = compare(a, b, "emd", make_selection(a.layers)).distance
        assert np.isclose(got["distance"], want, rtol=1e-9, atol=1e-12)
        same = json.loads(run(light, "compare", "faces-a", "faces-copy", "--json", env=env, cwd=tmp_path).stdout)
        assert same["distance"] == pytest.approx(0.0, abs=1e-12)

        # nearest: the other half of the same source comes first
        near = json.loads(run(light, "nearest", "digits-a", "--json", env=env, cwd=tmp_path).stdout)
        rows = near["results"] if isinstance(near, dict) else near
        assert rows[0]["name"] == "digits-b"

        verified = run(light, "verify", env=env, cwd=tmp_path)
        assert "0 damaged" in verified.stdout
        run(light, "extractors", env=env, cwd=tmp_path)

        # computing needs the compute extra: one line, exit 1, nothing stored
        (tmp_path / "imgs").mkdir()
        for cmd in (("add", "new", tmp_path / "imgs"), ("score", tmp_path / "imgs", "--against", "digits-a")):
            p = run(light, *cmd, env=env, cwd=tmp_path, code=1)
            assert p.stderr == f"error: vdna {cmd[0]} needs the compute extra: pip install 'vdnacli[compute]'\n"
            assert "Traceback" not in p.stderr
    finally:
        hub.stop()
