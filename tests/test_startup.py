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


BLOCKED = """
import contextlib, importlib.abc, io, json, sys
class Block(importlib.abc.MetaPathFinder):  # the base install: the compute extra is not there
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {heavy!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
import vdnacli.cli.app as app
out = []
for argv in {commands!r}:
    sys.argv = ['vdna'] + argv
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            app.main()
            code = 0
        except SystemExit as e:
            code = e.code
    out.append([argv[0] if argv[0] != 'mask' else 'mask learn', code, err.getvalue()])
print(json.dumps(out))
"""


def test_computing_commands_name_the_compute_extra_without_torch(tmp_path):
    """With torch, torchvision and Pillow absent, each computing command is one line naming the
    extra, exit 1 (drift: 2, its 1 means "drift"), and nothing is created."""
    (tmp_path / "imgs").mkdir()
    commands = [["add", "x", "imgs"], ["score", "imgs", "--against", "a"], ["similar", "q.jpg", "--in", "imgs"],
                ["calibrate", "efficientnet-lite0", "imgs", "--out", "r.json"], ["demo"], ["samples", "out"],
                ["mask", "learn", "m", "--ignore", "b", "--pair", "b=a:c"], ["drift", "a", "imgs"]]
    env = dict(os.environ, NO_COLOR="1", VDNA_REGISTRY=str(tmp_path / "registry"))
    p = subprocess.run([sys.executable, "-c", BLOCKED.format(heavy=("torch", "torchvision", "PIL"), commands=commands)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    for name, code, err in json.loads(p.stdout.strip().splitlines()[-1]):
        assert err == f"error: vdna {name} needs the compute extra: pip install 'vdnacli[compute]'\n", name
        assert code == (2 if name == "drift" else 1), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]
