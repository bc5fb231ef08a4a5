"""`vdna --help`, `vdna extractors` and the catalog's read commands start without torch:
importing the CLI and listing extractors must not load the compute extra (measured by
bench/bench_startup.py; this test checks what is imported, not how long it takes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "torchvision", "timm", "open_clip", "PIL", "triton", "numba")

PROBE = """
import json, sys
heavy = {heavy!r}
def loaded():
    return sorted({{m.split('.')[0] for m in sys.modules}} & set(heavy))
import vdnacli.cli.app as app
after_import = loaded()
h5 = 'h5py' in sys.modules
sys.argv = ['vdna'] + {argv!r}
try:
    app.main()
except SystemExit as e:
    code = e.code
print(json.dumps({{'import': after_import, 'h5py_at_import': h5, 'command': loaded(), 'code': code}}))
"""


def probe(argv: list[str], tmp_path) -> dict:
    env = dict(os.environ, NO_COLOR="1", VDNA_REGISTRY=str(tmp_path / "registry"))
    p = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, argv=argv)], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_cli_import_and_extractors_load_no_torch(tmp_path):
    r = probe(["extractors", "--json"], tmp_path)
    assert r["code"] in (0, None)
    assert r["import"] == [], f"importing vdnacli.cli.app loaded {r['import']}"
    assert not r["h5py_at_import"], "importing the CLI loaded h5py (vdna --help should not)"
    assert r["command"] == [], f"'vdna extractors' loaded {r['command']}"


def test_list_loads_no_torch(tmp_path):
    r = probe(["list"], tmp_path)
    assert r["command"] == [], f"'vdna list' loaded {r['command']}"
