"""Concurrent writers and readers on one registry, as real processes.

Different entries written at once all succeed; of several writers of one name exactly one
wins and the others get EntryExistsError (or EntryChangedError for read-modify-write);
readers never see a partial entry; the nearest-search index stays exact while processes
add entries and query at once; `repair` never deletes a live writer's files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def arrays_for(i: int, size: int = 200) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {"hist/a": rng.integers(0, 10**6, size=(size, 300), dtype=np.int64), "gauss/a/sum": rng.normal(size=size)}


HELPERS = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    sys.path.insert(0, {root!r})
    from registry import Registry, RegistryError

    def arrays_for(i, size=200):
        rng = np.random.default_rng(i)
        return {{"hist/a": rng.integers(0, 10**6, size=(size, 300), dtype=np.int64), "gauss/a/sum": rng.normal(size=size)}}

    def wait_for_go(path):
        print("ready", flush=True)
        while not os.path.exists(path):
            time.sleep(0.001)
    """
)


def spawn(tmp_path: Path, name: str, body: str, *args) -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(HELPERS.format(root=str(ROOT)) + textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def start_together(procs: list[subprocess.Popen], go: Path) -> list[tuple[int, str, str]]:
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    out = []
    for p in procs:
        o, e = p.communicate(timeout=240)
        out.append((p.returncode, o, e))
    return out


WRITER = """
    reg = Registry(sys.argv[1])
    me, count = int(sys.argv[2]), int(sys.argv[3])
    wait_for_go(sys.argv[4])
    result = {"mine": [], "contested": None}
    for j in range(count):
        i = me * 1000 + j
        reg.put(f"w{me}-{j}", {"i": i}, arrays_for(i))
        result["mine"].append(f"w{me}-{j}")
        if j == count // 2:
            try:
                reg.put("contested", {"i": -me}, arrays_for(900000 + me))
                result["contested"] = "won"
            except RegistryError as e:
                result["contested"] = type(e).__name__ + ": " + str(e)
    print(json.dumps(result), flush=True)
"""


def test_writers_of_different_entries_all_succeed_and_one_name_has_one_winner(tmp_path):
    root = tmp_path / "reg"  # not created yet: the writers race to create it too
    go = tmp_path / "go"
    procs = [spawn(tmp_path, f"writer{k}", WRITER, root, k, 6, go) for k in range(5)]
    results = start_together(procs, go)
    assert all(code == 0 for code, _, _ in results), [e for _, _, e in results]
    reports = [json.loads(o.strip().splitlines()[-1]) for _, o, _ in results]
    reg = Registry(root)
    expected = {f"w{k}-{j}": k * 1000 + j for k in range(5) for j in range(6)}
    assert set(reg.names()) == set(expected) | {"contested"}
    for name, i in expected.items():
        meta, got = reg.read(name, verify=True)
        assert meta == {"i": i}
        for key, arr in arrays_for(i).items():
            np.testing.assert_array_equal(got[key], arr)
    outcomes = [r["contested"] for r in reports]
    winners = [k for k, o in enumerate(outcomes) if o == "won"]
    assert len(winners) == 1, outcomes
    for k, o in enumerate(outcomes):
        if k != winners[0]:
            assert o == "EntryExistsError: an entry named 'contested' already exists (--replace overwrites it; or choose another name)"
    meta, got = reg.read("contested", verify=True)
    assert meta == {"i": -winners[0]}
    np.testing.assert_array_equal(got["hist/a"], arrays_for(900000 + winners[0])["hist/a"])
    assert reg.leftovers() == []


READER = """
    reg = Registry(sys.argv[1])
    until = time.time() + float(sys.argv[2])
    wait_for_go(sys.argv[3])
    reads = errors = 0
    problems = []
    while time.time() < until:
        for name in reg.names():
            try:
                meta, got = reg.read(name, verify=True)
            except RegistryError as e:
                errors += 1
                problems.append(f"{name}: {e}")
                continue
            want = arrays_for(meta["i"])
            if any(not np.array_equal(got[k], want[k]) for k in want):
                errors += 1
                problems.append(f"{name}: arrays do not match meta")
            reads += 1
    print(json.dumps({"reads": reads, "errors": errors, "problems": problems[:5]}), flush=True)
"""

REPLACER = """
    reg = Registry(sys.argv[1])
    me = int(sys.argv[2])
    until = time.time() + float(sys.argv[3])
    wait_for_go(sys.argv[4])
    n = 0
    while time.time() < until:
        i = me * 100000 + n
        reg.put("hot", {"i": i}, arrays_for(i), replace=True)
        reg.put(f"new{me}-{n}", {"i": i}, arrays_for(i))
        n += 1
    print(json.dumps({"writes": n}), flush=True)
"""


def test_readers_never_see_a_partial_entry(tmp_path):
    root = tmp_path / "reg"
    reg = Registry(root)
    reg.put("hot", {"i": 5}, arrays_for(5))
    go = tmp_path / "go"
    procs = [spawn(tmp_path, "reader", READER, root, 3.0, go)]
    procs += [spawn(tmp_path, f"replacer{k}", REPLACER, root, k + 1, 3.0, go) for k in range(2)]
    results = start_together(procs, go)
    assert all(code == 0 for code, _, _ in results), [e for _, _, e in results]
    reader = json.loads(results[0][1].strip().splitlines()[-1])
    writes = sum(json.loads(o.strip().splitlines()[-1])["writes"] for _, o, _ in results[1:])
    assert reader["errors"] == 0, reader["problems"]
    assert reader["reads"] > 20 and writes > 10, (reader, writes)
    assert reg.leftovers() == []


RMW = """
    reg = Registry(sys.argv[1])
    me = int(sys.argv[2])
    stamp = reg.stamp("shared")  # read-modify-write, as `vdna add --append` does
    meta, arrays = reg.read("shared")
    wait_for_go(sys.argv[3])
    try:
        reg.put("shared", {"i": meta["i"] + me}, arrays_for(me), replace=True, expect=stamp)
        print("won", flush=True)
    except RegistryError as e:
        print(type(e).__name__ + ": " + str(e), flush=True)
"""


def test_read_modify_write_loses_nothing(tmp_path):
    root = tmp_path / "reg"
    reg = Registry(root)
    reg.put("shared", {"i": 0}, arrays_for(0))
    go = tmp_path / "go"
    procs = [spawn(tmp_path, f"rmw{k}", RMW, root, k + 1, go) for k in range(3)]
    results = start_together(procs, go)
    outcomes = [o.strip().splitlines()[-1] for _, o, _ in results]
    assert sorted(outcomes)[-1] == "won" and outcomes.count("won") == 1, outcomes
    for o in outcomes:
        if o != "won":
            assert o.startswith("EntryChangedError: entry 'shared' was changed by another vdna process"), o
    winner = outcomes.index("won") + 1
    assert reg.meta("shared") == {"i": winner}


def test_fresh_registry_created_by_many_processes_at_once(tmp_path):
    root = tmp_path / "fresh"
    go = tmp_path / "go"
    body = """
        wait_for_go(sys.argv[2])
        reg = Registry(sys.argv[1])
        reg.put(f"e{os.getpid()}", {}, {"a": np.arange(3)})
        print("ok", flush=True)
    """
    procs = [spawn(tmp_path, f"creator{k}", body, root, go) for k in range(6)]
    results = start_together(procs, go)
    assert [r[0] for r in results] == [0] * 6, [r[2] for r in results]
    assert len(Registry(root).names()) == 6
    assert json.loads((root / "registry.json").read_text())["format"] == "vdna-registry"


REPAIR_RACE_WRITER = """
    reg = Registry(sys.argv[1])
    until = time.time() + float(sys.argv[2])
    wait_for_go(sys.argv[3])
    n = failures = 0
    while time.time() < until:
        try:
            reg.put(f"big{n}", {"i": n}, arrays_for(n, size=2000))
        except RegistryError as e:
            failures += 1
            print(e, file=sys.stderr)
        n += 1
    print(json.dumps({"writes": n, "failures": failures}), flush=True)
"""


def test_repair_never_deletes_a_live_writers_files(tmp_path):
    root = tmp_path / "reg"
    reg = Registry(root)
    reg.put("seed", {}, {"a": np.zeros(2)})
    (reg.tmp_dir / "dead.1.00000000.h5.part").write_bytes(b"left by a killed writer of an earlier version")
    (reg.tmp_dir / "dead2.w9.00000000.h5.part").write_bytes(b"left by a killed writer in slot 9")
    go = tmp_path / "go"
    proc = spawn(tmp_path, "writer", REPAIR_RACE_WRITER, root, 2.5, go)
    assert proc.stdout.readline().strip() == "ready"
    go.touch()
    removed = []
    deadline = time.time() + 2.5
    while time.time() < deadline:
        removed += [p.name for p in reg.repair()]
    out, err = proc.communicate(timeout=120)
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["failures"] == 0 and rep["writes"] > 3, (rep, err)
    assert sorted(removed) == ["dead.1.00000000.h5.part", "dead2.w9.00000000.h5.part"]
    assert len(reg.names()) == rep["writes"] + 1 and all(reg.verify(n) == [] for n in reg.names())


INDEX_USER = """
    from vdnacli.catalog import Catalog
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from families import synthetic

    cat = Catalog(sys.argv[1])
    me = int(sys.argv[2])
    until = time.time() + float(sys.argv[3])
    wait_for_go(sys.argv[4])
    rng = np.random.default_rng(me)
    n = mismatches = 0
    while time.time() < until:
        cat.put(f"far{me}-{n}", synthetic(rng, 1, far=True))  # far from every query: top 5 stays the same
        if n % 3 == 0:
            cat.put(f"base{me}", synthetic(np.random.default_rng(100 + me), 0), replace=True)  # same content, new file
        q = f"base{(me + n) % 4}"
        fast, _ = cat.nearest(q, top=5)
        brute, _ = cat.nearest(q, top=5, exact=True)
        if fast != brute:
            mismatches += 1
            print(q, fast, brute, file=sys.stderr)
        n += 1
    print(json.dumps({"rounds": n, "mismatches": mismatches}), flush=True)
"""

FAMILIES = """
import numpy as np
from vdnacli.dna import DNA, new_meta

LAYERS = {"l1": 24, "l2": 16}
BINS = 64


def synthetic(rng, family, far=False):
    hist = {}
    for layer, k in LAYERS.items():
        centre = (48 if far else 12 + 4 * family) + rng.normal(0, 1.5, k)
        x = np.clip(rng.normal(centre[:, None], 3.0, (k, 400)).astype(np.int64), 0, BINS - 1)
        h = np.zeros((k, BINS), dtype=np.int64)
        np.add.at(h, (np.repeat(np.arange(k), 400), x.ravel()), 1)
        hist[layer] = h
    meta = new_meta(extractor="synthetic", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=LAYERS, bins=BINS,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = 400
    return DNA(meta=meta, hist=hist)
"""


def load_families(tmp_path: Path):
    """FAMILIES as a module file next to the child scripts, and loaded here too."""
    import importlib.util

    path = tmp_path / "families.py"
    path.write_text(FAMILIES)
    spec = importlib.util.spec_from_file_location("families", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.synthetic


def test_nearest_index_stays_exact_under_concurrent_writers_and_queries(tmp_path):
    from vdnacli.catalog import Catalog

    synthetic = load_families(tmp_path)

    root = tmp_path / "reg"
    cat = Catalog(root)
    for k in range(4):
        cat.put(f"base{k}", synthetic(np.random.default_rng(100 + k), 0))
    for k in range(8):
        cat.put(f"near{k}", synthetic(np.random.default_rng(200 + k), k % 3))
    go = tmp_path / "go"
    procs = [spawn(tmp_path, f"index{k}", INDEX_USER, root, k, 4.0, go) for k in range(3)]
    results = start_together(procs, go)
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    reps = [json.loads(o.strip().splitlines()[-1]) for _, o, _ in results]
    assert sum(r["rounds"] for r in reps) >= 6
    assert all(r["mismatches"] == 0 for r in reps), [e[-2000:] for _, _, e in results]
    for q in ("base0", "near3", "far1-0"):
        assert cat.nearest(q, top=7)[0] == cat.nearest(q, top=7, exact=True)[0]
    assert cat.registry.leftovers() == []
    segments = list((root / "index").rglob("*.h5"))
    assert 0 < len(segments) <= 2 * 8  # compacted: O(log entries) segments per index


def test_cli_imports_at_once(vdna, tmp_path, registry_dir):
    """Real `vdna import` processes: different names all succeed, one name has one winner."""
    from vdnacli.catalog import Catalog
    from vdnacli.interop import export_upstream

    synthetic = load_families(tmp_path)
    Catalog(registry_dir)
    for k in range(5):
        export_upstream(synthetic(np.random.default_rng(k), k % 3), tmp_path / f"pair{k}")
    env = dict(os.environ, VDNA_REGISTRY=str(registry_dir), NO_COLOR="1")
    cmds = [["import", tmp_path / f"pair{k}", "--name", f"d{k}"] for k in range(4)]
    cmds += [["import", tmp_path / "pair4", "--name", "same"] for _ in range(3)]
    procs = [subprocess.Popen([sys.executable, "-m", "vdnacli", *map(str, c)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(timeout=240), p.stdout.read(), p.stderr.read()) for p in procs]
    assert [r[0] for r in results[:4]] == [0, 0, 0, 0], [r[2] for r in results[:4]]
    same = results[4:]
    assert sorted(r[0] for r in same) == [0, 1, 1], [r[2] for r in same]
    for code, _, err in same:
        if code:
            assert err.strip() == "error: an entry named 'same' already exists (--replace overwrites it; or choose another name)"
    r = vdna("verify", "--json")
    assert r.code == 0 and r.json()["entries"] == 5 and r.json()["leftovers"] == 0
