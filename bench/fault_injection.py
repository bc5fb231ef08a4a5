"""Fault injection against real `vdna` processes: SIGKILL at random moments, and concurrent writers.

Kill rounds (--kill-rounds N): each round starts a real `vdna add` of a tiny image folder
(new name, `--replace` of a committed entry, or `--append` to one) and SIGKILLs it at a
random time: odd rounds uniformly in [0, 1.15 T], even rounds uniformly in [0.75 T, 1.1 T]
(T = the duration of an uninterrupted run; the write and the rename happen in its last
few percent), so kills land during start-up, extraction, the write and the rename, and
some runs finish. After each kill a round survives when:
  * every previously committed entry file is bit-identical (sha256 of the file),
  * the target is its old version, absent, or a new entry that verifies (checksums and
    DNA invariants), and no other name appeared,
  * `vdna verify --repair --json` exits 0 with no damaged entry and leaves no temporary file.

Concurrent rounds (--concurrent-rounds N): each round starts at once 2 `vdna add` of
different new names, 2 `vdna add` of one contested name, 2 `vdna add --append` to one
shared entry, while this process reads those entries in a loop. A round survives when
the different names all succeed, exactly one contested writer wins and the other gets the
"already exists" error, each append either succeeds or fails with the "changed by another
vdna process" error and the shared entry counts exactly the images of the appends that
succeeded (nothing lost), every read of the entries being written (by this script's own
process, with full checksum and DNA checks, as often as it can while the writers run) saw
a complete entry, and `vdna verify --repair` finds nothing damaged and nothing to repair.

Disk-full rounds (--disk-full-rounds N, root only: each mounts a small tmpfs): a registry of
real-sized entries on a tmpfs filled up to a random amount of free space (1 kB to 1.6 MB,
log-uniform, so that writes fail at every stage: entry file, journal, registry marker, HF cache), then one writer:
`import`, `merge`, `mask create`, `pull` (from a loopback fake Hub, HF cache on the same disk)
or `add`. A round survives when the command exits 0 (it fitted) or 1 with one error line naming
the cause, never a crash (h5py used to segfault on ENOSPC), every committed entry is
bit-identical, the target is absent or complete, no temporary file is left, and once space is
freed `vdna verify --repair` finds nothing damaged.

Read-only rounds (--read-only-rounds N, root only: a read-only bind mount): every read command
(`list show compare nearest matrix verify export`, `mask list`) on a read-only registry exits 0;
every writer (`import merge mask create remove add`) exits 1 with one error line naming the
read-only file system; not a byte of the registry changes, no folder or lock file appears.

Decode-death rounds (--decode-death-rounds N): see decode_death_rounds (a decode worker dying
on one image costs that image only; a killed vdna leaves no decode worker behind).

Run:  python bench/fault_injection.py --kill-rounds 50 --concurrent-rounds 20
      python bench/fault_injection.py --kill-rounds 0 --concurrent-rounds 0 --disk-full-rounds 40 --read-only-rounds 5
(about 4 + 8 minutes on 2 CPU cores; each `vdna add` loads EfficientNet-Lite0, ~2 s).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from vdnacli import samples  # noqa: E402
from vdnacli.catalog import Catalog  # noqa: E402
from vdnacli.integrity import check_entry  # noqa: E402

EXISTS = "already exists (use --replace to overwrite it)"
CHANGED = "was changed by another vdna process while this one worked"


def entry_shas(reg: Path) -> dict[str, str]:
    return {p.name[:-3]: hashlib.sha256(p.read_bytes()).hexdigest() for p in (reg / "entries").glob("*.h5")}


class Runner:
    def __init__(self, work: Path, registry: Path):
        self.work, self.registry = work, registry
        self.env = dict(os.environ, VDNA_REGISTRY=str(registry), NO_COLOR="1", VDNA_WORKERS="0",
                        HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        self.env.pop("VDNA_DEBUG", None)

    def start(self, *args) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "vdnacli", *map(str, args)], env=self.env, cwd=self.work,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args, timeout=600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vdnacli", *map(str, args)], env=self.env, cwd=self.work,
                              capture_output=True, text=True, timeout=timeout)


def verify_repair(r: Runner) -> tuple[bool, int, str]:
    """(clean, leftovers removed, why not clean) after `vdna verify --repair --json`."""
    p = r.run("verify", "--repair", "--json")
    try:
        rep = json.loads(p.stdout)
    except ValueError:
        return False, 0, f"verify printed no JSON (exit {p.returncode}): {p.stderr.strip()[:200]}"
    if p.returncode != 0 or rep["damaged"]:
        return False, rep.get("removed", 0), f"verify exit {p.returncode}: {rep['damaged']}"
    parts = list((r.registry / "tmp").glob("*.part"))
    if parts:
        return False, rep["removed"], f"{len(parts)} temporary file(s) left after repair"
    return True, rep["removed"], ""


def kill_rounds(r: Runner, folders: list[Path], n: int, rng: np.random.Generator, log) -> dict:
    cat = Catalog(r.registry)
    runs = []
    for k in range(4):  # T: the median of 3 uninterrupted runs after a warm-up (file cache, imports)
        t0 = time.perf_counter()
        p = r.run("add", "calib" if k == 0 else f"calib{k}", folders[0], "--limit", "2")
        runs.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"uninterrupted `vdna add` failed: {p.stderr}")
        if k:
            cat.remove(f"calib{k}")
    full = float(np.median(runs[1:]))
    log(f"uninterrupted `vdna add --limit 2`: {full:.2f} s (median of {', '.join(f'{t:.2f}' for t in runs[1:])}); "
        f"killing at uniform [0, {1.15 * full:.2f}] s or [{0.75 * full:.2f}, {1.1 * full:.2f}] s")
    stats = {"rounds": n, "survived": 0, "target_absent": 0, "target_old": 0, "target_new": 0, "finished": 0,
             "leftovers_removed": 0, "entries_checked": 0, "failures": [], "seconds_per_run": round(full, 2)}
    committed = ["calib"]
    for i in range(n):
        mode = ("new", "new", "replace", "append")[i % 4]
        folder = folders[int(rng.integers(len(folders)))]
        if mode == "new":
            target, extra = f"k{i}", []
        else:
            target = committed[int(rng.integers(len(committed)))]
            extra = ["--replace"] if mode == "replace" else ["--append"]
        before = entry_shas(r.registry)
        at = float(rng.uniform(0, 1.15 * full) if i % 2 else rng.uniform(0.75 * full, 1.1 * full))
        proc = r.start("add", target, folder, "--limit", "2", "--seed", i, *extra)
        try:
            code = proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        proc.communicate()
        problems = []
        after = entry_shas(r.registry)
        for name, sha in before.items():
            if name != target and after.get(name) != sha:
                problems.append(f"committed entry {name} changed or vanished")
        if set(after) - set(before) - {target}:
            problems.append(f"unexpected entries {sorted(set(after) - set(before) - {target})}")
        state = "absent" if target not in after else "old" if after[target] == before.get(target) else "new"
        for name in after:
            bad = check_entry(cat.registry, name)
            if bad:
                problems.append(f"{name}: {bad}")
        stats["entries_checked"] += len(after)
        if code == 0 and state != "new" and mode != "append":
            problems.append(f"`vdna add` finished but the target is {state}")
        if code not in (None, 0) and mode != "append":
            problems.append(f"`vdna add` failed on its own (exit {code})")
        clean, removed, why = verify_repair(r)
        if not clean:
            problems.append(why)
        if entry_shas(r.registry) != after:
            problems.append("verify --repair changed an entry")
        stats["leftovers_removed"] += removed
        stats[f"target_{state}"] += 1
        stats["finished"] += code is not None
        if problems:
            stats["failures"].append({"round": i, "mode": mode, "killed_at": round(at, 2), "problems": problems})
        else:
            stats["survived"] += 1
        if state == "new" and target not in committed:
            committed.append(target)
        log(f"kill {i + 1:3d}/{n} {mode:7s} at {at:5.2f}s: {'finished' if code is not None else 'killed':8s} "
            f"target {state:6s} leftovers {removed} {'OK' if not problems else 'FAIL ' + '; '.join(problems)}")
    return stats


def concurrent_rounds(r: Runner, folders: list[Path], n: int, rng: np.random.Generator, log) -> dict:
    """See the module docstring; appends use folders of fresh photo crops, so none is a no-op."""
    cat = Catalog(r.registry)
    fresh = [samples.write_pngs(samples.photo_crops(2, seed=1000 + k, size=96), r.work / "append" / f"a{k}")
             for k in range(2 * n)]
    stats = {"rounds": n, "survived": 0, "different_ok": 0, "contested_winners": 0, "contested_clear_errors": 0,
             "appends_ok": 0, "appends_refused": 0, "reader_passes": 0, "reader_damaged": 0, "failures": []}
    shared = "shared"
    if shared not in cat.names():
        p = r.run("add", shared, folders[0], "--limit", "2")
        assert p.returncode == 0, p.stderr
    for i in range(n):
        problems = []
        base = cat.registry.meta(shared)["num_images"]
        pick = [folders[int(k)] for k in rng.permutation(len(folders))]
        writers = {
            f"d{i}a": r.start("add", f"d{i}a", pick[0], "--limit", "2"),
            f"d{i}b": r.start("add", f"d{i}b", pick[1], "--limit", "2"),
            "contested-1": r.start("add", f"c{i}", pick[2], "--limit", "2"),
            "contested-2": r.start("add", f"c{i}", pick[3], "--limit", "2"),
            "append-1": r.start("add", shared, fresh[2 * i], "--append", "--json"),
            "append-2": r.start("add", shared, fresh[2 * i + 1], "--append", "--json"),
        }
        passes = damaged = 0
        targets = [f"d{i}a", f"d{i}b", f"c{i}", shared]
        while any(p.poll() is None for p in writers.values()):  # a reader during the writes
            for name in targets:  # the entries being written: full checksum + DNA checks
                if name in cat.registry:
                    bad = check_entry(cat.registry, name)
                    if bad and name in cat.registry:
                        damaged += 1
                        problems.append(f"reader saw {name} damaged: {bad}")
                    passes += 1
            time.sleep(0.02)
        out = {k: (p.wait(), *p.communicate()) for k, p in writers.items()}
        stats["reader_passes"] += passes
        stats["reader_damaged"] += damaged
        if damaged:
            problems.append(f"a reader saw {damaged} damaged entries")
        for k in (f"d{i}a", f"d{i}b"):
            if out[k][0] != 0:
                problems.append(f"{k} failed: {out[k][2].strip()[:200]}")
            else:
                stats["different_ok"] += 1
        codes = sorted(out[k][0] for k in ("contested-1", "contested-2"))
        loser = [out[k][2].strip() for k in ("contested-1", "contested-2") if out[k][0] != 0]
        if codes == [0, 1] and loser and loser[0] == f"error: an entry named 'c{i}' {EXISTS}":
            stats["contested_winners"] += 1
            stats["contested_clear_errors"] += 1
        else:
            problems.append(f"contested writers: exits {codes}, stderr {loser}")
        added = 0
        for k in ("append-1", "append-2"):
            code, stdout, stderr = out[k]
            if code == 0:
                stats["appends_ok"] += 1
                added += json.loads(stdout)["added_images"]
            elif CHANGED in stderr:
                stats["appends_refused"] += 1
            else:
                problems.append(f"{k} failed without the expected error: {stderr.strip()[:200]}")
        now = cat.registry.meta(shared)["num_images"]
        if now != base + added:
            problems.append(f"shared entry counts {now} images, expected {base} + {added} (an append was lost)")
        for name in cat.names():
            bad = check_entry(cat.registry, name)
            if bad:
                problems.append(f"{name}: {bad}")
        clean, removed, why = verify_repair(r)
        if not clean or removed:
            problems.append(why or f"{removed} leftover(s) after a round without kills")
        if problems:
            stats["failures"].append({"round": i, "problems": problems})
        else:
            stats["survived"] += 1
        log(f"concurrent {i + 1:3d}/{n}: {len(writers)} writers, {passes} reads meanwhile, appends ok "
            f"{sum(out[k][0] == 0 for k in ('append-1', 'append-2'))}/2 "
            f"{'OK' if not problems else 'FAIL ' + '; '.join(problems)}")
    return stats


# -- the disk or the filesystem saying no -------------------------------------------------------
def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _state(root: Path) -> dict[str, str]:
    """sha256 of every file of a registry except lock files (empty, left for the next writer)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _error_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [l for l in p.stderr.splitlines() if l.strip() and "it/s]" not in l and "B/s]" not in l]


def _real_dna(seed: int, bins: int = 1000):
    """A DNA with EfficientNet-Lite0's layers and counts as a real one has (it verifies); ~2 MB on disk."""
    from vdnacli.dna import DNA, images_digest, new_meta
    from vdnacli.extractors import get_spec

    spec = get_spec("efficientnet-lite0")
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor=spec.name, weights_sha256=spec.weights.sha256, ranges_sha256="c" * 64,
                    layers=dict(spec.layers), bins=bins, preprocessing=spec.preprocessing(), kinds=("hist",))
    hashes = np.unique(rng.integers(0, 256, size=(8, 16), dtype=np.uint8), axis=0)
    meta["num_images"], meta["images_sha256"] = len(hashes), images_digest(hashes)
    hist = {l: rng.multinomial(49 * len(hashes), rng.dirichlet(np.ones(bins)), size=n).astype(np.int64)
            for l, n in spec.layers}
    return DNA(meta=meta, hist=hist, image_hashes=hashes)


def _fill(path: Path, leave: int) -> None:
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def disk_full_rounds(work: Path, folders: list[Path], n: int, rng: np.random.Generator, log) -> dict:
    from hub_server import FakeHub  # tests/hub_server.py: a loopback fake of the Hub
    from vdnacli.interop import export_upstream

    stats = {"rounds": n, "survived": 0, "fitted": 0, "refused": 0, "crashed": 0, "by_command": {}, "failures": []}
    mnt = work / "small-disk"
    mnt.mkdir(exist_ok=True)
    src = work / "sources"
    pub = Catalog(src / "publisher")
    for k in range(3):
        if f"p{k}" not in pub.names():
            pub.put(f"p{k}", _real_dna(100 + k))
        export_upstream(_real_dna(200 + k), src / "pairs" / f"up{k}")
    hub = FakeHub().start()
    hub.add_repo("me/dnas", {f"dnas/p{k}.h5": (pub.registry.entries_dir / f"p{k}.h5").read_bytes() for k in range(3)})
    commands = ["import", "merge", "mask", "pull", "pull-cache", "add"]
    try:
        for i in range(n):
            if not _mount(["-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)]):
                raise SystemExit("disk-full rounds need to mount a tmpfs (run as root)")
            try:
                reg = mnt / "reg"
                cat = Catalog(reg)
                cat.put("a", _real_dna(300 + i))
                cat.put("b", _real_dna(400 + i))
                leave = int(10 ** rng.uniform(3, 6.2))  # 1 kB to 1.6 MB, log-uniform: small writes fail too
                _fill(mnt, leave)
                before = _state(reg)
                cmd = commands[i % len(commands)]
                r = Runner(work, reg)
                r.env.update(HF_HOME=str(work / "hf" / f"r{i}"), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0",
                             HF_HUB_DISABLE_XET="1")
                if cmd == "pull-cache":
                    r.env["HF_HOME"] = str(mnt / "hf")
                args = {"import": ["import", src / "pairs" / f"up{i % 3}", "--name", "target"],
                        "merge": ["merge", "target", "a", "b"],
                        "mask": ["mask", "create", "target", "--with", "a", "--without", "b", "--top", "500"],
                        "pull": ["pull", "me/dnas", "--path", f"dnas/p{i % 3}.h5", "--name", "target"],
                        "pull-cache": ["pull", "me/dnas", "--path", f"dnas/p{i % 3}.h5", "--name", "target"],
                        "add": ["add", "target", folders[i % len(folders)], "--limit", "2"]}[cmd]
                p = r.run(*args)
                problems = []
                errors = _error_lines(p)
                if p.returncode < 0 or p.returncode > 128:
                    stats["crashed"] += 1
                    problems.append(f"crashed (exit {p.returncode})")
                elif p.returncode == 1:
                    if len(errors) != 1 or not errors[0].startswith("error: ") or "Traceback" in p.stderr \
                            or "internal error" in p.stderr:
                        problems.append(f"not one error line: {p.stderr.strip()[-300:]}")
                    stats["refused"] += 1
                elif p.returncode == 0:
                    stats["fitted"] += 1
                else:
                    problems.append(f"exit {p.returncode}: {p.stderr.strip()[-200:]}")
                after = _state(reg)
                for k, v in before.items():
                    if after.get(k) != v:
                        problems.append(f"{k} changed or vanished")
                new = sorted(set(after) - set(before))
                target = "masks/entries/target.h5" if cmd == "mask" else "entries/target.h5"
                allowed = {target} | ({"masks/registry.json"} if cmd == "mask" else set())
                if p.returncode != 0 and new:
                    problems.append(f"a refused write left {new}")
                if set(new) - allowed:
                    problems.append(f"unexpected files {sorted(set(new) - allowed)}")
                if list((reg / "tmp").glob("*.part")) or list((reg / "masks" / "tmp").glob("*.part")):
                    problems.append("temporary files left behind")
                (mnt / "filler").unlink()
                clean, _, why = verify_repair(r)
                if not clean:
                    problems.append(why)
                by = stats["by_command"].setdefault(cmd, {"rounds": 0, "fitted": 0, "refused": 0})
                by["rounds"] += 1
                by["fitted" if p.returncode == 0 else "refused"] += 1
                if problems:
                    stats["failures"].append({"round": i, "command": cmd, "free": leave, "problems": problems})
                else:
                    stats["survived"] += 1
                log(f"disk-full {i + 1:3d}/{n} {cmd:10s} free {leave / 1e6:4.2f} MB: "
                    f"{'fitted' if p.returncode == 0 else (errors[-1][:90] if errors else f'exit {p.returncode}')} "
                    f"{'OK' if not problems else 'FAIL ' + '; '.join(problems)}")
            finally:
                _umount(mnt)
    finally:
        hub.stop()
    return stats


def read_only_rounds(work: Path, folders: list[Path], n: int, log) -> dict:
    from vdnacli.interop import export_upstream

    stats = {"rounds": n, "survived": 0, "reads_ok": 0, "reads": 0, "writes_refused": 0, "writes": 0,
             "read_failures": {}, "failures": []}
    reg = work / "ro-registry"
    shutil.rmtree(reg, ignore_errors=True)
    cat = Catalog(reg)
    for k in range(4):
        cat.put(f"r{k}", _real_dna(500 + k))
    export_upstream(_real_dna(600), work / "ro-pairs" / "up")
    out = work / "ro-export"
    out.mkdir(exist_ok=True)
    reads = [["list", "--json"], ["show", "r0", "--json"], ["compare", "r0", "r1", "--json"],
             ["nearest", "r0", "--json"], ["matrix", "r0", "r1", "r2", "--json"], ["verify", "--json"],
             ["mask", "list", "--json"], ["verify", "--repair", "--json"]]  # nothing to repair: nothing written
    writes = [["import", work / "ro-pairs" / "up", "--name", "new"], ["merge", "m", "r0", "r1"],
              ["mask", "create", "mk", "--with", "r0", "--without", "r1", "--top", "10"], ["remove", "r3"],
              ["add", "new2", folders[0], "--limit", "2"]]
    for i in range(n):
        for d in ("tmp", "locks", "index"):  # as if copied without its working folders
            shutil.rmtree(reg / d, ignore_errors=True)
        (reg / ".lock").unlink(missing_ok=True)
        before = _state(reg)
        listing = sorted(p.relative_to(reg) for p in reg.rglob("*"))
        if not (_mount(["--bind", str(reg), str(reg)]) and _mount(["-o", "remount,bind,ro", str(reg)])):
            _umount(reg)
            raise SystemExit("read-only rounds need bind mounts (run as root)")
        problems = []
        try:
            r = Runner(work, reg)
            for args in reads + [["export", f"r{i % 4}", out / f"e{i}"]]:
                p = r.run(*args)
                stats["reads"] += 1
                if p.returncode == 0:
                    stats["reads_ok"] += 1
                else:
                    stats["read_failures"][args[0]] = stats["read_failures"].get(args[0], 0) + 1
                    problems.append(f"{args[0]} failed: {(_error_lines(p) or ['?'])[-1][:120]}")
            for args in writes[: 4 if i else 5]:
                p = r.run(*args)
                stats["writes"] += 1
                errors = _error_lines(p)
                if p.returncode == 1 and len(errors) == 1 and "read-only file system" in errors[0]:
                    stats["writes_refused"] += 1
                else:
                    problems.append(f"{args[0]}: exit {p.returncode}, {p.stderr.strip()[-200:]}")
        finally:
            _umount(reg)
        if _state(reg) != before or sorted(p.relative_to(reg) for p in reg.rglob("*")) != listing:
            problems.append("the read-only registry changed")
        if problems:
            stats["failures"].append({"round": i, "problems": problems})
        else:
            stats["survived"] += 1
        log(f"read-only {i + 1:3d}/{n}: reads ok {stats['reads_ok']}/{stats['reads']}, writes refused "
            f"{stats['writes_refused']}/{stats['writes']} {'OK' if not problems else 'FAIL ' + '; '.join(problems)}")
    return stats


def _children(pid: int) -> list[int]:
    p = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def decode_death_rounds(r: Runner, folders: list[Path], n: int, rng: np.random.Generator, log) -> dict:
    """`vdna add --workers 2` whose decode worker dies (SIGKILL as the OOM killer sends it, or
    SIGSEGV) on one random image (decode_pool's test hook: a real death), then the same add
    SIGKILLed at a random moment. A round survives when the first exits 0 with exactly that
    image failed, naming the signal, and an entry of the other images that verifies; and when,
    killed 0-2 s after its decode workers started, no worker of the killed process is alive 5 s
    later (none orphaned)."""
    from vdnacli.decode_pool import TEST_DEATH_ENV

    env = dict(r.env, VDNA_WORKERS="2")
    stats = {"rounds": n, "survived": 0, "images_lost_besides_the_culprit": 0, "orphaned_workers": 0,
             "failures": []}
    for i in range(n):
        folder = folders[int(rng.integers(len(folders)))]
        images = sorted(p.name for p in folder.iterdir())
        culprit = images[int(rng.integers(len(images)))]
        sig = ("KILL", "SEGV")[i % 2]
        problems = []
        p = subprocess.run([sys.executable, "-m", "vdnacli", "add", f"d{i}", folder, "--json"], cwd=r.work,
                           env={**env, TEST_DEATH_ENV: f"{sig}:{culprit}"}, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            problems.append(f"add exited {p.returncode}: {p.stderr.strip()[-200:]}")
        else:
            rep = json.loads(p.stdout)
            failed = [(f["image"], f["reason"]) for f in rep["failed"]]
            if [f[0] for f in failed] != [culprit] or f"SIG{sig}" not in failed[0][1]:
                problems.append(f"failed list {failed}")
            lost = len(images) - 1 - rep["num_images"]
            stats["images_lost_besides_the_culprit"] += max(lost, 0)
            if lost:
                problems.append(f"{lost} other image(s) not counted")
            bad = check_entry(Catalog(r.registry).registry, f"d{i}")
            if bad:
                problems.append(f"entry does not verify: {bad}")
        proc = subprocess.Popen([sys.executable, "-m", "vdnacli", "add", f"k{i}", folder], cwd=r.work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kids, start = [], time.time()
        while not kids and proc.poll() is None and time.time() < start + 120:  # until its decode workers run
            kids = _children(proc.pid)
            time.sleep(0.1)
        time.sleep(float(rng.uniform(0, 2)))
        kids = sorted(set(kids) | set(_children(proc.pid)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(5)
        orphans = [k for k in kids if _alive(k)]
        stats["orphaned_workers"] += len(orphans)
        for k in orphans:
            problems.append(f"decode worker {k} still alive after its parent was killed")
            os.kill(k, signal.SIGKILL)
        if problems:
            stats["failures"].append({"round": i, "problems": problems})
        else:
            stats["survived"] += 1
        log(f"decode death {i + 1:3d}/{n}: SIG{sig} on {culprit}, then a kill after {len(kids)} child(ren) seen "
            f"{'OK' if not problems else 'FAIL ' + '; '.join(problems)}")
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-rounds", type=int, default=50)
    ap.add_argument("--concurrent-rounds", type=int, default=20)
    ap.add_argument("--disk-full-rounds", type=int, default=0)
    ap.add_argument("--read-only-rounds", type=int, default=0)
    ap.add_argument("--decode-death-rounds", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="Scratch folder (default: a new temporary one).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vdna-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    rng = np.random.default_rng(args.seed)
    folders = list(samples.write_demo_sets(work / "images", per_half=4).values())
    results = {"kill": None, "concurrent": None, "disk_full": None, "read_only": None, "decode_death": None}
    t0 = time.perf_counter()
    if args.kill_rounds:
        reg = work / "kill-registry"
        shutil.rmtree(reg, ignore_errors=True)
        results["kill"] = kill_rounds(Runner(work, reg), folders, args.kill_rounds, rng, log)
    if args.concurrent_rounds:
        reg = work / "concurrent-registry"
        shutil.rmtree(reg, ignore_errors=True)
        results["concurrent"] = concurrent_rounds(Runner(work, reg), folders, args.concurrent_rounds, rng, log)
    if args.disk_full_rounds:
        results["disk_full"] = disk_full_rounds(work, folders, args.disk_full_rounds, rng, log)
    if args.read_only_rounds:
        results["read_only"] = read_only_rounds(work, folders, args.read_only_rounds, log)
    if args.decode_death_rounds:
        reg = work / "decode-death-registry"
        shutil.rmtree(reg, ignore_errors=True)
        results["decode_death"] = decode_death_rounds(Runner(work, reg), folders, args.decode_death_rounds, rng, log)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    k, c, f, ro = results["kill"], results["concurrent"], results["disk_full"], results["read_only"]
    dd = results["decode_death"]
    print()
    if k:
        print(f"kill rounds:       {k['survived']}/{k['rounds']} survived with nothing lost "
              f"(target absent {k['target_absent']}, old {k['target_old']}, new {k['target_new']}; "
              f"{k['finished']} runs finished before the kill; {k['leftovers_removed']} leftover file(s) removed "
              f"by verify --repair; {k['entries_checked']} entry checks)")
    if c:
        print(f"concurrent rounds: {c['survived']}/{c['rounds']} survived with nothing lost "
              f"({c['different_ok']} different-name writers ok, {c['contested_winners']} contested names with one "
              f"winner and one clear error, appends {c['appends_ok']} ok / {c['appends_refused']} refused as changed, "
              f"{c['reader_passes']} reads of entries being written saw {c['reader_damaged']} damaged)")
    if f:
        print(f"disk-full rounds:  {f['survived']}/{f['rounds']} survived ({f['fitted']} writes fitted, {f['refused']} "
              f"refused with one error line, {f['crashed']} crashed; by command {f['by_command']})")
    if ro:
        print(f"read-only rounds:  {ro['survived']}/{ro['rounds']} survived (reads ok {ro['reads_ok']}/{ro['reads']}"
              f"{', failures ' + str(ro['read_failures']) if ro['read_failures'] else ''}; writes refused with one "
              f"error line {ro['writes_refused']}/{ro['writes']})")
    if dd:
        print(f"decode-death rounds: {dd['survived']}/{dd['rounds']} survived ({dd['images_lost_besides_the_culprit']} "
              f"other images lost, {dd['orphaned_workers']} decode workers orphaned by a SIGKILL of vdna)")
    print(f"total {results['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    failed = any(x and x["survived"] != x["rounds"] for x in (k, c, f, ro, dd))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
