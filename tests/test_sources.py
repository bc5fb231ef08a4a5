"""Image sources: the same image bytes give the same DNA whatever holds them (a folder, a zip,
tar shards, tables, URLs, a Hub dataset, stdin, a video's frames, Python objects), bad input
is a skipped-and-reported image or one error line, and the DNA records where its images came
from without local paths or URL credentials.

Every DNA here is computed with the real offline extractor (efficientnet-lite0) on a handful
of real sample images (vdnacli.samples), and compared bin by bin."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vdnacli import samples
from vdnacli.catalog import Catalog
from vdnacli.distances import compare
from vdnacli.errors import ConfigError, ImageDecodeError, SourceError
from vdnacli.pipeline import ComputeReport, Run, compute_dna
from vdnacli.settings import ComputeSettings
from vdnacli.sources import SourceOptions, open_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


# -- the images, and the same bytes in every container -------------------------------------------
def _rgb(a: np.ndarray) -> np.ndarray:
    return np.dstack([a] * 3) if a.ndim == 2 else a[..., :3]


@pytest.fixture(scope="module")
def arrays() -> list[np.ndarray]:
    """Six real images: four photo crops, two LFW faces (greyscale)."""
    return [*samples.photo_crops(4, seed=5, size=72), *samples.faces()[:2]]


@pytest.fixture(scope="module")
def data(tmp_path_factory, arrays) -> Path:
    """The six images as files (PNG, and one JPEG), and the same bytes in every container."""
    root = tmp_path_factory.mktemp("sources")
    folder = root / "folder"
    folder.mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / (f"{i:02d}.jpg" if i == 1 else f"{i:02d}.png"))
    files = sorted(folder.iterdir())
    with zipfile.ZipFile(root / "images.zip", "w") as z:
        for f in files:
            z.write(f, f.name)
    with tarfile.open(root / "one.tar", "w") as t:
        for f in files:
            t.add(f, f.name)
            t.addfile(tarfile.TarInfo(f.stem + ".json"), io.BytesIO(b""))  # webdataset's other members
    with tarfile.open(root / "one.tar.gz", "w:gz") as t:
        for f in files:
            t.add(f, f.name)
    (root / "shards").mkdir()
    for k in range(3):  # two images per shard, in order
        with tarfile.open(root / "shards" / f"shard-{k:03d}.tar", "w") as t:
            for f in files[2 * k : 2 * k + 2]:
                t.add(f, f"{f.stem}.{f.suffix[1:]}")
    structs = [{"bytes": f.read_bytes(), "path": f.name} for f in files]
    hf_meta = {b"huggingface": json.dumps({"info": {"features": {"label": {"_type": "Value"},
                                                                 "img": {"_type": "Image"}}}}).encode()}
    table = pa.table({"label": list(range(6)), "caption": ["x"] * 6, "img": structs}).replace_schema_metadata(hf_meta)
    pq.write_table(table, root / "structs.parquet", row_group_size=4)  # two row groups
    pq.write_table(pa.table({"raw": [f.read_bytes() for f in files]}), root / "raw.parquet")
    pq.write_table(pa.table({"file_name": [f"folder/{f.name}" for f in files]}), root / "paths.parquet")
    (root / "paths.csv").write_text("label,file_name\n" + "".join(f"0,folder/{f.name}\n" for f in files))
    (root / "paths.jsonl").write_text("".join(json.dumps({"path": f"folder/{f.name}", "n": 1}) + "\n" for f in files))
    (root / "list.txt").write_text("# six images\n" + "".join(f"folder/{f.name}\n" for f in files))
    return root


def dna_of(source, lite0, workers: int = 0, options: SourceOptions | None = None, **run):
    """(DNA, report) of a source (a path, a Source, or refs) with lite0's default settings, 8 images a batch."""
    src = source if not isinstance(source, (str, Path)) else open_source(source, options)
    settings = ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist",))
    return compute_dna(src, lite0, settings, Run(batch_size=8, workers=workers, **run))


@pytest.fixture(scope="module")
def reference(data, lite0):
    dna, report = dna_of(data / "folder", lite0)
    assert report.images == 6 and not report.failed
    return dna


def assert_same(a, b, hashes: bool = True) -> None:
    assert a.num_images == b.num_images
    for layer in a.hist:
        assert np.array_equal(a.hist[layer], b.hist[layer]), layer
    assert compare(a, b).distance == 0.0
    if hashes:  # the same bytes: the same content hashes (what --append compares)
        assert np.array_equal(a.image_hashes, b.image_hashes)


@pytest.mark.parametrize("spec", ["images.zip", "one.tar", "one.tar.gz", "shards/shard-{000..002}.tar",
                                  "shards/*.tar", "structs.parquet", "raw.parquet", "paths.parquet", "paths.csv",
                                  "paths.jsonl", "list.txt"])
def test_same_bytes_same_dna_whatever_the_container(spec, data, lite0, reference):
    dna, report = dna_of(str(data / spec), lite0)
    assert report.images == 6 and not report.failed, report.failed
    assert_same(reference, dna)


@pytest.mark.parametrize("spec,workers", [("shards/shard-{000..002}.tar", 2), ("one.tar", 2), ("one.tar.gz", 2),
                                          ("structs.parquet", 2), ("images.zip", 2)])
def test_streams_split_across_workers_count_each_image_once(spec, workers, data, lite0, reference):
    """3 shards for 2 workers: by shard; 1 shard for 2 workers: every worker walks it, keeps every 2nd image."""
    dna, report = dna_of(str(data / spec), lite0, workers=workers)
    assert report.images == 6 and not report.failed
    assert_same(reference, dna)


def test_every_image_goes_to_exactly_one_rank_and_worker(data):
    """torchrun ranks x decode workers: the union of the parts is every image, once."""
    for spec in ("shards/shard-{000..002}.tar", "one.tar", "structs.parquet"):
        src = open_source(str(data / spec))
        whole = [it.name for it in src.iter_items()]
        assert len(whole) == 6
        for world, workers in ((2, 1), (2, 2), (3, 2), (1, 4)):
            parts = [it.name for r in range(world) for w in range(workers)
                     for it in src.shard(r, world).iter_items(w, workers)]
            assert sorted(parts) == sorted(whole), (spec, world, workers)


def test_limit_picks_the_same_images_from_shards_as_from_the_folder(data, lite0):
    folder = open_source(data / "folder").select(3, seed=7)
    shards = open_source(str(data / "shards/shard-{000..002}.tar")).select(3, seed=7)
    table = open_source(data / "structs.parquet").select(3, seed=7)
    a, _ = dna_of(folder, lite0)
    for other in (shards, table):
        b, report = dna_of(other, lite0)
        assert report.images == 3
        assert_same(a, b)


def test_zip_keeps_one_open_archive_per_process(data, lite0, monkeypatch, reference):
    from vdnacli.sources import archive

    opened = []
    real = archive._open_zip
    monkeypatch.setattr(archive, "_open_zip", lambda p: opened.append(p) or real(p))
    dna, report = dna_of(data / "images.zip", lite0)
    assert report.images == 6 and len(opened) == 1  # not one open per image
    assert_same(reference, dna)


# -- provenance -----------------------------------------------------------------------------------------
def test_origin_names_the_source_without_local_paths(data, tmp_path):
    for spec, want in [
        (data / "folder", {"kind": "folder", "source_name": "folder"}),
        (data / "images.zip", {"kind": "zip", "source_name": "images.zip"}),
        (str(data / "shards/shard-{000..002}.tar"),
         {"kind": "tar", "pattern": "shard-{000..002}.tar", "shards_total": 3,
          "shards": ["shard-000.tar", "shard-001.tar", "shard-002.tar"]}),
        (data / "structs.parquet", {"kind": "table", "table": "structs.parquet", "column": "img"}),
        (data / "paths.csv", {"kind": "table", "table": "paths.csv", "column": "file_name"}),
    ]:
        origin = open_source(spec).origin
        assert origin == want
        assert str(data) not in json.dumps(origin)


def test_add_records_the_origin_in_the_dna(data, tmp_path):
    from vdnacli.build import AddRequest, add

    cat = Catalog(tmp_path / "reg")
    add(cat, AddRequest(name="t", source=str(data / "shards/shard-{000..002}.tar"), workers=0, limit=4, seed=1))
    origin = cat.get("t").meta["origin"]
    assert origin["kind"] == "tar" and origin["shards"] == ["shard-000.tar", "shard-001.tar", "shard-002.tar"]
    assert origin["limit"] == 4 and origin["seed"] == 1 and cat.get("t").num_images == 4
    assert str(data) not in json.dumps(origin)


def test_thumbnails_of_a_stream_are_the_folders(data, tmp_path):
    """Thumbnails are chosen by content hash: tar shards and parquet keep the folder's."""
    from vdnacli.build import AddRequest, add

    cat = Catalog(tmp_path / "reg")
    for name, spec in (("f", data / "folder"), ("t", str(data / "shards/shard-{000..002}.tar")),
                       ("p", data / "structs.parquet")):
        add(cat, AddRequest(name=name, source=spec, workers=0, thumbnails=3))
    want = cat.thumbnails("f")
    assert len(want) == 3
    for name in ("t", "p"):
        got = cat.thumbnails(name)
        assert np.array_equal(got.hashes, want.hashes) and got.images == want.images


# -- bad input: skipped and reported, or one error ----------------------------------------------------------
def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, b in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            t.addfile(info, io.BytesIO(b))
    return buf.getvalue()


def test_damaged_shards_cost_their_images_not_the_run(data, tmp_path, lite0):
    good = [(data / "folder" / n).read_bytes() for n in ("00.png", "02.png", "03.png")]
    bad = tmp_path / "bad"
    bad.mkdir()
    whole = _tar_bytes({"a.png": good[0], "b.png": good[1], "c.png": good[2]})
    (bad / "s-0.tar").write_bytes(_tar_bytes({"x.png": good[0], "notes.jpg": b"this is text, not a JPEG"}))
    after_a = 512 + (len(good[0]) + 511) // 512 * 512  # header + padded data
    (bad / "s-1.tar").write_bytes(whole[: after_a + 512 + 100])  # ends inside b.png
    (bad / "s-2.tar").write_bytes(whole[:after_a])  # ends after a.png, without the end-of-archive blocks
    (bad / "s-3.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(300))  # gzip garbage
    dna, report = dna_of(str(bad / "s-{0..4}.tar*"), lite0)  # s-4 matches nothing: the others still count
    failed = dict(report.failed)
    assert report.images == 3  # x.png, s-1's a.png, s-2's a.png
    assert "not an image" in failed["s-0.tar/notes.jpg"]
    assert "ends inside this member" in failed["s-1.tar/b.png"]
    assert "truncated tar shard" in failed["s-2.tar"]
    assert "cannot open tar shard" in failed["s-3.tar.gz"]
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        dna_of(str(bad / "s-0.tar"), lite0, strict=True)
    with pytest.raises(SourceError, match="no valid image.*s-3.tar.gz"):
        dna_of(str(bad / "s-3.tar.gz"), lite0)


def test_missing_shards_of_a_brace_pattern(tmp_path, data, lite0):
    with pytest.raises(SourceError, match=r"nothing matches shard-\{000..009\}.tar \(10 name"):
        open_source(str(tmp_path / "shard-{000..009}.tar"))
    with pytest.raises(SourceError, match="nothing matches"):
        open_source(str(tmp_path / "*.tar"))
    dna, report = dna_of(str(data / "shards/shard-{000..003}.tar"), lite0)  # shard-003 does not exist
    assert report.images == 6 and report.failed == [("shard-003.tar", "no such shard")]


def test_tables_with_bad_cells_and_missing_columns(data, tmp_path, lite0):
    png = (data / "folder" / "00.png").read_bytes()
    t = tmp_path / "cells.parquet"
    pq.write_table(pa.table({"img": [{"bytes": png, "path": None}, None, {"bytes": b"GIF89a nonsense", "path": None},
                                     {"bytes": None, "path": None}],
                             "n": [1, 2, 3, 4]}), t)
    dna, report = dna_of(t, lite0)
    assert report.images == 1
    reasons = dict(report.failed)
    assert reasons["cells.parquet#1"] == "empty cell (null)"
    assert "cannot decode" in reasons["cells.parquet#2"] or "not an image" in reasons["cells.parquet#2"]
    assert "empty cell" in reasons["cells.parquet#3"]
    with pytest.raises(SourceError, match=r"has no column 'image'; its columns: img \(struct.*\), n \(int64\)"):
        open_source(t, SourceOptions(column="image"))
    with pytest.raises(SourceError, match="column 'n' of cells.parquet holds int64"):
        open_source(t, SourceOptions(column="n"))
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"a": [1], "b": [2.0]}), numbers)
    with pytest.raises(SourceError, match=r"no image column found in numbers.parquet; give --column \(its columns: a"):
        open_source(numbers)
    csv = tmp_path / "t.csv"
    csv.write_text("file_name\nfolder/00.png\n\nmissing.png\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "00.png").write_bytes(png)
    _, report = dna_of(csv, lite0)
    assert report.images == 1 and report.failed[0][0] == "missing.png"
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"path": "folder/00.png"}\n{"path": 3}\n{"path": null}\nnot json\n')
    _, report = dna_of(jl, lite0)
    assert report.images == 1
    assert [r for _, r in report.failed] == ["not a path or URL (int)", "empty cell", "line 4 is not a JSON object"]


def test_missing_extras_name_the_extra(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(SourceError, match=r"pip install 'vdnacli\[tables\]'"):
        open_source(data / "raw.parquet")
    monkeypatch.setitem(sys.modules, "av", None)
    (tmp_path / "x.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match=r"pip install 'vdnacli\[video\]'"):
        open_source(tmp_path / "x.mp4")


def test_source_options_are_checked(data):
    with pytest.raises(ConfigError, match=r"--column applies to tables and Hub datasets, not to folder \(folder\)"):
        open_source(data / "folder", SourceOptions(column="image"))
    with pytest.raises(ConfigError, match="--every and --fps apply to videos, not to one.tar"):
        open_source(data / "one.tar", SourceOptions(every=2))
    with pytest.raises(ConfigError, match="--split applies to Hub datasets"):
        open_source(data / "structs.parquet", SourceOptions(split="test"))
    with pytest.raises(ConfigError, match="--every and --fps"):
        SourceOptions(every=2, fps=1.0)
    with pytest.raises(ConfigError, match="--every must be"):
        SourceOptions(every=0)
    with pytest.raises(ConfigError, match="--url-concurrency"):
        SourceOptions(url_concurrency=0)


# -- URLs: a loopback HTTP server ---------------------------------------------------------------------------
class _Handler(SimpleHTTPRequestHandler):
    fails: dict = {}
    auth: str | None = None

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/private/"):
            if self.headers.get("Authorization") != self.auth:
                self.send_error(401)
                return
            self.path = self.path[len("/private"):]
        left = self.fails.get(self.path, 0)
        if left:  # fail this many times with a 503, then serve
            self.fails[self.path] = left - 1
            self.send_error(503)
            return
        super().do_GET()


@pytest.fixture
def http(data):
    handler = type("H", (_Handler,), {"fails": {}, "auth": "Basic " + base64.b64encode(b"me:s3cret").decode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(data)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_urls_in_a_list_fetched_retried_and_failures_reported(data, http, lite0, reference, tmp_path):
    base, handler = http
    handler.fails["/folder/03.png"] = 2  # two 503s, then the image: within --url-retries 2
    dead = "http://127.0.0.1:9/nothing.png"  # the discard port: connection refused
    urls = [f"{base}/folder/{f.name}" for f in sorted((data / "folder").iterdir())]
    urls[0] = urls[0].replace(base, base.replace("http://", "http://me:s3cret@") + "/private")
    lst = tmp_path / "urls.txt"
    lst.write_text("\n".join(urls + [f"{base}/folder/404.png", dead]) + "\n")
    opts = SourceOptions(url_timeout=5, url_retries=2, url_concurrency=4)
    dna, report = dna_of(lst, lite0, options=opts)
    assert report.images == 6
    assert_same(reference, dna)
    failed = dict(report.failed)
    assert failed[f"{base}/folder/404.png"] == "unreadable: HTTP 404 File not found"
    assert "cannot fetch (3 attempt(s))" in failed["http://127.0.0.1:9/nothing.png"]
    names = [n for n, _ in report.failed] + [r.name for r in open_source(lst, opts).refs]
    assert not any("s3cret" in n for n in names)  # credentials are sent, never shown
    # one image and tar shards by URL
    dna, _ = dna_of(f"{base}/shards/shard-{{000..002}}.tar", lite0, workers=2)
    assert_same(reference, dna)
    assert open_source(f"{base}/shards/shard-{{000..002}}.tar").origin["shards"][0] == f"{base}/shards/shard-000.tar"


def test_a_table_of_urls(data, http, lite0, reference, tmp_path):
    base, _ = http
    t = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": [f"{base}/folder/{f.name}?sig=SECRET" for f in sorted((data / "folder").iterdir())]}), t)
    dna, report = dna_of(t, lite0)
    assert report.images == 6
    assert_same(reference, dna)
    assert all("SECRET" not in r.name and r.name.endswith("?…") for r in open_source(t).refs)


# -- stdin, through the command line --------------------------------------------------------------------------
def test_stdin_paths_and_the_cli(data, tmp_path, reference):
    env = dict(os.environ, VDNA_REGISTRY=str(tmp_path / "reg"), NO_COLOR="1", HF_HUB_OFFLINE="1", VDNA_WORKERS="0")
    lines = "".join(f"folder/{f.name}\n" for f in sorted((data / "folder").iterdir()))

    def vdna(*args, stdin=None):
        return subprocess.run([sys.executable, "-m", "vdnacli", *args], input=stdin, capture_output=True, text=True,
                              env=env, cwd=data, timeout=600)

    r = vdna("add", "piped", "-", "--json", stdin=lines)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["added_images"] == 6
    cat = Catalog(tmp_path / "reg")
    assert_same(reference, cat.get("piped"))
    assert cat.get("piped").meta["origin"]["kind"] == "stdin"
    before = sorted(p.name for p in (tmp_path / "reg").rglob("*"))
    for args, message, code in [
        (("add", "x", "structs.parquet", "--column", "nope"),
         "error: structs.parquet has no column 'nope'; its columns: label (int64), caption (string), img (struct", 1),
        (("add", "x", "shards/shard-{100..101}.tar"), "error: nothing matches shard-{100..101}.tar", 3),
        (("add", "x", "one.tar", "--every", "2", "--fps", "1"), "error: --every and --fps cannot be combined", 1),
    ]:
        r = vdna(*args)
        assert r.returncode == code and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert sorted(p.name for p in (tmp_path / "reg").rglob("*")) == before  # registry unchanged
    r = vdna("add", "piped", "images.zip", "--append")  # the same bytes in a zip: nothing new
    assert r.returncode == 1 and "already counted" in r.stderr


# -- video ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video(data, arrays):
    """A lossless video (PNG frames in AVI) of the six images at 10 frames/s, and the frames it decodes to."""
    av = pytest.importorskip("av")
    frames = [_rgb(a) for a in arrays]
    size = 72
    path = data / "clip.avi"
    with av.open(str(path), "w") as c:
        s = c.add_stream("png", rate=10)
        s.width = s.height = size
        s.pix_fmt = "rgb24"
        for a in frames:
            img = np.asarray(Image.fromarray(a).resize((size, size)))
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    out = data / "frames"
    out.mkdir()
    for i, f in enumerate(decoded):
        Image.fromarray(f).save(out / f"{i:02d}.png")
    return path, out


def test_video_frames_give_the_dna_of_the_same_pixels_as_images(video, lite0):
    path, frames = video
    assert len(list(frames.iterdir())) == 6
    for opts, picked in [(SourceOptions(), [0, 1, 2, 3, 4, 5]), (SourceOptions(every=2), [0, 2, 4]),
                         (SourceOptions(fps=5), [0, 2, 4]), (SourceOptions(fps=100), [0, 1, 2, 3, 4, 5])]:
        src = open_source(path, opts)
        names = [it.name for it in src.iter_items()]
        assert names == [f"clip.avi#frame={i}" for i in picked], opts
        dna, report = dna_of(src, lite0)
        want, _ = dna_of([r for r in open_source(frames).refs if int(r.name[:2]) in picked], lite0)
        assert_same(want, dna, hashes=False)  # identity: the video's hash + the frame index
    assert open_source(path, SourceOptions(every=2)).origin == {"kind": "video", "source_name": "clip.avi",
                                                               "files": ["clip.avi"], "files_total": 1,
                                                               "every": 2, "fps": None}


def test_video_identity_is_file_and_frame(video, lite0):
    path, _ = video
    a, _ = dna_of(open_source(path), lite0)
    skip = {bytes(h) for h in a.image_hashes}
    _, again = dna_of(open_source(path), lite0, skip=skip, allow_empty=True)
    assert again.images == 0 and again.duplicates == 6  # appending the same video adds nothing
    assert len(skip) == 6


def test_a_video_that_cannot_be_opened(tmp_path, video, lite0):
    pytest.importorskip("av")
    path, _ = video
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(SourceError, match="no valid image among 1 file.*broken.mp4: cannot open video"):
        dna_of(bad, lite0)
    vids = tmp_path / "vids"
    vids.mkdir()
    (vids / "a.avi").write_bytes(path.read_bytes())
    (vids / "b.mp4").write_bytes(bad.read_bytes())
    _, report = dna_of(vids, lite0, options=SourceOptions(every=3))  # a folder of videos, with --every
    assert report.images == 2 and report.failed[0][0] == "b.mp4" and "cannot open video" in report.failed[0][1]


# -- the Hugging Face Hub: a loopback fake Hub and a test-made cache ------------------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from hub_server import FakeHub

    server = FakeHub(tokens={}).start()
    hf_home = tmp_path / "hf"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    yield server
    server.stop()


def _parquet_bytes(table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    return buf.getvalue()


def test_hub_dataset_parquet_split_offline_and_origin(hub, data, lite0, reference):
    files = sorted((data / "folder").iterdir())
    structs = [{"bytes": f.read_bytes(), "path": f.name} for f in files]
    tables = {
        "data/train-00000-of-00002.parquet": _parquet_bytes(pa.table({"image": structs[:4], "label": [0] * 4})),
        "data/train-00001-of-00002.parquet": _parquet_bytes(pa.table({"image": structs[4:], "label": [1] * 2})),
        "data/test-00000-of-00001.parquet": _parquet_bytes(pa.table({"image": structs[:1], "label": [0]})),
        "README.md": b"# pets\n",
    }
    commit = hub.add_repo("org/pets", tables)
    src = open_source("hf://datasets/org/pets")
    assert src.origin == {"kind": "hf", "repo": "org/pets", "revision": "main", "commit": commit, "split": "train",
                          "path": None, "column": "image", "files_total": 2,
                          "files": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]}
    dna, report = dna_of(src, lite0)
    assert report.images == 6
    assert_same(reference, dna)
    # the test split; then the cache alone (offline), at the commit main pointed to
    test_src = open_source("hf://datasets/org/pets", SourceOptions(split="test"))
    assert [it.name for it in test_src.iter_items()] == ["data/test-00000-of-00001.parquet#0"]
    hub.commit("org/pets", {"data/train-00001-of-00002.parquet": tables["data/train-00000-of-00002.parquet"]})
    offline = open_source("hf://datasets/org/pets", SourceOptions(offline=True))
    assert offline.origin["commit"] == commit
    dna, _ = dna_of(offline, lite0)
    assert_same(reference, dna)
    with pytest.raises(SourceError, match="no split 'valid' in dataset org/pets .*splits there: train, test"):
        open_source("hf://datasets/org/pets", SourceOptions(split="valid"))
    from vdnacli.hub import HubNotFoundError

    with pytest.raises(HubNotFoundError, match="no dataset repo 'org/nope'"):
        open_source("hf://datasets/org/nope")
    with pytest.raises(SourceError, match="no column 'img'"):
        open_source("hf://datasets/org/pets", SourceOptions(column="img"))


def test_hub_dataset_of_tar_shards_and_of_image_files(hub, data, lite0, reference):
    shards = {f"shards/train-{k}.tar": (data / "shards" / f"shard-{k:03d}.tar").read_bytes() for k in range(3)}
    commit = hub.add_repo("org/wds", shards)
    src = open_source(f"hf://datasets/org/wds@{commit}/shards")
    assert src.kind == "hf" and src.origin["commit"] == commit and src.origin["revision"] == commit
    dna, _ = dna_of(src, lite0, workers=2)
    assert_same(reference, dna)
    images = {f"train/{f.name}": f.read_bytes() for f in sorted((data / "folder").iterdir())}
    hub.add_repo("org/folder", images)
    dna, _ = dna_of(open_source("hf://datasets/org/folder"), lite0)
    assert_same(reference, dna)
    with pytest.raises(SourceError, match="invalid path"):
        open_source("hf://datasets/org/folder/../x")


# -- Python objects ------------------------------------------------------------------------------------------------
class _Digits:
    """A torch-style Dataset: (image, label) pairs, images as uint8 CHW tensors."""

    def __init__(self, arrays):
        import torch

        self.t = [torch.from_numpy(np.ascontiguousarray(np.moveaxis(_rgb(a), -1, 0))) for a in arrays]

    def __len__(self):
        return len(self.t)

    def __getitem__(self, i):
        return self.t[i], i % 2


def test_python_images_give_the_dna_of_the_same_pixels_as_files(arrays, data, lite0, tmp_path):
    import vdnacli

    pngs = samples.write_pngs(arrays, tmp_path / "pngs")
    want, _ = dna_of(pngs, lite0)
    pils = [Image.fromarray(a) for a in arrays]
    for images in (arrays, pils, iter(pils), (a for a in arrays), [str(p) for p in sorted(pngs.iterdir())]):
        dna = vdnacli.compute(images, lite0, batch_size=8)
        assert_same(want, dna, hashes=isinstance(images, list) and isinstance(images[0], str))
        assert dna.meta["origin"]["kind"] == "python"
    rgb = [_rgb(a) for a in arrays]
    want_rgb, _ = dna_of(samples.write_pngs(rgb, tmp_path / "rgb"), lite0)
    by_dataset = vdnacli.compute(_Digits(arrays), lite0, workers=2, batch_size=8)
    assert_same(want_rgb, by_dataset, hashes=False)
    batch = np.stack([np.asarray(Image.fromarray(a).resize((40, 40))) for a in rgb])
    want_batch, _ = dna_of(samples.write_pngs(list(batch), tmp_path / "batch"), lite0)
    assert_same(want_batch, vdnacli.compute(batch, lite0), hashes=False)
    # in-memory identity: a hash of the pixels, whatever object holds them
    a = vdnacli.compute(arrays, lite0)
    assert np.array_equal(a.image_hashes, vdnacli.compute(pils, lite0).image_hashes)


def test_python_api_reports_skips_and_refuses_what_is_not_images(arrays, lite0, tmp_path):
    import vdnacli

    report = ComputeReport()
    vdnacli.compute([arrays[0], np.zeros((4, 4), np.float32), "missing.png"], lite0, report=report)
    assert report.images == 1
    assert [n for n, _ in report.failed] == ["image[1]", "missing.png"]
    assert "float32 array" in report.failed[0][1]
    with pytest.warns(UserWarning, match="skipped 1 unusable image"):
        vdnacli.compute([arrays[0], np.zeros((4, 4, 7), np.uint8)], lite0)
    with pytest.raises(ConfigError, match="give a list of images, not one image"):
        vdnacli.compute(Image.fromarray(arrays[0]), lite0)
    with pytest.raises(ConfigError, match="needs a list or a Dataset"):
        vdnacli.compute(iter(arrays), lite0, limit=2)
    cat = Catalog(tmp_path / "reg")
    dna = cat.add("mem", arrays, extractor=lite0)
    assert cat.get("mem").num_images == 6 == dna.num_images
    from registry import EntryExistsError

    with pytest.raises(EntryExistsError):
        cat.add("mem", arrays, extractor=lite0)


def test_brace_expansion():
    from vdnacli.sources.patterns import expand_braces, fixed_root

    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{train,val}/{8..10}.tar") == ["train/8.tar", "train/9.tar", "train/10.tar",
                                                        "val/8.tar", "val/9.tar", "val/10.tar"]
    assert expand_braces("{0..6..3}") == ["0", "3", "6"] and expand_braces("x{}y") == ["x{}y"]
    assert fixed_root("/data/laion/shard-{000..009}.tar") == "/data/laion"
    with pytest.raises(SourceError, match="expands to"):
        expand_braces("{0..99999999}")


@pytest.mark.slow
def test_torchrun_splits_shards_across_ranks(data, tmp_path):
    """Two gloo ranks over three tar shards give the single process's DNA (same batch shapes and
    thread count in both runs, as in test_distributed)."""
    env = dict(os.environ, VDNA_REGISTRY=str(tmp_path / "reg"), NO_COLOR="1", OMP_NUM_THREADS="1",
               VDNA_WORKERS="0", HF_HUB_OFFLINE="1")
    shards = str(data / "shards/shard-{000..002}.tar")
    opts = ["--kind", "hist,gauss", "--batch-size", "2"]
    single = subprocess.run([sys.executable, "-m", "vdnacli", "add", "single", shards, *opts], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "vdnacli",
                           "add", "dist", shards, *opts], env=env, capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, dist.stderr[-2000:]
    cat = Catalog(tmp_path / "reg")
    a, b = cat.get("single"), cat.get("dist")
    assert a.num_images == b.num_images == 6
    assert_same(a, b)
    for layer in a.layers:
        np.testing.assert_allclose(a.gauss[layer].sum, b.gauss[layer].sum, rtol=1e-9)
    assert b.meta["origin"]["shards"] == ["shard-000.tar", "shard-001.tar", "shard-002.tar"]
