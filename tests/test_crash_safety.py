"""SIGKILL at random moments: real `vdna import`, `merge`, `remove` and `add` processes, group
commits (what a pull uses) and the nearest-search index. After every kill, each previously
committed entry is bit-identical, the target is either its old version or complete, no
half entry is visible, and `vdna verify --repair` leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from registry import Registry
from vdnacli.catalog import Catalog
from vdnacli.dna import DNA, new_meta
from vdnacli.integrity import check_entry, verify_catalog
from vdnacli.interop import export_upstream

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"l1": 40, "l2": 24}
BINS = 200


def synthetic(seed: int, images: int = 50) -> DNA:
    rng = np.random.default_rng(seed)
    hist = {}
    for layer, k in LAYERS.items():
        centre = rng.uniform(30, BINS - 30) + rng.normal(0, 5, k)
        x = np.clip(rng.normal(centre[:, None], 8.0, (k, images * 9)).astype(np.int64), 0, BINS - 1)
        h = np.zeros((k, BINS), dtype=np.int64)
        np.add.at(h, (np.repeat(np.arange(k), images * 9), x.ravel()), 1)
        hist[layer] = h
    meta = new_meta(extractor="synthetic", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=LAYERS, bins=BINS,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = images
    return DNA(meta=meta, hist=hist)


def entry_shas(root: Path) -> dict[str, str]:
    return {p.name[:-3]: hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "entries").glob("*.h5")}


def run_and_kill(args: list, env: dict, cwd: Path, at: float) -> int | None:
    """Start `python -m vdnacli ARGS`, SIGKILL it after `at` seconds; its exit code if it finished first."""
    p = subprocess.Popen([sys.executable, "-m", "vdnacli", *map(str, args)], env=env, cwd=cwd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        return p.wait(timeout=at)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        return None
    finally:
        p.stderr.close()


def timed(args, env, cwd) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "vdnacli", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return time.perf_counter() - t


def check_after_kill(cat: Catalog, before: dict[str, str], target: str) -> str:
    """The invariants; returns what happened to the target ('old', 'new' or 'absent')."""
    after = entry_shas(cat.root)
    for name, sha in before.items():
        if name != target:
            assert after.get(name) == sha, f"{name} changed or vanished"
    assert set(after) <= set(before) | {target}, set(after) - set(before)
    if target not in after:
        state = "absent"
    elif after[target] == before.get(target):
        state = "old"
    else:
        state = "new"
        assert check_entry(cat.registry, target) == []  # complete and consistent
    for name in after:
        assert check_entry(cat.registry, name) == [], name
    report = verify_catalog(cat, repair=True)
    assert report.damaged == {}
    assert not list(cat.registry.tmp_dir.glob("*.part")) and cat.registry.leftovers() == []
    assert entry_shas(cat.root) == after  # repair touches no entry
    return state


@pytest.fixture
def seeded(tmp_path):
    cat = Catalog(tmp_path / "reg")
    for k in range(4):
        cat.put(f"s{k}", synthetic(k))
    export_upstream(synthetic(50), tmp_path / "pair")
    env = dict(os.environ, VDNA_REGISTRY=str(cat.root), NO_COLOR="1", VDNA_WORKERS="0", HF_HUB_OFFLINE="1")
    env.pop("VDNA_DEBUG", None)
    return cat, env


@pytest.mark.parametrize("command", ["import", "merge", "merge-replace", "remove"])
def test_sigkill_of_cli_writers(seeded, tmp_path, command):
    cat, env = seeded
    rng = np.random.default_rng(["import", "merge", "merge-replace", "remove"].index(command))
    rounds = 6
    args_of = {
        "import": lambda i: (["import", tmp_path / "pair", "--name", f"imp{i}"], f"imp{i}"),
        "merge": lambda i: (["merge", f"m{i}", "s0", "s1", "s2"], f"m{i}"),
        "merge-replace": lambda i: (["merge", "s3", "s3", "s1", "--replace"], "s3"),  # merge into itself
        "remove": lambda i: (["remove", f"s{i % 4}"], f"s{i % 4}"),
    }
    states = []
    full = None
    for i in range(rounds):
        args, target = args_of[command](i)
        if command == "remove" and target not in cat.names():
            cat.put(target, synthetic(i % 4))
        if full is None:  # the duration of an uninterrupted run, measured on a scratch target
            scratch_args, scratch_target = args_of[command](99) if command != "remove" else (["remove", "s0"], "s0")
            full = timed(scratch_args, env, tmp_path)
            if command == "remove":
                cat.put("s0", synthetic(0))
            elif command == "merge-replace":
                cat.put("s3", synthetic(3), replace=True)
        before = entry_shas(cat.root)
        code = run_and_kill(args, env, tmp_path, at=float(rng.uniform(0.3, 1.1)) * full)
        state = check_after_kill(cat, before, target)
        if code == 0:
            assert state == ("absent" if command == "remove" else "new")
        states.append(state)
    assert len(states) == rounds and set(states) <= {"absent", "old", "new"}


GROUP_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from registry import Registry

    reg = Registry(sys.argv[1])
    print("ready", flush=True)
    g = 0
    while True:
        items = [(f"g{{g}}-{{k}}", {{"g": g, "k": k}}, {{"a": np.full((300, 300), g * 10 + k, dtype=np.int64)}})
                 for k in range(3)]
        reg.put_many(items)
        print(g, flush=True)
        g += 1
    """
)


def test_sigkill_during_group_commits_is_all_or_nothing(tmp_path):
    """put_many (a pull of several DNAs) is journaled: after a kill and the next open, each group
    is complete or absent."""
    root = tmp_path / "reg"
    Registry(root).put("keep", {"k": 1}, {"a": np.arange(10)})
    keep = entry_shas(root)["keep"]
    script = tmp_path / "group.py"
    script.write_text(GROUP_WRITER.format(root=str(ROOT)))
    rng = np.random.default_rng(5)
    for rnd in range(6):
        sub = tmp_path / f"reg{rnd}"
        Registry(sub)
        proc = subprocess.Popen([sys.executable, str(script), str(sub)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        done = [int(x) for x in out.split()]
        reg = Registry(sub)  # opening rolls forward an interrupted commit
        groups: dict[int, set[int]] = {}
        for n in reg.names():
            g, k = map(int, n[1:].split("-"))
            groups.setdefault(g, set()).add(k)
        assert all(ks == {0, 1, 2} for ks in groups.values()), groups
        assert set(range(len(done))) <= set(groups) <= set(range(len(done) + 1))
        for n in reg.names():
            meta, arrays = reg.read(n, verify=True)
            assert (arrays["a"] == meta["g"] * 10 + meta["k"]).all()
        reg.repair()
        assert reg.leftovers() == [] and not list(reg.tmp_dir.iterdir())
    assert entry_shas(root)["keep"] == keep


INDEX_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {here!r})
    from test_crash_safety import synthetic
    from vdnacli.catalog import Catalog

    cat = Catalog(sys.argv[1])
    start = int(sys.argv[2])
    print("ready", flush=True)
    i = start
    while True:
        cat.put(f"x{{i}}", synthetic(i))
        cat.nearest(f"x{{i}}", top=3)  # writes index segments, compacts them
        i += 1
    """
)


def test_sigkill_during_index_updates_never_gives_wrong_results(tmp_path):
    root = tmp_path / "reg"
    cat = Catalog(root)
    for k in range(6):
        cat.put(f"x{k}", synthetic(k))
    script = tmp_path / "indexer.py"
    script.write_text(INDEX_WRITER.format(root=str(ROOT), here=str(Path(__file__).parent)))
    rng = np.random.default_rng(11)
    for rnd in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(1000 * (rnd + 1))],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.1, 1.2)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        names = cat.names()
        for q in rng.choice(names, size=3, replace=False):
            fast, _ = cat.nearest(str(q), top=4)
            brute, _ = cat.nearest(str(q), top=4, exact=True)
            assert fast == brute, (q, fast, brute)
        index_files = [p for p in (root / "index").rglob("*") if p.is_file()]
        assert all(p.name.startswith("seg-") or p.name == "listing.h5" for p in index_files)  # nothing half-written
    assert verify_catalog(cat, repair=True).damaged == {}
    assert cat.registry.leftovers() == []


@pytest.mark.slow
def test_sigkill_of_vdna_add(tmp_path, sample_dirs):
    """The real extraction path (~3 s per run on 2 CPU cores): kills before and near the commit."""
    cat = Catalog(tmp_path / "reg")
    cat.put("keep", synthetic(1))
    env = dict(os.environ, VDNA_REGISTRY=str(cat.root), NO_COLOR="1", VDNA_WORKERS="0", HF_HUB_OFFLINE="1")
    folder = sample_dirs["faces-a"]
    full = timed(["add", "probe", folder, "--limit", "4"], env, tmp_path)
    states = []
    for i, frac in enumerate((0.5, 0.97, 1.03)):
        before = entry_shas(cat.root)
        code = run_and_kill(["add", f"a{i}", folder, "--limit", "4"], env, tmp_path, at=frac * full)
        states.append(check_after_kill(cat, before, f"a{i}"))
        if code == 0:
            assert states[-1] == "new"
    assert set(states) <= {"absent", "new"}
