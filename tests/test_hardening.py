"""Issue 14, the Hub and storage rows, one or more tests per row: names from outside never name a
path (1, 7, 12), memory bounded by what a file holds (2), the disk saying no (4), read-only
registries (5), sane numbers (6, 8), no secrets in output (10), no silent registries (13).

Full-disk and read-only cases mount a small tmpfs / a read-only bind mount: they skip where
mounting is not allowed (CI runs as root).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import hostile_files
from registry import CorruptEntryError, InvalidNameError, Registry, RegistryError, names
from registry.layout import array_sha256, read_entry
from test_hub import hub, no_internet, published, registry_state, synthetic  # noqa: F401  (hub, no_internet: fixtures)
from vdnacli import hub as H
from vdnacli.catalog import Catalog
from vdnacli.errors import ConfigError, FormatError
from vdnacli.integrity import check_entry, entry_caps, verify_catalog


def files_outside(root: Path, allowed: list[Path]) -> list[Path]:
    """Every file under `root` that is not under one of `allowed`."""
    out = []
    for p in root.rglob("*"):
        if p.is_file() and not any(a in p.parents for a in allowed):
            out.append(p)
    return sorted(out)


def one_line_error(r, code: int = 1) -> str:
    """The error line of a failed command: its last line on stderr (progress bars may come before)."""
    assert r.code == code, (r.code, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip() and "it/s]" not in l and "B/s]" not in l]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in lines[0], r.stderr
    return lines[0]


# -- mounts (root only) -------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str = "6m"):
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.decode().strip()[:80]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` remounted read-only in place (a read-only bind mount over itself)."""
    p = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({p.stderr.decode().strip()[:80]})")
    try:
        q = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True)
        if q.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({q.stderr.decode().strip()[:80]})")
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int = 48 << 10) -> None:
    """Fill the filesystem of `path` up to `leave` free bytes."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(path / f"filler-{uuid.uuid4().hex[:6]}", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def big_dna(seed: int, bins: int = 1000):
    """A DNA whose entry file is ~1 MB (random counts compress poorly)."""
    d = synthetic(seed, kinds=("hist",))
    rng = np.random.default_rng(seed)
    d.hist = {l: rng.integers(0, 2**20, size=(n, bins)).astype(np.int64) for l, n in d.layers.items()}
    d.meta["bins"] = bins
    return d


# -- row 1, 7, 12: every outside name validated by one strict function ----------------------------
@pytest.mark.parametrize("check,good,bad", [
    (names.entry_name, "a-1.b_c+d", ["a\n", "a\r", "", ".a", "a/b", "a.h5", "../x", "a" * 129, "é"]),
    (names.commit_sha, "0123456789abcdef0123456789abcdef01234567",
     ["0123456789abcdef0123456789abcdef01234567\n", "../../x", "0123456789ABCDEF0123456789ABCDEF01234567", "abc"]),
    (names.revision, "refs/pr/1", ["main\n", "../x", "a/../b", "/main", "a//b", "x.lock", "a b", "-x"]),
    (names.repo_id, "me/dnas", ["me/dnas\n", "../x", "a/b/c", "me/..", "me/.", "/x"]),
    (names.repo_path, "dnas/a b é.h5", ["dnas/../../x.h5", "/etc/x", "a\\b", "C:x", "a//b", "./a", "a\n/b", ""]),
    (names.etag, "0123abcd", ["../../x", "a/b", "a.b", "x\n", ""]),
])
def test_validators_are_full_matches(check, good, bad):
    assert check(good) == good
    for value in bad:
        with pytest.raises(InvalidNameError):
            check(value)


def test_names_ending_in_a_newline_are_refused_everywhere(tmp_path, vdna, registry_dir):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(InvalidNameError):
        reg.put("bad\n", {}, {"a": np.zeros(2)})
    reg.put("ok", {}, {"a": np.zeros(2)})
    (reg.entries_dir / "planted\n.h5").write_bytes((reg.entries_dir / "ok.h5").read_bytes())
    assert reg.names() == ["ok"]  # a file named with a newline is not listed
    Catalog(registry_dir).put("x", synthetic(1, kinds=("hist",)))
    r = vdna("mask", "create", "m\n", "--with", "x", "--without", "x", "--top", "3")
    assert "invalid entry name" in one_line_error(r)


def test_hostile_commit_id_in_the_listing_writes_nothing(hub, tmp_path):
    published(hub, tmp_path, {"a": synthetic(2, kinds=("hist",))})
    hub.tamper["info_sha"] = "../../../../../escaped-commit"
    cat = Catalog(tmp_path / "reg")
    before = files_outside(tmp_path, [tmp_path / "publisher"])
    with pytest.raises(H.HubIntegrityError, match="unsafe name.*commit id"):
        H.pull(cat, "me/dnas")
    assert files_outside(tmp_path, [tmp_path / "publisher"]) == before  # not even the HF cache grew
    assert not list(tmp_path.parent.rglob("escaped-commit*"))


@pytest.mark.parametrize("tamper", [{"commit_header": "../../../../../escaped-commit"},
                                    {"etag": "../../../../../escaped-etag"},
                                    {"commit_header": "0123456789abcdef0123456789abcdef01234567/.."}])
def test_hostile_file_answers_are_refused_before_the_cache_uses_them(hub, tmp_path, tamper):
    """The listing is fine, the file answers are not: the guard on huggingface_hub's client refuses them."""
    published(hub, tmp_path, {"a": synthetic(3, kinds=("hist",))})
    hub.tamper.update(tamper)
    cat = Catalog(tmp_path / "reg")
    with pytest.raises(H.HubIntegrityError, match="unsafe name"):
        H.pull(cat, "me/dnas")
    hf = tmp_path / "hf"
    assert files_outside(tmp_path, [tmp_path / "publisher", hf]) == []
    assert not list(tmp_path.parent.rglob("escaped-*")) and cat.names() == []
    assert not [p for p in hf.rglob("*") if p.is_file() and "blobs" in p.parts]  # nothing downloaded


@pytest.mark.parametrize("name", ["dnas/../../x.h5", "dnas/..\\..\\x.h5", "/abs/x.h5", "dnas/a\n.h5"])
def test_listing_with_a_traversing_name_is_one_error_line(hub, tmp_path, vdna, registry_dir, name):
    published(hub, tmp_path, {"a": synthetic(4, kinds=("hist",))})
    hub.tamper["extra_files"] = {name: b"whatever"}
    with pytest.raises(H.HubIntegrityError, match="unsafe name.*repo file path"):
        H.pull(Catalog(tmp_path / "reg"), "me/dnas")
    r = vdna("pull", "me/dnas", env={"HF_HUB_OFFLINE": "0"})
    assert "unsafe name" in one_line_error(r, 5) and not registry_dir.exists()  # integrity (docs/cli.md)


def test_revisions_and_repo_ids_are_checked_before_any_request(hub, tmp_path):
    cat = Catalog(tmp_path / "reg")
    for kwargs in ({"revision": "../x"}, {"revision": "main\n"}, {"revision": "a/../../b"}):
        with pytest.raises(ConfigError, match="invalid revision"):
            H.pull(cat, "me/dnas", **kwargs)
    with pytest.raises(ConfigError, match="invalid repo id"):
        H.pull(cat, "me/dnas\n")
    assert hub.requests == []


def test_a_poisoned_cache_ref_is_not_followed(hub, tmp_path):
    published(hub, tmp_path, {"a": synthetic(5, kinds=("hist",))})
    H.pull(Catalog(tmp_path / "first"), "me/dnas")
    ref = tmp_path / "hf" / "hub" / "datasets--me--dnas" / "refs" / "main"
    ref.write_text("../../../../../x")
    with pytest.raises(H.HubOfflineError, match="no cached copy"):
        H.pull(Catalog(tmp_path / "reg"), "me/dnas", offline=True)


# -- row 2: declared sizes capped before reading -----------------------------------------------------
@pytest.mark.parametrize("case", sorted(hostile_files.cases()))
def test_hostile_entry_files_are_refused_before_allocating(tmp_path, case):
    what, build = hostile_files.cases()[case]
    reg = Registry(tmp_path / "reg")
    reg.put("good", {}, {"a": np.arange(3)})
    build(reg.entries_dir / "bad.h5", "bad")
    problems = check_entry(reg, "bad")
    assert problems, what
    if case.endswith("unwritten") or case == "first-chunk-only":
        assert any(w in problems[0] for w in ("never written", "implausible shape")), problems
        with pytest.raises(CorruptEntryError):
            read_entry(reg.entries_dir / "bad.h5", caps=entry_caps)


def test_zero_bomb_is_refused_by_the_file_ratio(tmp_path):
    _, build = hostile_files.cases(small=False)["zero-bomb-1.6GB"]
    path = tmp_path / "bomb.h5"
    build(path, "bomb")
    assert path.stat().st_size < 2 << 20
    with pytest.raises(CorruptEntryError, match="compression bomb"):
        read_entry(path, verify=True, caps=entry_caps)


def test_a_real_entry_of_few_images_with_shards_verifies(tmp_path, lite0, sample_dirs):
    """A `vdna add` of 3 images keeps 8 shard DNAs of mostly zero counts: 18.65 M values in a ~1 MB
    file, more than 128x its size. It is a real DNA, not a compression bomb: it must verify."""
    from vdnacli.pipeline import Run, compute_dna
    from vdnacli.settings import ComputeSettings
    from vdnacli.shards import DEFAULT_SHARDS
    from vdnacli.sources import list_images

    settings = ComputeSettings.for_extractor("efficientnet-lite0", shards=DEFAULT_SHARDS)
    dna, _ = compute_dna(list_images(sample_dirs["faces-a"])[:3], lite0, settings, Run(batch_size=3))
    cat = Catalog(tmp_path / "reg")
    cat.put("few", dna)
    size = (tmp_path / "reg" / "entries" / "few.h5").stat().st_size
    assert check_entry(cat.registry, "few") == [], size  # was: "a compression bomb?" (1,007,352 bytes)


def test_pulling_hostile_entry_files_changes_nothing(hub, tmp_path):
    files = {}
    for case, (_, build) in hostile_files.cases().items():
        p = tmp_path / f"{case}.h5"
        build(p, case)
        files[f"dnas/{case}.h5"] = p.read_bytes()
    hub.add_repo("evil/dnas", files)
    cat = Catalog(tmp_path / "reg")
    cat.put("keep", synthetic(6, kinds=("hist",)))
    before = registry_state(cat.root)
    for path in files:
        with pytest.raises(FormatError, match="in evil/dnas"):
            H.pull(cat, "evil/dnas", path=path)
        assert registry_state(cat.root) == before


def test_array_checksums_are_unchanged_without_copies():
    """Hashing through a memoryview gives the checksums stored by earlier versions (tobytes)."""
    import hashlib

    def old(arr):
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        h = hashlib.sha256()
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        return h.hexdigest()

    rng = np.random.default_rng(0)
    for a in (rng.integers(0, 9, (30, 7)), rng.normal(size=(5, 3)).T, np.zeros((0, 16), np.uint8),
              np.arange(6, dtype=">i4").reshape(2, 3), np.array(5), rng.integers(0, 2, 100).astype(bool)):
        assert array_sha256(a) == old(a)


# -- row 4: the disk saying no ---------------------------------------------------------------------
PUT_ON_FULL_DISK = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from registry import Registry, RegistryError
reg = Registry(sys.argv[1])
rng = np.random.default_rng(0)
try:
    reg.put_many([(f"big{{i}}", {{}}, {{"a": rng.integers(0, 2**40, (400, 1000))}}) for i in range(3)])
except RegistryError as e:
    print("ERROR", e)
"""


def test_full_disk_is_an_error_not_a_crash(tmp_path):
    root = Path(__file__).resolve().parents[1]
    with tmpfs(tmp_path / "small") as mnt:
        reg = Registry(mnt / "reg")
        reg.put("keep", {}, {"a": np.arange(10)})
        fill(mnt)
        before = registry_state(mnt / "reg")
        script = tmp_path / "put.py"
        script.write_text(PUT_ON_FULL_DISK.format(root=str(root)))
        p = subprocess.run([sys.executable, str(script), str(mnt / "reg")], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, (p.returncode, p.stderr[-2000:])  # -11 was h5py's close segfaulting
        assert "ERROR cannot write 3 entries" in p.stdout and "no space left on device" in p.stdout, p.stdout
        assert registry_state(mnt / "reg") == before and reg.leftovers() == []
        # a fresh registry on the full disk: refused with the cause, nothing half-created is used
        with pytest.raises(RegistryError, match="no space left on device"):
            Registry(mnt / "fresh").put("x", {}, {"a": np.random.default_rng(1).integers(0, 2**40, (400, 1000))})


def test_every_write_errno_is_one_error_and_nothing_committed(tmp_path, monkeypatch):
    """ENOSPC, EDQUOT, EROFS, EACCES from the operating system while an entry is written."""
    reg = Registry(tmp_path / "reg")
    reg.put("keep", {}, {"a": np.arange(10)})
    before = registry_state(reg.root)
    real_write = os.write
    for code, text in [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
                       (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")]:
        def failing(fd, data, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "write", failing)
        with pytest.raises(RegistryError, match=f"cannot write entry 'new' in .*: {text}; nothing was stored"):
            reg.put("new", {}, {"a": np.arange(5000)})
        monkeypatch.setattr(os, "write", real_write)
        assert registry_state(reg.root) == before and reg.leftovers() == []


WRITE_ERRNOS = [(errno.ENOSPC, "no space left on device"), (errno.EDQUOT, "disk quota exceeded"),
                (errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")]


@pytest.mark.parametrize("code,text", WRITE_ERRNOS)
def test_mask_index_and_export_writes_on_every_errno(tmp_path, monkeypatch, code, text):
    """The other write paths under the same four errnos: a mask (one error, nothing stored, no
    temp left), the nearest index (the query still answers, exactly; no temp left), an export
    (one OutputError, neither file of the pair nor a temp file left)."""
    from vdnacli.errors import OutputError
    from vdnacli.interop import export_upstream
    from vdnacli.masks import Mask

    def failing(*a, **k):
        raise OSError(code, os.strerror(code))

    cat = Catalog(tmp_path / "reg")
    for i in range(3):
        cat.put(f"d{i}", synthetic(60 + i, kinds=("hist",)))
    before = registry_state(cat.root)
    layers = dict(cat.get("d0").layers)
    mask = Mask("focus", cat.get("d0").meta["extractor"], None, layers, {l: np.ones(n) for l, n in layers.items()})
    with monkeypatch.context() as m:
        m.setattr(os, "write", failing)
        with pytest.raises(RegistryError, match=f"cannot write entry 'm' in .*: {text}; nothing was stored"):
            cat.put_mask("m", mask)
    assert cat.masks.names() == [] and cat.masks.leftovers() == []

    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing)  # publishing the first index segment
        got, _ = Catalog(tmp_path / "reg").nearest("d0", top=2)
    assert registry_state(cat.root) == before and cat.registry.leftovers() == []
    assert got == Catalog(tmp_path / "reg").nearest("d0", top=2)[0]  # as answered with its index written

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", failing)
        with pytest.raises(OutputError, match=f"cannot export to .*d0.json and d0.npz: {text}; nothing was written"):
            export_upstream(cat.get("d0"), out / "d0")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("code,text", WRITE_ERRNOS)
def test_hf_cache_write_errors_are_one_line(tmp_path, code, text):
    """The HF cache's write path under the four errnos (ENOSPC and EROFS also happen for real in
    test_cli_writers_on_a_full_disk and test_export_and_pull_into_a_full_or_read_only_folder)."""
    from vdnacli.hub.cache import HubContext
    from vdnacli.hub.errors import HubError, hub_errors

    ctx = HubContext("https://hub.invalid", tmp_path / "hf", False)
    with pytest.raises(HubError, match=f"cannot write to the Hugging Face cache .*: {text}; free space there"):
        with hub_errors(ctx, "me/x", "dataset", None):
            raise OSError(code, os.strerror(code))


def upstream_pair(tmp_path: Path, seed: int, stem: str = "up") -> Path:
    from vdnacli.interop import export_upstream

    export_upstream(big_dna(seed), tmp_path / "pairs" / stem)
    return tmp_path / "pairs" / stem


def test_cli_writers_on_a_full_disk(tmp_path, vdna, hub):
    """import, merge, mask create and pull: one error line each, registry unchanged, no temp left."""
    published(hub, tmp_path, {"big": big_dna(7)}, repo="me/big")
    pair = upstream_pair(tmp_path, 8)
    with tmpfs(tmp_path / "small", size="8m") as mnt:
        reg = mnt / "reg"
        cat = Catalog(reg)
        cat.put("a", synthetic(9, kinds=("hist",)))
        cat.put("b", synthetic(10, kinds=("hist",)))
        fill(mnt, leave=4 << 10)
        before = registry_state(reg)
        env = {"VDNA_REGISTRY": str(reg), "HF_HOME": str(tmp_path / "hf")}
        for args in (["import", pair, "--name", "imp"], ["merge", "ab", "a", "b"],
                     ["mask", "create", "m", "--with", "a", "--without", "b", "--top", "2000"]):
            r = vdna(*args, env=env)
            assert "no space left on device" in one_line_error(r), args
            assert registry_state(reg) == before, args
        r = vdna("pull", "me/big", env={**env, "HF_HUB_OFFLINE": "0"})
        assert "no space left on device" in one_line_error(r)
        # the HF cache on the full disk too
        r = vdna("pull", "me/big", env={**env, "HF_HUB_OFFLINE": "0", "HF_HOME": str(mnt / "hf")})
        assert "no space left on device" in one_line_error(r)
        assert registry_state(reg) == before and Registry(reg).leftovers() == []


@pytest.mark.slow
def test_cli_add_on_a_full_disk(tmp_path, vdna, sample_dirs):
    with tmpfs(tmp_path / "small") as mnt:
        reg = mnt / "reg"
        Registry(reg).put("keep", {}, {"a": np.arange(3)})
        fill(mnt, leave=16 << 10)
        before = registry_state(reg)
        r = vdna("add", "faces", sample_dirs["faces-a"], "--limit", "8", env={"VDNA_REGISTRY": str(reg)})
        assert "no space left on device" in one_line_error(r)
        assert registry_state(reg) == before


def test_cli_nearest_on_a_full_disk(tmp_path, vdna):
    with tmpfs(tmp_path / "small") as mnt:
        reg = mnt / "reg"
        cat = Catalog(reg)
        for i in range(3):
            cat.put(f"d{i}", synthetic(20 + i, kinds=("hist",)))
        fill(mnt, leave=4 << 10)
        r = vdna("nearest", "d0", "--json", env={"VDNA_REGISTRY": str(reg)})
        assert r.code == 0, r.stderr


# -- row 5: a read-only registry answers every read ------------------------------------------------------
def test_read_only_registry_opens_without_writing(tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.put("a", {"x": 1}, {"a": np.arange(3)})
    for d in ("tmp", "locks"):
        shutil.rmtree(tmp_path / "reg" / d)  # copied without its working folders
    (tmp_path / "reg" / ".lock").unlink()
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "reg").rglob("*"))
    with read_only(tmp_path / "reg"):
        r = Registry(tmp_path / "reg", create=False)
        assert r.names() == ["a"] and r.meta("a") == {"x": 1} and r.verify("a") == []
        assert Catalog(tmp_path / "reg").masks.names() == []
        assert r.repair() == [] and r.leftovers() == []  # nothing to repair: nothing written
        with pytest.raises(RegistryError, match="read-only file system"):
            r.put("b", {}, {"a": np.arange(3)})
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "reg").rglob("*")) == before


def test_read_only_registry_answers_read_commands(tmp_path, vdna, registry_dir):
    cat = Catalog(registry_dir)
    for i, n in enumerate(["a", "b", "c"]):
        cat.put(n, synthetic(30 + i, kinds=("hist", "gauss")))
    out = tmp_path / "exported"
    out.mkdir()
    with read_only(registry_dir):
        for args in (["list", "--json"], ["show", "a", "--json"], ["compare", "a", "b", "--json"],
                     ["matrix", "a", "b", "c", "--json"], ["verify", "--json"], ["mask", "list", "--json"],
                     ["export", "a", out / "a"]):
            r = vdna(*args)
            assert r.code == 0, (args, r.stderr)
        r = vdna("import", upstream_pair(tmp_path, 11), "--name", "new")
        assert "read-only file system" in one_line_error(r)
    assert (out / "a.json").is_file()


def test_read_only_registry_answers_nearest(vdna, registry_dir):
    cat = Catalog(registry_dir)
    for i in range(3):
        cat.put(f"d{i}", synthetic(40 + i, kinds=("hist",)))
    with read_only(registry_dir):
        r = vdna("nearest", "d0", "--json")
        assert r.code == 0, r.stderr


def test_export_and_pull_into_a_full_or_read_only_folder(tmp_path, vdna, registry_dir, hub):
    """An export to a full disk or a read-only folder, a pull whose HF cache is read-only: one
    error line, nothing half-written left there, the registry unchanged."""
    published(hub, tmp_path, {"big": big_dna(12)}, repo="me/ro")
    cat = Catalog(registry_dir)
    cat.put("a", big_dna(13))
    before = registry_state(registry_dir)
    with tmpfs(tmp_path / "small", size="1m") as mnt:
        r = vdna("export", "a", mnt / "a")
        assert "no space left on device; nothing was written" in one_line_error(r)
        assert list(mnt.iterdir()) == []
    ro = tmp_path / "ro"
    (ro / "hf").mkdir(parents=True)
    with read_only(ro):
        r = vdna("export", "a", ro / "a")
        assert "read-only file system" in one_line_error(r)
        r = vdna("pull", "me/ro", env={"HF_HOME": str(ro / "hf"), "HF_HUB_OFFLINE": "0"})
        assert "read-only file system" in one_line_error(r)
    assert sorted(p.name for p in ro.rglob("*")) == ["hf"]
    assert registry_state(registry_dir) == before


# -- row 9: export names taken literally, never overwritten, never written through a planted link --------
def test_export_stems_are_literal_and_never_overwritten(tmp_path, vdna, registry_dir):
    Catalog(registry_dir).put("a", synthetic(70, kinds=("hist",)))
    out = tmp_path / "out"
    out.mkdir()
    for stem in ("run.v1", "run.v2"):
        r = vdna("export", "a", out / stem)
        assert r.code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["run.v1.json", "run.v1.npz", "run.v2.json", "run.v2.npz"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = vdna("export", "a", out / "run.v1")
    assert "run.v1" in one_line_error(r) and "exists; pass --force to overwrite it" in one_line_error(r)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (out / "p.json").symlink_to(victim)  # a link planted where the export will write
    assert "exists; pass --force" in one_line_error(vdna("export", "a", out / "p"))
    r = vdna("export", "a", out / "p", "--force")
    assert r.code == 0, r.stderr
    assert victim.read_text() == "keep" and not (out / "p.json").is_symlink()
    assert json.loads((out / "p.json").read_text())["type"] == "histogram"


def test_export_temp_files_are_unpredictable_and_exclusive(tmp_path, monkeypatch):
    """A link planted at the temp name the export would draw first is neither followed nor removed."""
    from vdnacli.interop import export_upstream

    draws = iter([b"\0" * 4, b"\0" * 4, b"\1" * 4, b"\2" * 4, b"\3" * 4])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    planted = out / f".x.npz.{os.getpid()}.00000000.part"
    planted.symlink_to(victim)
    export_upstream(synthetic(71, kinds=("hist",)), out / "x")
    assert victim.read_text() == "keep" and planted.is_symlink()
    assert sorted(p.name for p in out.iterdir()) == sorted([planted.name, "x.json", "x.npz"])


# -- row 11: malformed upstream pairs: one error line, odd layer names refused ----------------------------
def test_malformed_import_pairs_are_one_error_line(tmp_path, vdna, registry_dir):
    import zipfile

    from test_interop import upstream_arrays, upstream_meta, write_pair
    from vdnacli.interop import export_upstream, import_upstream

    no_npy = tmp_path / "no-npy.npz"
    with zipfile.ZipFile(no_npy, "w") as z:
        z.writestr("block1", b"\x93NUMPY")
    cases = {
        "member-without-npy": write_pair(tmp_path / "p1", upstream_meta(), raw_npz=no_npy.read_bytes()),
        "non-numeric-bins": write_pair(tmp_path / "p2", upstream_meta(distribution={"hist_nb_bins": "many"}),
                                       upstream_arrays()),
        "nested-json": write_pair(tmp_path / "p3", "[" * 100_000 + "]" * 100_000, upstream_arrays()),
        "traversing-layer": write_pair(tmp_path / "p4", upstream_meta(neurons_list={"../../x": 5, "block2": 3}),
                                       {"../../x": np.ones((5, 4), np.int32), "block2": np.ones((3, 4), np.int32)}),
    }
    for name, stem in cases.items():
        with pytest.raises(FormatError):
            import_upstream(stem)
        r = vdna("import", stem, "--name", "x")
        assert "internal error" not in one_line_error(r, 5), name
    assert not registry_dir.exists() or Catalog(registry_dir).names() == []
    dna = synthetic(72, kinds=("hist",))
    dna.hist = {"../../x" if l == next(iter(dna.hist)) else l: h for l, h in dna.hist.items()}
    dna.meta["layers"] = [["../../x" if i == 0 else l, n] for i, (l, n) in enumerate(dna.meta["layers"])]
    with pytest.raises(FormatError, match="invalid layer name"):
        export_upstream(dna, tmp_path / "out" / "y")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# -- rows 6 and 8: sane numbers, and verify always goes on -------------------------------------------------
def test_absurd_numbers_are_refused_at_every_boundary(tmp_path, hub, vdna, registry_dir):
    cases = hostile_files.cases()
    cat = Catalog(registry_dir)
    cat.put("good", synthetic(50, kinds=("hist",)))
    for case in ("num-images-10e400", "uint64-counts-above-int64"):
        cases[case][1](cat.registry.entries_dir / f"{case}.h5", case)
    # verify: each broken entry reported, every other entry still checked, never an OverflowError
    rep = verify_catalog(cat)
    assert rep.entries == 3 and sorted(rep.damaged) == ["num-images-10e400", "uint64-counts-above-int64"]
    assert "2^53" in rep.damaged["num-images-10e400"][0]
    assert "int64 max" in rep.damaged["uint64-counts-above-int64"][0]
    r = vdna("verify", "--json")
    assert r.code == 1 and sorted(r.json()["damaged"]) == ["num-images-10e400", "uint64-counts-above-int64"]
    # reads refuse them the same way everywhere (compare and nearest cannot disagree)
    with pytest.raises(FormatError):
        cat.get("uint64-counts-above-int64")
    with pytest.raises(FormatError):
        cat.get("num-images-10e400")
    # merge, put, pull: refused
    r = vdna("merge", "m", "good", "num-images-10e400")
    one_line_error(r, 5)
    d = synthetic(51, kinds=("hist",))
    d.meta["num_images"] = 10**400
    with pytest.raises(FormatError, match="2\\^53"):
        cat.put("x", d)
    d = synthetic(52, kinds=("hist",))
    d.meta["bins"] = 100_001
    with pytest.raises(FormatError, match="bins"):
        cat.put("x", d)
    hub.add_repo("evil/numbers", {f"dnas/{c}.h5": (cat.registry.entries_dir / f"{c}.h5").read_bytes()
                                  for c in ("num-images-10e400", "uint64-counts-above-int64")})
    for c in ("num-images-10e400", "uint64-counts-above-int64"):
        with pytest.raises(FormatError):
            H.pull(Catalog(tmp_path / "reg2"), "evil/numbers", path=f"dnas/{c}.h5")


def test_import_refuses_absurd_image_counts(tmp_path, vdna, registry_dir):
    pair = upstream_pair(tmp_path, 53)
    meta = json.loads(pair.with_suffix(".json").read_text())
    meta["num_images"] = 10**400
    pair.with_suffix(".json").write_text(json.dumps(meta))
    r = vdna("import", pair, "--name", "huge")
    one_line_error(r, 5)
    assert not (registry_dir / "entries" / "huge.h5").exists()


# -- row 10: no credentials or tokens in what is recorded or printed ------------------------------------------
def test_credentials_in_the_endpoint_are_never_recorded_or_printed(hub, tmp_path, vdna, registry_dir, monkeypatch):
    published(hub, tmp_path, {"a": synthetic(60, kinds=("hist",))})
    secret_url = hub.url.replace("http://", "http://alice:s3cr3t-pw@")
    monkeypatch.setenv("HF_ENDPOINT", secret_url)
    cat = Catalog(tmp_path / "reg")
    rep = H.pull(cat, "me/dnas")
    assert cat.get("a").meta["origin"]["endpoint"] == hub.url
    assert "s3cr3t" not in json.dumps(rep.as_dict()) and "s3cr3t" not in json.dumps(cat.get("a").meta)
    token = "hf_" + "Zq9" * 10
    env = {"HF_ENDPOINT": secret_url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": token}
    for args in (["pull", "me/dnas"], ["pull", "me/missing"], ["-v", "pull", "me/missing"], ["show", "a", "--json"],
                 ["push", "a", "me/other"], ["-v", "push", "a", "me/other"]):
        r = vdna(*args, env=env)
        both = r.stdout + r.stderr
        assert "s3cr3t" not in both and token not in both, (args, both[-500:])
    with socket_closed_port() as dead:
        r = vdna("-v", "pull", "me/never", env={**env, "HF_ENDPOINT": dead.replace("http://", "http://bob:pw0rd@")})
        assert r.code != 0 and "pw0rd" not in r.stdout + r.stderr


@contextlib.contextmanager
def socket_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


# -- row 13: no silent registry ---------------------------------------------------------------------------------
def test_read_commands_refuse_a_missing_registry(tmp_path, vdna, registry_dir):
    typo = tmp_path / "registyr"
    for args in (["list"], ["show", "a"], ["compare", "a", "b"], ["nearest", "a"], ["matrix", "a", "b"],
                 ["verify"], ["export", "a", tmp_path / "x"], ["mask", "list"], ["merge", "c", "a", "b"],
                 ["remove", "a"]):
        r = vdna(*args, "--registry", typo)
        assert f"no registry at {typo}" in one_line_error(r, 3), args  # not found
        assert not typo.exists(), args
    r = vdna("import", upstream_pair(tmp_path, 70), "--registry", typo)  # a write creates it
    assert r.code == 0 and typo.is_dir(), r.stderr


def test_a_registry_chosen_by_vdna_yaml_is_named(tmp_path, vdna):
    elsewhere = tmp_path / "elsewhere"
    Catalog(elsewhere).put("a", synthetic(71, kinds=("hist",)))
    (tmp_path / "vdna.yaml").write_text(f"registry: {elsewhere}\n")
    r = vdna("list", "--json", env={"VDNA_REGISTRY": ""})
    assert r.code == 0 and [e["name"] for e in r.json()] == ["a"]
    assert r.stderr.count(f"using registry {elsewhere} from ./vdna.yaml") == 1, r.stderr
    r = vdna("list", "--json")  # VDNA_REGISTRY wins: nothing to say
    assert "using registry" not in r.stderr


def test_default_registry_is_platformdirs_and_an_earlier_one_keeps_working(tmp_path, monkeypatch):
    import platformdirs

    from vdnacli.config import default_registry_path

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if sys.platform.startswith("linux"):
        assert default_registry_path() == tmp_path / "data" / "vdna" / "registry"
    # where platformdirs points elsewhere (macOS, Windows), a registry at the old place is still used
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "new"))
    assert default_registry_path() == tmp_path / "new" / "registry"
    old = tmp_path / "data" / "vdna" / "registry"
    Registry(old).put("a", {}, {"a": np.arange(2)})
    assert default_registry_path() == old
    Registry(tmp_path / "new" / "registry").put("b", {}, {"a": np.arange(2)})
    assert default_registry_path() == tmp_path / "new" / "registry"
