"""Documentation that runs: the README tutorial, every command documented, help snapshots."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNAPSHOTS = Path(__file__).parent / "snapshots"


def _run(args, env=None, cwd=None):
    e = dict(os.environ, NO_COLOR="1", COLUMNS="100", TERM="dumb", **(env or {}))
    return subprocess.run([sys.executable, "-m", "vdnacli", *args], capture_output=True, text=True, env=e, cwd=cwd)


def _commands() -> list[str]:
    from vdnacli.cli.app import app

    import typer.main

    group = typer.main.get_command(app)
    names = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            names += [f"{name} {sub}" for sub in cmd.commands]
        else:
            names.append(name)
    return sorted(names)


def test_every_command_is_documented_with_an_example():
    for name in _commands():
        assert f"vdna {name}" in README, f"README does not mention 'vdna {name}'"
        r = _run([*name.split(), "--help"])
        assert r.returncode == 0
        assert "Example:" in r.stdout, f"'vdna {name} --help' has no example"


def _snapshot(name: str, text: str):
    path = SNAPSHOTS / name
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_SNAPSHOTS=1 if intended"


def test_help_snapshots():
    _snapshot("help.txt", _run(["--help"]).stdout)
    _snapshot("help-nearest.txt", _run(["nearest", "--help"]).stdout)


def test_plain_table_snapshot(tmp_path):
    """A table's plain rendering (not a TTY): fixed synthetic DNAs, exact text."""
    import numpy as np

    from vdnacli.catalog import Catalog
    from vdnacli.dna import DNA, new_meta

    cat = Catalog(tmp_path / "reg")
    for i, shift in enumerate((0, 3, 10)):
        h = np.zeros((4, 20), dtype=np.int64)
        h[np.arange(4), 2 + shift + np.arange(4)] = 10
        meta = new_meta(extractor="synthetic", weights_sha256="w", ranges_sha256="r", layers={"l": 4}, bins=20,
                        preprocessing={}, kinds=["hist"])
        meta["num_images"] = 1
        cat.put(f"set{i}", DNA(meta=meta, hist={"l": h}))
    r = _run(["nearest", "set0", "--top", "2"], env={"VDNA_REGISTRY": str(tmp_path / "reg")})
    assert r.returncode == 0, r.stderr
    _snapshot("nearest-table.txt", r.stdout)
    assert "\x1b[" not in r.stdout and "━" not in r.stdout


@pytest.mark.slow
def test_readme_tutorial_runs_command_by_command(tmp_path):
    block = re.search(r"<!-- tutorial:start -->\s*```bash\n(.*?)```", README, re.S).group(1)
    lines = [l for l in block.splitlines() if l.strip()]
    assert len(lines) >= 8
    env = dict(os.environ, NO_COLOR="1", VDNA_WORKERS="0", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("VDNA_REGISTRY", None)
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "digits-b" in out.split("nearest to digits-a")[1].splitlines()[2]  # first row of the ranking
    import json

    last = json.loads(out[out.rindex('{\n  "rankings"'):])
    assert last["rankings"]["digits-a"][0]["name"] == "digits-b"
    assert last["discrepancy"] is not None
    assert (tmp_path / "my-catalog" / "entries" / "faces-a.h5").exists()
