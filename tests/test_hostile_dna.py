"""Hostile DNA files: forged HDF5 entries placed in the registry (or read as pulled entry
files) and hostile upstream pairs given to `vdna import`. Each gives a clear error or a
verify report, never a traceback; nothing is executed; other entries stay bit-identical.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from numpy.lib import format as npy

from registry import CorruptEntryError, RegistryError
from registry.layout import array_sha256, read_entry
from vdnacli.catalog import Catalog
from vdnacli.dna import DNA, Gaussian, new_meta
from vdnacli.errors import VdnaError
from vdnacli.integrity import check_entry

LAYERS = {"block1": 6, "block2": 4}
BINS = 32


def real_like_dna(seed: int, images: int = 12, positions: int = 49) -> DNA:
    """Histograms as a real extractor makes them: every neuron counts images x positions values."""
    rng = np.random.default_rng(seed)
    meta = new_meta(extractor="synthetic", weights_sha256="w" * 64, ranges_sha256="r" * 64, layers=LAYERS, bins=BINS,
                    preprocessing={"crop": "center"}, kinds=("hist", "gauss"))
    meta["num_images"] = images
    hist, gauss = {}, {}
    for layer, n in LAYERS.items():
        centre = rng.uniform(4, BINS - 4)
        p = np.exp(-0.5 * ((np.arange(BINS) - centre) / 3.0) ** 2)
        hist[layer] = np.stack([rng.multinomial(images * positions, p / p.sum()) for _ in range(n)]).astype(np.int64)
        x = rng.normal(size=(images, n))
        gauss[layer] = Gaussian(images, x.sum(0), (x * x).sum(0))
    hashes = np.unique(rng.integers(0, 256, (images, 16), dtype=np.uint8), axis=0)
    from vdnacli.dna import images_digest

    meta["images_sha256"] = images_digest(hashes)
    return DNA(meta=meta, hist=hist, gauss=gauss, image_hashes=hashes)


def rewrite_checksums(f: h5py.File) -> None:
    """What a careful forger does: make every stored checksum match the forged values."""
    sums = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf" and obj.size < 10**6 and not obj.external:
            try:
                sums[name] = array_sha256(obj[()])
            except OSError:
                pass

    f.visititems(visit)
    f.attrs["checksums"] = json.dumps(sums, sort_keys=True)


def _set_meta(f, **changes):
    meta = json.loads(f.attrs["meta"])
    meta.update(changes)
    f.attrs["meta"] = json.dumps(meta)


def _replace(f, key, data=None, **kw):
    del f[key]
    if data is None:
        f.create_dataset(key, **kw)
    else:
        f[key] = data


def _negated(counts: np.ndarray) -> np.ndarray:
    """The stored counts as a signed array with one negative count (small counts are stored unsigned)."""
    out = counts.astype(np.int32)
    out[0, 0] = -5
    return out


def _external_storage(f, tmp: Path):
    raw = tmp / "outside.bin"
    raw.write_bytes(b"\x01" * 8 * LAYERS["block1"] * BINS)
    del f["hist/block1"]
    f.create_dataset("hist/block1", shape=(LAYERS["block1"], BINS), dtype="<i8", external=[(str(raw), 0, h5py.h5f.UNLIMITED)])


FORGERIES = {  # name -> (how the entry file is forged, whether checksums are rewritten to match)
    "negative-counts": (lambda f, t: _replace(f, "hist/block1", _negated(f["hist/block1"][()])), True),
    "nan-gauss": (lambda f, t: f["gauss/block2/sum"].__setitem__(1, np.nan), True),
    "inf-gauss": (lambda f, t: f["gauss/block2/sumsq"].__setitem__(0, np.inf), True),
    "wrong-shape": (lambda f, t: _replace(f, "hist/block2", np.zeros((4, BINS + 1), np.int64)), True),
    "float-counts": (lambda f, t: _replace(f, "hist/block2", np.ones((4, BINS), np.float64)), True),
    "missing-dataset": (lambda f, t: f.__delitem__("hist/block1"), True),
    "missing-dataset-old-checksums": (lambda f, t: f.__delitem__("hist/block2"), False),
    "string-dataset": (lambda f, t: _replace(f, "hist/block1", np.array([b"abc"] * 6)), True),
    "vlen-dataset": (lambda f, t: _replace(f, "hist/block1", shape=(6,), dtype=h5py.vlen_dtype(np.int64)), True),
    "compound-dataset": (lambda f, t: _replace(f, "hist/block1", np.zeros(6, dtype=[("a", "<i8"), ("b", "<f8")])), True),
    "group-not-dataset": (lambda f, t: (f.__delitem__("hist/block1"), f.create_group("hist/block1")), True),
    "soft-link": (lambda f, t: (f.__delitem__("hist/block1"), f.__setitem__("hist/block1", h5py.SoftLink("/hist/block2"))), True),
    "external-link": (lambda f, t: (f.__delitem__("hist"), f.__setitem__("hist", h5py.ExternalLink(str(t / "victim.h5"), "/hist"))), True),
    "external-storage": (lambda f, t: _external_storage(f, t), True),
    "huge-declared-shape": (lambda f, t: _replace(f, "hist/block1", shape=(10**7, 10**7), dtype="<i8", chunks=(1, 1024)), True),
    "unknown-filter": (lambda f, t: _replace(f, "hist/block1", shape=(6, BINS), dtype="<i8", chunks=(6, BINS),
                                             compression=32001, allow_unknown_filter=True), True),
    "meta-not-json": (lambda f, t: f.attrs.__setitem__("meta", "{not json"), True),
    "meta-layers-int": (lambda f, t: _set_meta(f, layers=5), True),
    "meta-layers-nested": (lambda f, t: _set_meta(f, layers=[[["x"], "y", 3]]), True),
    "meta-num-images-str": (lambda f, t: _set_meta(f, num_images="many"), True),
    "meta-negative-images": (lambda f, t: _set_meta(f, num_images=-3), True),
    "meta-huge-bins": (lambda f, t: _set_meta(f, bins=10**12), True),
    "meta-deep-json": (lambda f, t: f.attrs.__setitem__("meta", "[" * 100_000 + "]" * 100_000), True),
    "no-format-attr": (lambda f, t: f.attrs.__delitem__("format"), True),
    "future-version": (lambda f, t: f.attrs.__setitem__("format_version", 99), True),
    "uneven-neuron-totals": (lambda f, t: f["hist/block1"].__setitem__((2, 5), f["hist/block1"][2, 5] + 1), True),
    "gauss-count-mismatch": (lambda f, t: f["gauss/block1/count"].__setitem__(0, 999), True),
    "forged-sketch": (lambda f, t: f["sketch/mean"].__setitem__(slice(None), 0.0), True),
    "renamed-by-hand": (lambda f, t: f.attrs.__setitem__("name", "someone-else"), True),
    "hashes-vs-digest": (lambda f, t: f["images/hashes"].__setitem__((0, 0), 255 - f["images/hashes"][0, 0]), True),
    "flipped-value": (lambda f, t: f["gauss/block1/sum"].__setitem__(0, 42.0), False),
}
NOT_HDF5 = {"text-file": b"this is not an HDF5 file\n", "empty-file": b"",
            "truncated": None}  # truncated: the first half of a real entry


def file_sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A registry with two good entries and every forgery above."""
    root = tmp_path_factory.mktemp("hostile")
    cat = Catalog(root / "reg")
    cat.put("good-a", real_like_dna(1))
    cat.put("good-b", real_like_dna(2))
    cat.put("good-c", real_like_dna(3))
    template = cat.registry.entries_dir / "good-a.h5"
    (root / "victim.h5").write_bytes(template.read_bytes())
    for name, (forge, resum) in FORGERIES.items():
        path = cat.registry.entries_dir / f"{name}.h5"
        path.write_bytes(template.read_bytes())
        with h5py.File(path, "r+") as f:
            f.attrs["name"] = name
            forge(f, root)
            if resum and "checksums" in f.attrs and name != "missing-dataset-old-checksums":
                rewrite_checksums(f)
    for name, data in NOT_HDF5.items():
        raw = template.read_bytes()
        (cat.registry.entries_dir / f"{name}.h5").write_bytes(raw[: len(raw) // 2] if data is None else data)
    good = {n: file_sha(cat.registry.entries_dir / f"{n}.h5") for n in ("good-a", "good-b", "good-c")}
    return cat, good


BROKEN = [*FORGERIES, *NOT_HDF5]


@pytest.mark.parametrize("name", BROKEN)
def test_verify_reports_each_forgery(hostile, name):
    cat, _ = hostile
    problems = check_entry(cat.registry, name)
    assert problems, name
    assert all(isinstance(p, str) and p for p in problems)


@pytest.mark.parametrize("name", BROKEN)
def test_reading_a_forgery_is_a_typed_error_or_a_valid_dna(hostile, name):
    cat, good = hostile
    try:
        d = cat.get(name)
    except (VdnaError, RegistryError):
        pass
    else:  # readable: then it is structurally a DNA (its problem is a consistency one)
        assert set(d.hist) == set(LAYERS) and all(h.min() >= 0 for h in d.hist.values())
    try:
        cat.compare("good-a", name)
    except (VdnaError, RegistryError):
        pass
    for n, sha in good.items():
        assert file_sha(cat.registry.entries_dir / f"{n}.h5") == sha


@pytest.mark.parametrize("name", [n for n in BROKEN if n != "renamed-by-hand"])
def test_entry_file_from_elsewhere_is_refused(hostile, name):
    """An entry file that arrives from outside (a pull) is read with layout.read_entry(verify=True)
    and checked with integrity.dna_problems: every forgery fails one of the two."""
    from vdnacli.integrity import dna_problems

    cat, _ = hostile
    path = cat.registry.entries_dir / f"{name}.h5"
    try:
        meta, arrays = read_entry(path, verify=True)
    except CorruptEntryError:
        return
    assert dna_problems(meta, arrays)


def test_nothing_outside_the_entry_is_read(hostile, tmp_path):
    cat, _ = hostile
    for name in ("external-link", "external-storage", "soft-link"):
        with pytest.raises(CorruptEntryError, match="link|outside"):
            cat.registry.read(name, keys=["hist/block1"])
        try:  # reading everything never follows a link to another file or object
            _, arrays = cat.registry.read(name)
        except CorruptEntryError as e:
            assert "outside" in str(e)
        else:
            assert "hist/block1" not in arrays


def test_catalog_queries_survive_forgeries(hostile):
    cat, good = hostile
    rows = {r.name: r for r in cat.summaries()}
    assert set(rows) == {"good-a", "good-b", "good-c", *BROKEN}
    for n in NOT_HDF5:
        assert rows[n].problem
    everything = len(cat.names())
    fast, skipped = cat.nearest("good-b", top=everything)
    brute, brute_skipped = cat.nearest("good-b", top=everything, exact=True)
    assert fast == brute  # no forgery stops the search or changes a distance
    found = {n for n, _ in fast}
    assert found | set(skipped) == set(cat.names()) - {"good-b"}  # nothing silently dropped
    assert {"good-a", "good-c"} <= found and not found & set(NOT_HDF5)
    dist = dict(fast)
    for n in ("good-a", "good-c"):
        assert dist[n] == cat.compare("good-b", n).distance
    for n, sha in good.items():
        assert file_sha(cat.registry.entries_dir / f"{n}.h5") == sha
        assert check_entry(cat.registry, n) == []


def test_cli_on_a_registry_of_forgeries(hostile, vdna):
    cat, good = hostile
    env = {"VDNA_REGISTRY": str(cat.root)}
    r = vdna("list", "--json", env=env)
    assert r.code == 0 and "Traceback" not in r.stderr
    assert {e["name"] for e in r.json()} == {"good-a", "good-b", "good-c", *BROKEN}
    r = vdna("verify", "--json", env=env)
    assert r.code == 1 and "Traceback" not in r.stderr
    assert set(r.json()["damaged"]) == set(BROKEN)
    r = vdna("nearest", "good-a", "--json", env=env)
    assert r.code == 0, r.stderr
    for name in ("external-link", "huge-declared-shape", "meta-layers-int", "text-file", "unknown-filter"):
        r = vdna("compare", "good-a", name, env=env)
        assert r.code == 5 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "internal error" not in r.stderr
    for n, sha in good.items():
        assert file_sha(cat.registry.entries_dir / f"{n}.h5") == sha


# -- hostile upstream pairs given to `vdna import` -------------------------------------------
class _Trap:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _upstream_meta(**over):
    m = {"type": "histogram", "neurons_list": {"block1": 5, "block2": 3}, "num_images": 10,
         "distribution": {"hist_nb_bins": 4}, "feature_extractor_name": "mugs_vit_base"}
    m.update(over)
    return m


def _arrays(**over):
    rng = np.random.default_rng(0)
    a = {"block1": rng.integers(0, 50, (5, 4)).astype(np.int32), "block2": rng.integers(0, 50, (3, 4)).astype(np.int32)}
    a.update(over)
    return {k: v for k, v in a.items() if v is not None}


def _npz_declaring(shape, dtype="<i8") -> bytes:
    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    buf.write(b"\0" * 64)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("block1.npy", buf.getvalue())
        z.writestr("block2.npy", buf.getvalue())
    return out.getvalue()


def _oversized_npz() -> bytes:
    """An .npz whose directory says its members hold 3 GiB (a real one would take the test
    seconds to write): refused from the zip directory, before anything is decompressed."""
    raw = bytearray(_npz_declaring((3 << 27,)))
    at = 0
    while (at := raw.find(b"PK\x01\x02", at)) >= 0:  # central directory entries
        raw[at + 24: at + 28] = (3 << 30).to_bytes(4, "little")  # uncompressed size
        at += 4
    return bytes(raw)


IMPORTS = {  # name -> (json meta or raw text, arrays dict or raw npz bytes)
    "wrong-bins": (_upstream_meta(), _arrays(block1=np.zeros((5, 3), np.int32))),
    "wrong-neurons": (_upstream_meta(), _arrays(block2=np.zeros((2, 4), np.int32))),
    "negative-counts": (_upstream_meta(), _arrays(block1=-np.ones((5, 4), np.int32))),
    "nan-gaussian": (_upstream_meta(type="gaussian"),
                     {"mu-block1": np.full(5, np.nan, np.float32), "var-block1": np.ones(5, np.float32),
                      "mu-block2": np.zeros(3, np.float32), "var-block2": np.ones(3, np.float32)}),
    "negative-images": (_upstream_meta(num_images=-1), _arrays()),
    "missing-layer": (_upstream_meta(), _arrays(block2=None)),
    "missing-key": ({k: v for k, v in _upstream_meta().items() if k != "neurons_list"}, _arrays()),
    "not-json": ("{'type': histogram", _arrays()),
    "pickled-object": (_upstream_meta(), "TRAP"),
    "raw-pickle": (_upstream_meta(), "RAWPICKLE"),
    "huge-header": (_upstream_meta(), _npz_declaring((10**6, 10**6))),
    "oversized": (_upstream_meta(), "BOMB"),
}


def _write_pair(stem: Path, meta, arrays, marker: Path) -> None:
    stem.with_suffix(".json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    npz = stem.with_suffix(".npz")
    if arrays == "TRAP":
        np.savez(npz, block1=np.array([_Trap(marker)], dtype=object), block2=np.zeros((3, 4), np.int32))
    elif arrays == "RAWPICKLE":
        npz.write_bytes(pickle.dumps(_Trap(marker)))
    elif arrays == "BOMB":
        npz.write_bytes(_oversized_npz())
    elif isinstance(arrays, bytes):
        npz.write_bytes(arrays)
    else:
        np.savez(npz, **arrays)


@pytest.fixture
def seeded_registry(registry_dir):
    cat = Catalog(registry_dir)
    cat.put("keep", real_like_dna(7))
    return cat


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_sha(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_import_of_hostile_pairs_changes_nothing(vdna, seeded_registry, tmp_path):
    before = _snapshot(seeded_registry.root)
    marker = tmp_path / "executed"
    for name, (meta, arrays) in IMPORTS.items():
        _write_pair(tmp_path / name, meta, arrays, marker)
    # one CLI run per kind of damage that reaches a different check; the rest through the same library call
    for name in ("pickled-object", "huge-header", "oversized", "nan-gaussian", "missing-key"):
        r = vdna("import", tmp_path / name)
        assert r.code == 5, (name, r.stdout, r.stderr)  # integrity (docs/cli.md)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0], (name, lines)
    from vdnacli.interop import import_upstream

    for name in IMPORTS:
        with pytest.raises(VdnaError):
            import_upstream(tmp_path / name)
    assert not marker.exists()  # no pickle was ever executed
    assert _snapshot(seeded_registry.root) == before
    assert seeded_registry.names() == ["keep"]


def _npz_with(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _npy(shape, dtype="<i8", fill: bytes | None = None) -> bytes:
    """A .npy header declaring `shape`, followed by its zero bytes (so the header is consistent)."""
    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    buf.write(fill if fill is not None else bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize))
    return buf.getvalue()


def test_import_checks_each_member_against_its_json_before_reading(tmp_path, monkeypatch):
    """Issue 14: an .npz member whose header is consistent but far larger than the JSON's
    neurons x bins (805 MB of zeros deflated to 0.8 MB cost 829 MB before the refusal) is refused
    from its header; so is a pair whose shapes match its own JSON but whose values exceed 128 x
    the file (a compression bomb). No array is read in either case."""
    from numpy.lib import format as fmt

    from vdnacli.errors import FormatError
    from vdnacli.interop import import_upstream

    def no_read(*a, **k):
        raise AssertionError("an array was read before the refusal")

    good = {f"{l}.npy": _npy((n, 4), "<i4", np.ones((n, 4), np.int32).tobytes()) for l, n in (("block1", 5), ("block2", 3))}
    cases = {
        "wider-than-json": (_upstream_meta(), {**good, "block1.npy": _npy((5, 1 << 15))},
                            r"block1.npy declares \[5, 32768\] int64; the pair's JSON makes it \[5, 4\] of integers"),
        "floats-for-counts": (_upstream_meta(), {**good, "block1.npy": _npy((5, 4), "<f8")}, r"\[5, 4\] of integers"),
        "bomb-matching-json": (_upstream_meta(neurons_list={"block1": 4096, "block2": 3},
                                              distribution={"hist_nb_bins": 4200}),
                               {"block1.npy": _npy((4096, 4200), "|i1"), "block2.npy": _npy((3, 4200), "|i1")},
                               r"declare 17,215,800 values for a file of [0-9,]+ bytes \(a compression bomb\?\)"),
    }
    for name, (meta, members, message) in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(meta))
        (tmp_path / f"{name}.npz").write_bytes(_npz_with(members))
        with monkeypatch.context() as m:
            m.setattr(fmt, "read_array", no_read)
            with pytest.raises(FormatError, match=message):
                import_upstream(tmp_path / name)
    # a member the JSON does not name is never opened, whatever its header declares
    (tmp_path / "extra.json").write_text(json.dumps(_upstream_meta()))
    (tmp_path / "extra.npz").write_bytes(_npz_with({**good, "junk.npy": _npy((10**6, 10**6), fill=b"")}))
    dna = import_upstream(tmp_path / "extra")
    assert dna.hist["block1"].tolist() == [[1] * 4] * 5
