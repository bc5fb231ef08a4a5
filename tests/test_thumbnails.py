"""Thumbnails kept with each DNA: chosen by content hash, stored in the entry, kept through
--append and merge, private on push (tests/test_hub_thumbnails.py), shown by `show --sheet`."""
from __future__ import annotations

import hashlib
import io
import random

import h5py
import numpy as np
import pytest
from PIL import Image

from registry import CorruptEntryError
from vdnacli import thumbnails as T
from vdnacli.catalog import Catalog
from vdnacli.dna import DNA, merge, new_meta
from vdnacli.errors import FormatError
from vdnacli.integrity import check_entry
from vdnacli.sources import list_images


def _hashes(refs) -> np.ndarray:
    """The DNA's image_hashes for these refs, as the pipeline records them."""
    hs = [hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs]
    return np.unique(np.frombuffer(b"".join(hs), dtype=np.uint8).reshape(-1, 16), axis=0)


def _smallest(refs, n) -> list[bytes]:
    return sorted({hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs})[:n]


def _dna(hashes, thumbs=None, extractor="synthetic") -> DNA:
    meta = new_meta(extractor=extractor, weights_sha256="w", ranges_sha256="r", layers={"l": 3}, bins=8,
                    preprocessing={}, kinds=["hist"])
    meta["num_images"] = len(hashes)
    h = np.zeros((3, 8), dtype=np.int64)
    h[:, 2] = len(hashes)
    return DNA(meta=meta, hist={"l": h}, image_hashes=hashes, thumbnails=thumbs)


def test_collect_takes_the_smallest_content_hashes_whatever_the_order(sample_dirs):
    refs = list_images(sample_dirs["photos-a"])
    hashes = _hashes(refs)
    t = T.collect(refs, hashes, 6)
    assert [bytes(h) for h in t.hashes] == _smallest(refs, 6)
    shuffled = refs[:]
    random.Random(3).shuffle(shuffled)
    again = T.collect(shuffled, hashes, 6)
    assert again.images == t.images  # same images, same bytes: reproducible
    for b in t.images:
        img = Image.open(io.BytesIO(b))
        assert img.format in ("WEBP", "JPEG") and img.size == (T.SIZE, T.SIZE)
    assert 500 < t.nbytes < 6 * 8000  # a few KB each
    # only counted images are candidates: a --limit subset picks among its own images
    counted = _hashes(refs[:10])
    sub = T.collect(refs, counted, 4)
    assert [bytes(h) for h in sub.hashes] == _smallest(refs[:10], 4)
    assert T.collect(refs, hashes, 0) is None
    # digests the pipeline already has (one per ref) spare the second read: same choice
    known = [hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs]
    assert T.collect(refs, hashes, 6, digests=known).images == t.images


def test_an_image_that_changed_since_it_was_counted_gives_its_place_to_the_next(sample_dirs, tmp_path):
    import shutil

    src = tmp_path / "imgs"
    shutil.copytree(sample_dirs["faces-a"], src)
    refs = list_images(src)
    hashes = _hashes(refs)
    counted = _smallest(refs, 4)
    victim = next(r for r in refs if hashlib.sha256(r.read_bytes()).digest()[:16] == counted[0])
    open(victim.path, "ab").write(b"changed")
    t = T.collect(refs, hashes, 3)
    assert [bytes(h) for h in t.hashes] == counted[1:]


def test_union_rechooses_exactly_from_the_parts_thumbnails(sample_dirs):
    """The N smallest of a union lie among each part's N smallest: merging the parts'
    thumbnails gives what collecting over the union gives, bit for bit."""
    a, b = list_images(sample_dirs["digits-a"]), list_images(sample_dirs["faces-a"])
    ha, hb = _hashes(a), _hashes(b)
    ta, tb = T.collect(a, ha, 5), T.collect(b, hb, 5)
    union = T.collect(a + b, _hashes(a + b), 5)
    merged = merge([_dna(ha, ta), _dna(hb, tb)])
    assert merged.thumbnails.images == union.images
    np.testing.assert_array_equal(merged.thumbnails.hashes, union.hashes)
    # a part that kept all of its images vouches for any count
    small = a[:3]
    ts = T.collect(small, _hashes(small), 5)
    assert len(ts) == 3
    m2 = merge([_dna(_hashes(small), ts), _dna(hb, tb)])
    assert m2.thumbnails.images == T.collect(small + b, _hashes(small + b), 5).images
    # a part that kept fewer than it has images caps the union at its count
    m3 = merge([_dna(ha, T.collect(a, ha, 2)), _dna(hb, tb)])
    assert len(m3.thumbnails) == 2
    assert m3.thumbnails.images == union.take(2).images
    # a part without thumbnails (added with --thumbnails 0, or imported): the union keeps none
    assert merge([_dna(ha, None), _dna(hb, tb)]).thumbnails is None


def test_stored_in_the_entry_checksummed_and_capped(sample_dirs, tmp_path):
    refs = list_images(sample_dirs["photos-a"])
    hashes = _hashes(refs)
    cat = Catalog(tmp_path / "reg")
    cat.put("with", _dna(hashes, T.collect(refs, hashes, 4)))
    cat.put("without", _dna(hashes))
    t = cat.thumbnails("with")
    assert len(t) == 4 and cat.get("with").thumbnails.images == t.images
    assert cat.thumbnails("without") is None and cat.get("without").thumbnails is None  # older entries: as before
    assert check_entry(cat.registry, "with") == []
    other = list_images(sample_dirs["faces-a"])[:2]
    cat.put("foreign", _dna(hashes, T.collect(other, _hashes(other), 2)))  # thumbnails of images it never counted
    assert check_entry(cat.registry, "foreign") == ["a thumbnail shows an image the DNA did not count"]
    # the checksums cover the thumbnails: one flipped byte is found by verify
    path = cat.registry.entries_dir / "with.h5"
    with h5py.File(path, "r+") as f:
        data = f["thumbnails/data"][()]
        data[10] ^= 0xFF
        f["thumbnails/data"][...] = data
    assert any("checksum mismatch in 'thumbnails/data'" in p for p in check_entry(cat.registry, "with"))


def test_hostile_thumbnails_are_refused(sample_dirs, tmp_path):
    refs = list_images(sample_dirs["digits-a"])[:4]
    t = T.collect(refs, _hashes(refs), 4)
    arrays = t.to_arrays()
    assert T.Thumbnails.from_arrays(arrays).images == t.images
    bad_offsets = dict(arrays, **{"thumbnails/offsets": arrays["thumbnails/offsets"] + 5})
    bad_magic = dict(arrays, **{"thumbnails/data": np.zeros_like(arrays["thumbnails/data"])})
    unsorted = dict(arrays, **{"thumbnails/hashes": arrays["thumbnails/hashes"][::-1].copy()})
    partial = {k: v for k, v in arrays.items() if k != "thumbnails/data"}
    for arr, why in ((bad_offsets, "offsets"), (bad_magic, "not a WebP"), (unsorted, "sorted"),
                     (partial, "incomplete")):
        with pytest.raises(FormatError, match=why):
            T.Thumbnails.from_arrays(arr)
    # a declared size beyond the group's cap is refused before anything is read
    path = tmp_path / "big.h5"
    cat = Catalog(tmp_path / "reg")
    cat.put("e", _dna(_hashes(refs), t))
    path = cat.registry.entries_dir / "e.h5"
    with h5py.File(path, "r+") as f:
        del f["thumbnails/data"]
        f.create_dataset("thumbnails/data", shape=(64 << 20,), dtype=np.uint8, chunks=(1 << 20,))  # 64 MiB, sparse
    with pytest.raises(CorruptEntryError, match="implausible shape"):
        cat.thumbnails("e")


def test_contact_sheet(sample_dirs, tmp_path):
    refs = list_images(sample_dirs["faces-a"])
    t = T.collect(refs, _hashes(refs), 9)
    out = T.write_sheet(t, tmp_path / "s.png", title="faces")
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] >= 3 * T.SIZE and img.size[1] >= 3 * T.SIZE
    assert len(np.unique(np.asarray(img.convert("L")))) > 50  # real pictures, not a blank canvas


def test_add_append_merge_keep_them_by_the_same_rule(sample_dirs, tmp_path):
    """Real extractor, real images: `add` keeps N thumbnails, `--append` and `merge` re-choose
    by the same rule, `--thumbnails 0` keeps none."""
    from vdnacli.build import AddRequest, add, merge_entries

    a, b = sample_dirs["digits-a"], sample_dirs["faces-a"]
    cat = Catalog(tmp_path / "registry")

    def req(name, src, **kw):
        return AddRequest(name=name, source=src, limit=5, device="cpu", workers=0, offline=True, **kw)

    add(cat, req("mix", a, thumbnails=3))
    add(cat, req("faces", b, thumbnails=3))
    add(cat, req("mix", b, append=True))
    mix = cat.get("mix")
    counted = sorted(bytes(h) for h in mix.image_hashes)
    assert len(counted) == 10
    assert [bytes(h) for h in mix.thumbnails.hashes] == counted[:3]
    assert [bytes(h) for h in cat.thumbnails("faces").hashes] == _smallest(list_images(b, 5), 3)
    merge_entries(cat, "both", ["mix", "faces"])
    assert [bytes(h) for h in cat.thumbnails("both").hashes] == counted[:3]  # faces ⊂ mix: the same images
    add(cat, req("none", a, thumbnails=0))
    assert cat.thumbnails("none") is None
    add(cat, req("none", b, append=True))  # appending to an entry without thumbnails keeps none
    assert cat.thumbnails("none") is None


def test_show_sheet_and_open_through_the_cli(vdna, sample_dirs, tmp_path):
    assert vdna("add", "mix", sample_dirs["photos-a"], "--limit", "6", "--thumbnails", "4").code == 0
    r = vdna("show", "mix", "--sheet", tmp_path / "sheet.png")
    assert r.code == 0 and "wrote" in r.stderr and Image.open(tmp_path / "sheet.png").format == "PNG"
    # --open: $BROWSER is honoured; with no display and no $BROWSER nothing is tried, and that is no error
    r = vdna("show", "mix", "--open", env={"BROWSER": "true", "DISPLAY": ""})
    assert r.code == 0 and "opened" in r.stderr, r.stderr
    r = vdna("show", "mix", "--open", env={"DISPLAY": "", "WAYLAND_DISPLAY": "", "BROWSER": ""})
    assert r.code == 0 and "nothing here can open it" in r.stderr and ".png" in r.stderr
    assert vdna("add", "none", sample_dirs["photos-a"], "--limit", "2", "--thumbnails", "0").code == 0
    r = vdna("show", "none", "--sheet", tmp_path / "n.png")
    assert r.code == 1 and r.stderr.startswith("error: 'none' keeps no thumbnails") and "Traceback" not in r.stderr
    r = vdna("add", "x", sample_dirs["photos-a"], "--thumbnails", "999")
    assert r.code == 1 and "--thumbnails must be between 0" in r.stderr
