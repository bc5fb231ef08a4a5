"""`--decode torch`: JPEGs decoded and resized as tensors (vdnacli.decode_torch), checked
against the PIL path on real JPEGs written from the offline sample images."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vdnacli import decode_torch, samples
from vdnacli.decode_torch import EncodedJpeg, decode_resize, probe_jpeg
from vdnacli.errors import ConfigError, ImageDecodeError
from vdnacli.pipeline import Run
from vdnacli.preprocess import ImageRecipe, decode, prepare
from vdnacli.settings import ComputeSettings


def _settings(**kw) -> ComputeSettings:
    """Lite0 with the resize the device decoder reproduces (uint8 PIL), for both decoders."""
    return ComputeSettings.for_extractor("efficientnet-lite0", resize="pil", **kw)

CPU = torch.device("cpu")


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _declared_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with another size in its SOF0 header (pixels untouched)."""
    k = data.index(b"\xff\xc0")
    return data[:k + 5] + struct.pack(">HH", height, width) + data[k + 9:]


def _torch_path(data: bytes, crop="center", interpolation="bicubic", size=224) -> np.ndarray:
    header = probe_jpeg(data)
    assert header is not None
    (out,) = decode_resize([EncodedJpeg(data, header.orientation)], CPU, size, crop, interpolation)
    return out.numpy()


def _pil_path(data: bytes, crop="center", interpolation="bicubic", size=224) -> np.ndarray:
    return prepare(decode(data), size, crop, interpolation)


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    """Real JPEGs (quality 95): photos, a 2-megapixel upscale, greyscale faces, upscaled digits."""
    photos = [p for p in samples.photos() if p.ndim == 3][:6]
    out = {f"photo{i}": _jpeg(Image.fromarray(p)) for i, p in enumerate(photos)}
    out["2mp"] = _jpeg(Image.fromarray(photos[0]).resize((1600, 1200), Image.Resampling.BILINEAR))
    out["progressive"] = _jpeg(Image.fromarray(photos[1]), progressive=True)
    for i, f in enumerate(samples.faces()[:3]):
        out[f"grey-face{i}"] = _jpeg(Image.fromarray(f, "L").resize((250, 250), Image.Resampling.BICUBIC))
    for i, d in enumerate(samples.digits()[:3]):
        out[f"digit{i}"] = _jpeg(Image.fromarray(d, "L").convert("RGB"))  # 8x8: upscaled 28x
    return out


@pytest.fixture(scope="module")
def odd_dir(tmp_path_factory, jpegs) -> Path:
    """A folder where every file but three takes a different route: good JPEGs, a rotated
    one, a PNG, a CMYK JPEG, a truncated JPEG, a bomb, an empty file, a damaged SOS."""
    d = tmp_path_factory.mktemp("odd")
    for name in ("photo0", "2mp", "grey-face0"):
        (d / f"{name}.jpg").write_bytes(jpegs[name])
    photo = Image.open(io.BytesIO(jpegs["photo1"]))
    exif = Image.Exif()
    exif[0x0112] = 6
    (d / "rotated.jpg").write_bytes(_jpeg(photo.crop((0, 0, 300, 200)), exif=exif))
    photo.save(d / "photo.png")
    (d / "cmyk.jpg").write_bytes(_jpeg(photo.convert("CMYK")))
    (d / "truncated.jpg").write_bytes(jpegs["photo2"][: len(jpegs["photo2"]) // 2])
    (d / "bomb.jpg").write_bytes(_declared_size(jpegs["photo3"], 10_000, 10_000))
    (d / "empty.jpg").write_bytes(b"")
    data = jpegs["photo4"]
    k = data.index(b"\xff\xda") + 5  # first component selector of the scan header
    (d / "bad-scan.jpg").write_bytes(data[:k] + b"\x09" + data[k + 1:])
    return d


# -- header probe: which files the tensor path takes ------------------------------------
def test_probe_takes_plain_jpegs_only(jpegs, odd_dir):
    assert probe_jpeg(jpegs["2mp"]) == (1600, 1200, 1)
    assert probe_jpeg(jpegs["grey-face0"]) == (250, 250, 1)
    assert probe_jpeg((odd_dir / "rotated.jpg").read_bytes()) == (300, 200, 6)
    for name in ("photo.png", "cmyk.jpg", "truncated.jpg", "bomb.jpg", "empty.jpg"):
        assert probe_jpeg((odd_dir / name).read_bytes()) is None, name
    # the limit is MAX_PIXELS (89,478,485), read from the header: no pixel is decoded
    assert probe_jpeg(_declared_size(jpegs["photo3"], 9_000, 9_943)) is None
    assert probe_jpeg(_declared_size(jpegs["photo3"], 9_000, 9_942)) == (9_000, 9_942, 1)


def test_check_decoder():
    assert decode_torch.check_decoder("torch") == "torch"
    with pytest.raises(ConfigError, match="unknown decoder 'bogus'; choose from pil, torch"):
        decode_torch.check_decoder("bogus")
    with pytest.raises(ConfigError, match="use --decode pil"):
        decode_torch.check_decoder("torch", "lanczos")
    decode_torch.check_available(CPU)


# -- pixels: the tensor path against the PIL path --------------------------------------
@pytest.mark.parametrize("crop", ["center", "none"])
def test_uint8_output_matches_pil(jpegs, crop):
    """Measured on these images: bicubic, <= 0.09 % of the values differ, by 1 grey level;
    bilinear, <= 2.5 % (the 8x8 digits upscaled 28x; <= 3.0 % over 30 digits), by 1."""
    worst = {}
    for interpolation, bound_mean, bound_max in (("bicubic", 0.003, 1), ("bilinear", 0.05, 1)):
        for name, data in jpegs.items():
            t, p = _torch_path(data, crop, interpolation), _pil_path(data, crop, interpolation)
            assert t.shape == p.shape == (3, 224, 224) and t.dtype == np.uint8
            diff = np.abs(t.astype(int) - p.astype(int))
            assert diff.mean() <= bound_mean and diff.max() <= bound_max, (name, interpolation, diff.mean(), diff.max())
            worst[interpolation] = max(worst.get(interpolation, 0), diff.mean())
    assert 0 < worst["bicubic"]  # the two resizers are different code: equal is not expected


def test_decoded_pixels_equal_pil_before_resize(jpegs):
    """On the CPU both decoders are libjpeg-turbo: identical pixels (greyscale -> RGB too)."""
    for name in ("photo0", "progressive", "grey-face0"):
        data = jpegs[name]
        (img,) = decode_torch._decode([data], CPU)
        assert np.array_equal(img.numpy().transpose(1, 2, 0), np.asarray(decode(data))), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pil(jpegs, orientation):
    photo = Image.open(io.BytesIO(jpegs["photo0"])).crop((0, 0, 300, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(photo, exif=exif)
    (img,) = decode_torch._decode([data], CPU)
    upright = decode_torch.upright(img, probe_jpeg(data).orientation).numpy().transpose(1, 2, 0)
    assert np.array_equal(upright, np.asarray(decode(data)))  # exact, rotated or not
    # and through crop + resize (crop "none": the aspect ratio shows a wrong rotation)
    diff = np.abs(_torch_path(data, "none").astype(int) - _pil_path(data, "none").astype(int))
    assert diff.max() <= 1


def test_images_of_equal_shape_resize_together_and_alone_alike(jpegs):
    datas = [jpegs["photo0"], jpegs["2mp"], jpegs["photo0"], jpegs["grey-face0"]]
    batch = decode_resize([EncodedJpeg(d, 1) for d in datas], CPU, 224)
    for d, out in zip(datas, batch):
        assert torch.equal(out, torch.from_numpy(_torch_path(d)))


def test_torchvision_refusal_returns_none_and_pipeline_falls_back_to_pil(odd_dir):
    from vdnacli.pipeline import _decode_on_device

    png = (odd_dir / "photo.png").read_bytes()
    assert decode_resize([EncodedJpeg(png, 1)], CPU, 224) == [None]  # "Not a JPEG file"
    bad = (odd_dir / "bad-scan.jpg").read_bytes()
    items = [(0, EncodedJpeg(png, 1), b"a" * 16, None), (1, EncodedJpeg(bad, 1), b"b" * 16, None)]
    (i0, arr, _, err0), (i1, none, _, err1) = _decode_on_device(items, None, CPU, ImageRecipe(224))
    assert err0 is None and np.array_equal(arr, _pil_path(png))  # PIL decided: decoded
    with pytest.raises(ImageDecodeError) as e:  # PIL decided: a failure, with PIL's reason
        decode(bad)
    assert none is None and err1 == str(e.value)


# -- the pipeline: failures, duplicates, metadata, DNAs -----------------------------------
def test_failures_and_images_as_with_pil(odd_dir, lite0):
    from vdnacli.pipeline import compute_dna, iter_batches
    from vdnacli.sources import list_images

    refs = list_images(odd_dir)
    dnas, reports = {}, {}
    for decoder in ("pil", "torch"):
        dnas[decoder], reports[decoder] = compute_dna(refs, lite0, _settings(decoder=decoder), Run(batch_size=4))
    assert reports["torch"].failed == reports["pil"].failed
    assert {n for n, _ in reports["pil"].failed} == {"truncated.jpg", "bomb.jpg", "empty.jpg", "bad-scan.jpg"}
    assert reports["torch"].images == reports["pil"].images == 6
    assert np.array_equal(dnas["torch"].image_hashes, dnas["pil"].image_hashes)
    with pytest.raises(ImageDecodeError, match="bad-scan.jpg"):
        for _ in iter_batches(refs, lite0, _settings(decoder="torch"), Run(batch_size=4, strict=True)):
            pass
    # appending what is already counted: duplicates skipped, never decoded
    skip = {bytes(h) for h in dnas["torch"].image_hashes}
    _, again = compute_dna(refs, lite0, _settings(decoder="torch"), Run(batch_size=4, skip=skip, allow_empty=True))
    assert again.images == 0 and again.duplicates == 6 and again.failed == reports["pil"].failed


@pytest.fixture(scope="module")
def jpeg_sample_dirs(sample_dirs, tmp_path_factory) -> dict[str, Path]:
    """digits-a and faces-a of the shared samples as JPEG folders (quality 95)."""
    root = tmp_path_factory.mktemp("jpeg-samples")
    out = {}
    for name in ("digits-a", "faces-a"):
        out[name] = root / name
        out[name].mkdir()
        for png in sorted(sample_dirs[name].glob("*.png")):
            Image.open(png).convert("RGB").save(out[name] / f"{png.stem}.jpg", quality=95)
    return out


def test_dna_with_torch_decoder_is_close_to_pil_and_recorded(jpeg_sample_dirs, lite0):
    """Measured: EMD(torch, pil) 0.017 bins on digits, 0.016 on faces; digits vs faces 30.6."""
    from vdnacli.distances import compare
    from vdnacli.pipeline import compute_dna
    from vdnacli.sources import list_images

    dnas = {}
    for name, folder in jpeg_sample_dirs.items():
        for decoder in ("pil", "torch"):
            dnas[name, decoder], _ = compute_dna(list_images(folder), lite0, _settings(decoder=decoder),
                                                 Run(batch_size=20))
    between = compare(dnas["digits-a", "pil"], dnas["faces-a", "pil"]).distance
    assert between > 20
    for name in jpeg_sample_dirs:
        c = compare(dnas[name, "pil"], dnas[name, "torch"])
        assert 0 < c.distance < 0.1 and max(c.per_layer.values()) < 0.15, (name, c.distance, c.per_layer)
        assert c.distance < between / 300
        assert any("preprocessing" in w for w in c.warnings)  # check_compatible sees the decoder
    pre_pil = dnas["faces-a", "pil"].meta["preprocessing"]
    assert pre_pil == _settings().preprocessing(lite0.spec)  # the PIL path's record is unchanged
    assert "decoder" not in pre_pil
    assert dnas["faces-a", "torch"].meta["preprocessing"] == {**pre_pil, "decoder": "torchvision-cpu",
                                                              "resize": "torch-bicubic-antialias"}


def test_append_keeps_the_entry_decoder(jpeg_sample_dirs, odd_dir, tmp_path):
    from vdnacli.build import AddRequest, add
    from vdnacli.catalog import Catalog

    cat = Catalog(tmp_path / "reg")
    folder = jpeg_sample_dirs["faces-a"]
    add(cat, AddRequest(name="f", source=folder, settings=_settings(decoder="torch"), limit=8, workers=0, batch_size=8))
    with pytest.raises(ConfigError, match=r"'f' was computed with other settings \(decoder: decoder=torch\)"):
        add(cat, AddRequest(name="f", source=folder, settings=_settings(decoder="pil"), append=True, workers=0))
    dna, report = add(cat, AddRequest(name="f", source=odd_dir, append=True, workers=0, batch_size=8))
    assert report.images == 6 and dna.num_images == 14
    assert cat.get("f").meta["preprocessing"]["decoder"] == "torchvision-cpu"


# -- command line ---------------------------------------------------------------------------
def test_cli_decode_torch(vdna, odd_dir):
    r = vdna("add", "odd", odd_dir, "--decode", "torch", "--workers", "2", "--batch-size", "4", "--json")
    assert r.code == 0, r.stderr
    out = r.json()
    assert out["added_images"] == 6 and len(out["failed"]) == 4
    assert "skipped 4 unreadable images" in r.stderr
    meta = vdna("show", "odd", "--json").json()
    assert meta["preprocessing"]["decoder"] == "torchvision-cpu"


@pytest.mark.parametrize("command", [["add", "x", "{dir}"], ["calibrate", "efficientnet-lite0", "{dir}", "--out", "r.json"]])
def test_cli_unknown_decoder_is_one_line(vdna, odd_dir, command):
    r = vdna(*[str(odd_dir) if a == "{dir}" else a for a in command], "--decode", "bogus")
    assert r.code == 1
    assert r.stderr.strip() == "error: unknown decoder 'bogus'; choose from pil, torch"
