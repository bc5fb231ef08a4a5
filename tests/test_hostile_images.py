"""Hostile images: each case decodes correctly or is refused with a reason; inside a folder
bad files are skipped, counted and listed, `--strict` fails, and no valid image is an error.

Decoding is tested directly (vdnacli.preprocess.decode) and through the pipeline's real
per-image path (list_images -> _ImageDataset); two end-to-end `vdna add` runs check the
CLI's report, `--strict` and that the registry is left alone.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdnacli.errors import ImageDecodeError, SourceError
from vdnacli.pipeline import Run, _ImageDataset, compute_dna
from vdnacli.preprocess import MAX_PIXELS, ImageRecipe, decode, prepare
from vdnacli.sources import list_images

RNG = np.random.default_rng(1234)
PHOTO = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # an asymmetric RGB image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + _png_chunk(b"IEND", b""))


def tiff_bytes(a: np.ndarray, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, a, **kw)
    return buf.getvalue()


def with_orientation(a: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(a), fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


JPEG = encode(Image.fromarray(PHOTO), "JPEG", quality=90)
PNG = encode(Image.fromarray(PHOTO), "PNG")

REFUSED = {
    "zero-byte": (b"", "empty file"),
    "truncated-jpeg": (JPEG[: len(JPEG) // 2], "truncated"),
    "truncated-png": (PNG[: len(PNG) // 2], "truncated"),
    "text-as-image": (b"name,value\nnot,an image\n" * 20, "not an image"),
    "eps-as-jpeg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image"),
    "html-as-png": (b"<html><body>404 not found</body></html>", "not an image"),
    "bomb-10-gigapixel": (png_declaring(100_000, 100_000), "too large"),
    "bomb-100-megapixel": (png_declaring(10_000, 10_000), "too large"),
    "zero-width": (png_declaring(0, 10), ""),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_images_say_why(case):
    data, reason = REFUSED[case]
    with pytest.raises(ImageDecodeError) as e:
        decode(data)
    assert reason in str(e.value)
    assert "BytesIO" not in str(e.value)  # no object reprs in user-facing reasons


def test_bomb_limit_is_the_declared_size():
    assert 10_000 * 10_000 > MAX_PIXELS > 9_000 * 9_000
    with pytest.raises(ImageDecodeError) as e:  # under the limit: decoding starts (and finds no data)
        decode(png_declaring(9_000, 9_000))
    assert "too large" not in str(e.value) and "truncated" in str(e.value)


def test_16_bit_images_are_rescaled_not_clipped():
    a = RNG.integers(0, 65536, (30, 20), dtype=np.uint16)
    a[0, 0], a[0, 1] = 0, 65535
    want = (a / 65535.0 * 255 + 0.5).astype(np.uint8)
    for data in (encode(Image.fromarray(a), "TIFF"), encode(Image.fromarray(a), "PNG")):
        got = np.asarray(decode(data))
        assert got.shape == (30, 20, 3)
        np.testing.assert_array_equal(got[..., 0], want)
        np.testing.assert_array_equal(got[..., 1], want)
    # 48-bit RGB TIFF: Pillow keeps the high byte of each sample
    rgb16 = RNG.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    got = np.asarray(decode(tiff_bytes(rgb16, photometric="rgb")))
    np.testing.assert_array_equal(got, (rgb16 >> 8).astype(np.uint8))


def test_float_tiff_uses_its_finite_range():
    a = RNG.normal(size=(30, 20)).astype(np.float32)
    a[0, 0], a[1, 1], a[2, 2] = np.inf, np.nan, -np.inf
    got = np.asarray(decode(encode(Image.fromarray(a, "F"), "TIFF")))[..., 0]
    finite = np.isfinite(a)
    lo, hi = a[finite].min(), a[finite].max()
    want = np.where(finite, (np.clip((a.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255 + 0.5), 0).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert got[finite].min() == 0 and got[finite].max() == 255


def test_float_rgb_tiff_that_pillow_cannot_open():
    a = RNG.normal(size=(10, 12, 3)).astype(np.float32)
    with pytest.raises(Exception):
        Image.open(io.BytesIO(tiff_bytes(a, photometric="rgb")))  # Pillow alone refuses it
    got = np.asarray(decode(tiff_bytes(a, photometric="rgb")))
    want = ((a - a.min()) / (a.max() - a.min()) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    planar = np.asarray(decode(tiff_bytes(np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate")))
    np.testing.assert_array_equal(planar, want)


def test_cmyk_jpeg_decodes_to_its_colours():
    got = np.asarray(decode(encode(Image.fromarray(PHOTO).convert("CMYK"), "JPEG", quality=95)))
    assert got.shape == PHOTO.shape
    assert np.abs(got.astype(int) - PHOTO.astype(int)).mean() < 12  # lossy, but the same picture


def test_palette_and_transparent_png():
    pal = Image.fromarray(PHOTO).convert("P")
    np.testing.assert_array_equal(np.asarray(decode(encode(pal, "PNG"))), np.asarray(pal.convert("RGB")))
    got = np.asarray(decode(encode(pal, "PNG", transparency=0)))
    np.testing.assert_array_equal(got, np.asarray(pal.convert("RGBA").convert("RGB")))
    rgba = np.dstack([PHOTO, RNG.integers(0, 256, PHOTO.shape[:2], dtype=np.uint8)])
    np.testing.assert_array_equal(np.asarray(decode(encode(Image.fromarray(rgba, "RGBA"), "PNG"))), PHOTO)
    la = Image.fromarray(np.dstack([PHOTO[..., 0], PHOTO[..., 1]]), "LA")
    got = np.asarray(decode(encode(la, "PNG")))
    np.testing.assert_array_equal(got, np.repeat(PHOTO[..., :1], 3, axis=2))


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (20, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    got = np.asarray(decode(data))
    assert got.shape == (16, 20, 3)
    assert (got == [255, 0, 0]).all()


@pytest.mark.parametrize("size", [(1, 1), (20000, 1), (1, 30000), (3, 2000)])
def test_tiny_and_extreme_aspect_ratio(size):
    w, h = size
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[(h - 1) // 2, (w - 1) // 2] = (200, 100, 50)  # the centre survives the square crop
    out = prepare(decode(encode(Image.fromarray(a), "PNG")), 224)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8
    if min(w, h) == 1:
        assert (out[:, 112, 112] == (200, 100, 50)).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation,turns", [(3, 2), (6, -1), (8, 1)])
def test_exif_rotation_is_applied(fmt, orientation, turns):
    data = with_orientation(PHOTO, fmt, orientation)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # the pixels as stored, not rotated
    upright = np.rot90(stored, turns)  # the manually rotated copy
    got = np.asarray(decode(data))
    if orientation != 3:  # a quarter turn swaps width and height
        assert stored.shape[:2] == PHOTO.shape[:2] and got.shape[:2] == PHOTO.shape[1::-1]
    np.testing.assert_array_equal(got, upright)
    if fmt == "PNG":  # lossless: the manual copy is the original picture
        np.testing.assert_array_equal(got, np.rot90(PHOTO, turns))


def test_damaged_exif_keeps_the_image():
    data = encode(Image.fromarray(PHOTO), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01\x12")
    with pytest.warns(UserWarning):
        assert np.asarray(decode(data)).shape == PHOTO.shape


# -- a folder of hostile files, through the pipeline's per-image path ----------------------
GOOD = {"good-1.png": PNG, "good-2.jpg": JPEG, "sub/good-3.png": encode(Image.fromarray(PHOTO[::-1]), "PNG")}
BAD = {  # relative name -> expected reason fragment
    "[/bold]caf\\xe9.png": "not an image",  # first in walk order: its name is shown in the CLI warning
    "bad/zero.jpg": "empty file",
    "bad/truncated.jpg": "truncated",
    "bad/truncated.png": "truncated",
    "bad/notes.png": "not an image",
    "bad/bomb.png": "too large",
    "bad/fifo.jpg": "not a regular file (FIFO)",
    "bad/loop-a.jpg": "Too many levels of symbolic links",
    "bad/loop-b.jpg": "Too many levels of symbolic links",
    "bad/dangling.png": "No such file",
}
NON_UTF8_GOOD = b"photo-\xff\xfe.png"  # a valid image whose name is not UTF-8


def make_hostile_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in GOOD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    bad = root / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(JPEG[: len(JPEG) // 2])
    (bad / "truncated.png").write_bytes(PNG[: len(PNG) // 2])
    (bad / "notes.png").write_text("this is a text file with an image extension\n")
    (bad / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    os.mkfifo(bad / "fifo.jpg")
    os.symlink("loop-b.jpg", bad / "loop-a.jpg")
    os.symlink("loop-a.jpg", bad / "loop-b.jpg")
    os.symlink("missing.png", bad / "dangling.png")
    os.symlink("..", root / "sub" / "parent-loop")  # a folder symlink loop: walked once
    (root / "a-folder.jpg").mkdir()  # a folder with an image extension: walked, not read
    (root / "a-folder.jpg" / "inner.png").write_bytes(PNG)
    with open(os.path.join(os.fsencode(root), NON_UTF8_GOOD), "wb") as f:
        f.write(encode(Image.fromarray(PHOTO[:, ::-1]), "PNG"))
    (root / "[").mkdir()  # reported as "[/bold]caf\\xe9.png": rich markup and a Latin-1 byte
    with open(os.path.join(os.fsencode(root), b"[", b"bold]caf\xe9.png"), "wb") as f:
        f.write(b"garbage")
    (root / "readme.txt").write_text("not an image extension: never listed")
    return root


def run_dataset(refs):
    ds = _ImageDataset(refs, ImageRecipe(224))
    ok, failed = [], {}
    for i in range(len(ds)):
        _, arr, _, err = ds[i]
        if err is None:
            ok.append(refs[i].name)
        else:
            failed[refs[i].name] = err
    return ok, failed


def test_hostile_folder_is_listed_and_each_bad_file_has_its_reason(tmp_path):
    folder = make_hostile_folder(tmp_path / "hostile")
    refs = list_images(folder)
    names = [r.name for r in refs]
    assert len(names) == len(set(names))  # the folder loop did not list anything twice
    ok, failed = run_dataset(refs)
    assert sorted(ok) == sorted([*GOOD, "a-folder.jpg/inner.png", "photo-\\xff\\xfe.png"])
    assert set(failed) == set(BAD)
    for name, reason in BAD.items():
        assert reason in failed[name], (name, failed[name])
    for n in names:
        n.encode("utf-8")  # every reported name can be printed


@contextlib.contextmanager
def as_unprivileged_user():
    """chmod 000 does not stop root: run the block as 'nobody' when the tests run as root."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_file_and_folder_are_reported():
    top = Path(tempfile.mkdtemp(prefix="vdna-perm-"))  # under /tmp (mode 1777): 'nobody' can enter it
    try:
        os.chmod(top, 0o755)
        (top / "ok.png").write_bytes(PNG)
        (top / "secret.png").write_bytes(PNG)
        os.chmod(top / "secret.png", 0o000)
        (top / "locked").mkdir()
        (top / "locked" / "hidden.png").write_bytes(PNG)
        os.chmod(top / "locked", 0o000)
        with as_unprivileged_user():
            refs = list_images(top)
            ok, failed = run_dataset(refs)
        assert ok == ["ok.png"]
        assert failed == {"locked/": "unreadable: folder cannot be listed: Permission denied",
                          "secret.png": "unreadable: Permission denied"}
    finally:
        os.chmod(top / "locked", 0o755)
        shutil.rmtree(top)


def test_zip_with_hostile_members(tmp_path):
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("good.png", PNG)
        z.writestr("empty.jpg", b"")
        z.writestr("nested/bomb.png", png_declaring(100_000, 100_000))
        z.writestr("caf\u00e9.png", JPEG)
    ok, failed = run_dataset(list_images(zpath))
    assert sorted(ok) == ["caf\u00e9.png", "good.png"]
    assert "empty file" in failed["empty.jpg"] and "too large" in failed["nested/bomb.png"]


def test_list_file_pointing_at_special_files(tmp_path):
    (tmp_path / "img.png").write_bytes(PNG)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir.png").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text("img.png\npipe.png\ndir.png\n/dev/zero\nmissing.png\n")
    ok, failed = run_dataset(list_images(lst))
    assert ok == ["img.png"]
    assert failed == {"pipe.png": "unreadable: not a regular file (FIFO)",
                      "dir.png": "unreadable: not a regular file (folder)",
                      "zero": "unreadable: not a regular file (special file)",
                      "missing.png": "unreadable: No such file or directory"}


def test_folder_with_no_valid_image_is_an_error(tmp_path, lite0):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_bytes(PNG[:100])
    os.mkfifo(folder / "c.jpg")
    with pytest.raises(SourceError, match="no valid image among 3 file"):
        compute_dna(list_images(folder), lite0, run=Run(batch_size=4))
    with pytest.raises(ImageDecodeError, match="a.jpg: empty file"):
        compute_dna(list_images(folder), lite0, run=Run(batch_size=4, strict=True))


# -- end to end: the CLI skips, counts and lists; --strict fails; the registry is untouched -----
def test_cli_add_skips_and_lists_hostile_files(vdna, tmp_path, registry_dir):
    folder = make_hostile_folder(tmp_path / "hostile")
    r = vdna("add", "hostile", folder, "--json")
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["num_images"] == rep["added_images"] == len(GOOD) + 2
    failed = {f["image"]: f["reason"] for f in rep["failed"]}
    assert set(failed) == set(BAD)
    assert all(reason in failed[n] for n, reason in BAD.items())
    assert f"skipped {len(BAD)} unreadable images: [/bold]caf\\xe9.png (not an image" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr

    before = sorted(p.name for p in (registry_dir / "entries").iterdir())
    r = vdna("add", "strict", folder, "--strict")
    assert r.code == 5  # an undecodable image under --strict: integrity (docs/cli.md)
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: [/bold]caf\\xe9.png: not an image (unknown or unsupported format)"]
    assert sorted(p.name for p in (registry_dir / "entries").iterdir()) == before == ["hostile.h5"]
    assert list((registry_dir / "tmp").iterdir()) == []


def test_planar_float_tiff_declaring_a_gigabyte_is_refused_before_decoding():
    """Issue 14 row 3: 3 x 9500 x 9500 float32 (1 GB of samples) in a ~1 MB file."""
    import tifffile

    from vdnacli.preprocess import MAX_SAMPLES, check_declared

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as w:  # declared large, stored as one compressed strip of zeros
        w.write(np.zeros((3, 9500, 9500), np.float32), photometric="rgb", planarconfig="separate",
                compression="zlib", rowsperstrip=9500)
    data = buf.getvalue()
    assert len(data) < 8 << 20
    with pytest.raises(ImageDecodeError, match="too large"):
        decode(data)
    with pytest.raises(ImageDecodeError):
        check_declared((70_000, 10))  # one side beyond any decoder's
    check_declared((3, 100, 100))
    assert MAX_SAMPLES < 3 * 9500 * 9500
