"""`vdna pull` / `vdna push`: the real huggingface_hub client against a loopback fake Hub.

Every test talks to tests/hub_server.py on 127.0.0.1; a socket guard fails any attempt to
resolve another host, so no test reaches the internet.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hub_server import FakeHub
from registry import EntryNotFoundError
from vdnacli import hub as H
from vdnacli.catalog import Catalog
from vdnacli.distances import compare, make_selection
from vdnacli.dna import DNA, Gaussian, images_digest, new_meta
from vdnacli.errors import ConfigError, FormatError, IncompatibleDNAError
from vdnacli.extractors import get_spec
from vdnacli.interop import export_upstream

WRITE, READ = "hf_test_write_token", "hf_test_read_token"
SPEC = get_spec("efficientnet-lite0")
LAYERS = {l: n for l, n in SPEC.layers}
BINS = 16


# -- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh fake Hub; HF_ENDPOINT, HF_HOME (the cache) and huggingface_hub's constants point at it."""
    from huggingface_hub import constants

    server = FakeHub(tokens={WRITE: {"read", "write", "gated"}, READ: {"read"}}).start()
    hf_home = tmp_path / "hf"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                "VDNA_OFFLINE", "VDNA_HUB_REPO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # the fake Hub speaks LFS, not Xet
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub read these at import: point the in-process copies at the fake Hub too
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(hf_home / "agent_harnesses.json"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Fail any attempt to resolve a host other than the loopback."""
    real = socket.getaddrinfo
    attempts = []

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            attempts.append(host)
            raise OSError(f"test tried to reach {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert not attempts, f"a test tried to reach the internet: {attempts}"


def synthetic(seed: int, kinds=("hist", "gauss"), images: int = 24, extractor: str = SPEC.name, layers=None,
              weights: str | None = SPEC.weights.sha256, source: str = "holiday-photos-2023") -> DNA:
    """A DNA with the real extractor's layers and random counts (fast, and a real DNA in every other way)."""
    rng = np.random.default_rng(seed)
    layers = layers or LAYERS
    meta = new_meta(extractor=extractor, weights_sha256=weights, ranges_sha256="c" * 64, layers=layers, bins=BINS,
                    preprocessing=SPEC.preprocessing(), kinds=kinds)
    hashes = np.unique(rng.integers(0, 256, size=(images, 16), dtype=np.uint8), axis=0)
    meta["num_images"] = len(hashes)
    meta["images_sha256"] = images_digest(hashes)
    meta["origin"] = {"kind": "images", "source_name": source, "limit": None, "seed": None}
    # every neuron counts the same number of activations (4 positions per image), as a real DNA: it verifies
    hist = ({l: rng.multinomial(4 * len(hashes), rng.dirichlet(np.ones(BINS)), size=n).astype(np.int64)
             for l, n in layers.items()} if "hist" in kinds else None)
    gauss = None
    if "gauss" in kinds:
        gauss = {}
        for l, n in layers.items():
            x = rng.normal(rng.normal(0, 2, n), 1.0, size=(len(hashes), n))
            gauss[l] = Gaussian(len(hashes), x.sum(0), (x * x).sum(0))
    return DNA(meta=meta, hist=hist, gauss=gauss, image_hashes=hashes)


def registry_state(root: Path) -> dict[str, bytes]:
    """Every file of a registry with its bytes (to show a failed pull changed nothing); lock files,
    which a writer creates empty and leaves for the next one, are not state."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def assert_same_dna(a: DNA, b: DNA, hashes: bool = True) -> None:
    sel = make_selection(a.layers)
    if a.hist is not None:
        assert compare(a, b, "emd", sel).distance == 0.0
        for l in a.hist:
            np.testing.assert_array_equal(a.hist[l], b.hist[l])
    if a.gauss is not None:
        assert compare(a, b, "nfd", sel).distance == 0.0
        for l in a.gauss:
            assert a.gauss[l].count == b.gauss[l].count
            np.testing.assert_array_equal(a.gauss[l].sum, b.gauss[l].sum)
            np.testing.assert_array_equal(a.gauss[l].sumsq, b.gauss[l].sumsq)
    if hashes:  # the upstream file pair has no place for per-image hashes
        np.testing.assert_array_equal(a.image_hashes, b.image_hashes)
    for key in ("extractor", "weights_sha256", "ranges_sha256", "layers", "bins", "preprocessing", "num_images",
                "kinds") + (("images_sha256",) if hashes else ()):
        assert a.meta[key] == b.meta[key], key


def published(hub: FakeHub, tmp_path: Path, dnas: dict[str, DNA], repo: str = "me/dnas") -> Catalog:
    """Push `dnas` to `repo` with the real client; return the publisher's catalog."""
    os.environ["HF_TOKEN"] = WRITE
    try:
        cat = Catalog(tmp_path / "publisher")
        for name, d in dnas.items():
            cat.put(name, d)
            H.push(cat, name, repo)
    finally:
        del os.environ["HF_TOKEN"]
    return cat


def upstream_pair(stem: str, meta: dict, arrays: dict) -> dict[str, bytes]:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return {stem + ".json": json.dumps(meta).encode(), stem + ".npz": buf.getvalue()}


# -- push then pull ---------------------------------------------------------------------------
def test_push_then_pull_is_exact(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE)
    original = synthetic(1)
    src = Catalog(tmp_path / "alice")
    src.put("faces", original)
    rep = H.push(src, "faces", "me/faces")
    assert rep.created and rep.revision == "main" and rep.commit == hub.head("me/faces")
    files = hub.files("me/faces")
    assert set(files) == {".gitattributes", "dnas/faces.h5", "README.md"}
    assert rep.files == {"dnas/faces.h5": hashlib.sha256(files["dnas/faces.h5"]).hexdigest()}
    assert rep.files["dnas/faces.h5"] in hub.lfs  # went through the LFS upload, as on the Hub
    assert rep.dropped == ["origin.source_name"]

    monkeypatch.delenv("HF_TOKEN")  # a public repo pulls without a token
    dst = Catalog(tmp_path / "bob")
    got = H.pull(dst, "me/faces")
    assert got.revision == rep.commit and not got.from_cache
    [entry] = got.entries
    assert (entry.name, entry.kind, entry.status, entry.format) == ("faces", "dna", "added", "vdna-entry")
    assert entry.files == rep.files
    pulled = dst.get("faces")
    assert_same_dna(original, pulled)
    origin = pulled.meta["origin"]
    assert origin["kind"] == "hub" and origin["repo_id"] == "me/faces" and origin["repo_type"] == "dataset"
    assert origin["revision"] == rep.commit and origin["files"] == rep.files
    assert origin["published_origin"] == {"kind": "images", "limit": None, "seed": None}
    # the pulled entry sits in the registry like any other and verifies
    assert dst.registry.verify("faces") == []


def test_shards_travel_with_their_dna(hub, tmp_path, monkeypatch):
    """Shard DNAs (vdna add --shards) are part of the entry: push and pull carry them exactly."""
    from vdnacli.shards import Shards

    monkeypatch.setenv("HF_TOKEN", WRITE)
    original = synthetic(2)
    rng = np.random.default_rng(0)
    k = 4
    hist = {}
    for l, h in original.hist.items():  # split each cell's counts over 4 shards
        cut = np.stack([rng.binomial(h, 1 / (k - j)) for j in range(k)])
        left = h.copy()
        for j in range(k - 1):
            cut[j] = np.minimum(cut[j], left)
            left -= cut[j]
        cut[k - 1] = left
        hist[l] = cut
    images = np.array([6, 6, 6, original.num_images - 18])
    gauss = {l: (np.stack([g.sum / k] * k), np.stack([g.sumsq / k] * k)) for l, g in original.gauss.items()}
    original.shards = Shards(k, images, hist=hist, gauss=gauss)
    src = Catalog(tmp_path / "alice")
    src.put("faces", original)
    H.push(src, "faces", "me/sharded")
    dst = Catalog(tmp_path / "bob")
    H.pull(dst, "me/sharded")
    got = dst.get("faces", shards=True).shards
    assert got.count == k and np.array_equal(got.images, images)
    for l in original.layers:
        assert np.array_equal(got.hist[l], hist[l])
        assert np.allclose(got.gauss[l][0], gauss[l][0])
    assert dst.registry.verify("faces") == []


def test_card_describes_each_dna_and_keeps_other_sections(hub, tmp_path, monkeypatch):
    published(hub, tmp_path, {"faces": synthetic(1, kinds=("hist",))}, repo="me/cat")
    card = hub.files("me/cat")["README.md"].decode()
    assert card.startswith("---\ntags:\n- vdna\n")
    for text in ("efficientnet-lite0", SPEC.weights.sha256, "c" * 64, "| bins | 16 |", "| images | ",
                 "crop=center", "size=224", "dnas/faces.h5", "vdna pull me/cat"):
        assert text in card, text
    hub.commit("me/cat", {"README.md": (card + "\nA note written by hand.\n").encode()})
    monkeypatch.setenv("HF_TOKEN", WRITE)
    cat = Catalog(tmp_path / "publisher")
    cat.put("digits", synthetic(2, kinds=("gauss",)))
    H.push(cat, "digits", "me/cat")
    card2 = hub.files("me/cat")["README.md"].decode()
    assert list(H.iter_card_sections(card2)) == [("dna", "faces"), ("dna", "digits")]
    assert "A note written by hand." in card2 and card2.count("tags:") == 1
    assert "| distributions | gauss |" in card2
    # pushing the same DNA again rewrites its section in place
    H.push(cat, "digits", "me/cat")
    assert list(H.iter_card_sections(hub.files("me/cat")["README.md"].decode())) == [("dna", "faces"), ("dna", "digits")]


def test_push_publishes_no_local_paths_or_file_names(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE)
    root = tmp_path / "alice-private-registry"
    cat = Catalog(root)
    d = synthetic(3)
    d.meta["weights_path"] = str(tmp_path / "secret-weights.pth")  # as a future field might record
    cat.put("faces", d)
    rep = H.push(cat, "faces", "me/private-check")
    assert sorted(rep.dropped) == ["origin.source_name", "weights_path"]
    blobs = b"".join(hub.files("me/private-check").values())
    for secret in ("holiday-photos-2023", str(tmp_path), "alice-private-registry", "secret-weights"):
        assert secret.encode() not in blobs, secret
    pulled = Catalog(tmp_path / "bob")
    H.pull(pulled, "me/private-check")
    meta = pulled.get("faces").meta
    assert meta["weights_path"] is None and "source_name" not in meta["origin"]["published_origin"]
    # re-publishing a pulled DNA does not publish the (possibly private) endpoint it came from
    assert meta["origin"]["endpoint"] == hub.url
    rep = H.push(pulled, "faces", "me/republished")
    assert "origin.endpoint" in rep.dropped
    assert hub.url.encode() not in b"".join(hub.files("me/republished").values())

    # --include-filenames publishes the source folder's name, still never a local path
    rep = H.push(cat, "faces", "me/with-names", include_filenames=True)
    assert rep.dropped == ["weights_path"]
    files = hub.files("me/with-names")
    assert b"holiday-photos-2023" in files["dnas/faces.h5"] and b"holiday-photos-2023" in files["README.md"]
    assert str(tmp_path).encode() not in b"".join(files.values())


def test_public_meta_reduces_paths_to_names_only_when_asked():
    meta = {"name": "x", "origin": {"kind": "images", "source_name": "/home/a/photos/", "parts": ["a", "b"]},
            "note": "~/x", "bins": 3}
    out, dropped = H.public_meta(meta)
    assert out == {"origin": {"kind": "images", "parts": ["a", "b"]}, "note": None, "bins": 3}
    assert sorted(dropped) == ["note", "origin.source_name"]
    out, dropped = H.public_meta(meta, include_filenames=True)
    assert out["origin"]["source_name"] == "photos" and dropped == ["note"]


# -- layouts ------------------------------------------------------------------------------------
def test_pull_upstream_pairs_and_skip_other_upstream_files(hub, tmp_path):
    ours = synthetic(4, kinds=("hist",))
    export_upstream(ours, tmp_path / "exp" / "vdna")  # upstream pair written by `vdna export`
    exported = {f"ffhq/vdna{s}": (tmp_path / "exp" / f"vdna{s}").read_bytes() for s in (".json", ".npz")}
    rng = np.random.default_rng(5)
    up_layers = {"block_0": 6, "block_1": 4}
    up_hist = {l: rng.integers(0, 100, size=(n, 8)).astype(np.int32) for l, n in up_layers.items()}
    plain = upstream_pair("cityscapes/vdna", {  # as upstream vdna 0.1.1 writes it, with a local path inside
        "type": "histogram", "name": "histogram-8", "neurons_list": up_layers, "num_images": 50,
        "distribution": {"hist_nb_bins": 8}, "feature_extractor_name": "my_custom_net", "vdna_version": "0.1.1",
        "data_settings": {"source": "/data/cityscapes/train", "crop_to_square_pre_resize": "center"}}, up_hist)
    ranges = upstream_pair("models/activation_ranges", {"type": "activation-ranges", "neurons_list": up_layers,
                                                        "num_images": 10}, {"x": np.zeros(3)})
    hub.add_repo("up/dnas", {**exported, **plain, **ranges, "README.md": b"# upstream DNAs\n"})
    cat = Catalog(tmp_path / "reg")
    rep = H.pull(cat, "up/dnas")
    assert sorted((e.name, e.format) for e in rep.entries) == [("cityscapes-vdna", "upstream-vdna"),
                                                               ("ffhq-vdna", "upstream-vdna")]
    assert any("skipped models/activation_ranges" in w for w in rep.warnings)
    assert not [q for q in hub.requests if q[1].endswith("activation_ranges.npz")]  # its arrays never fetched
    assert any("my_custom_net" in w and "not available" in w for w in rep.warnings)
    assert_same_dna(ours, cat.get("ffhq-vdna"), hashes=False)
    city = cat.get("cityscapes-vdna")
    for l in up_layers:
        np.testing.assert_array_equal(city.hist[l], up_hist[l])
    files = city.meta["origin"]["files"]
    assert files == {p: hashlib.sha256(plain[p]).hexdigest() for p in plain}  # json (git blob) and npz (LFS) checked
    assert "/data/cityscapes" not in json.dumps(city.meta)

    # an upstream file that is not a DNA, asked for by --path, is a clear error
    with pytest.raises(FormatError, match="activation-ranges"):
        H.pull(cat, "up/dnas", path="models/activation_ranges.json")


def test_path_selects_and_name_renames(hub, tmp_path):
    a, b = synthetic(6, kinds=("hist",)), synthetic(7, kinds=("hist",))
    published(hub, tmp_path, {"a": a, "b": b})
    cat = Catalog(tmp_path / "reg")
    rep = H.pull(cat, "me/dnas", path="dnas/b.h5", name="mine")
    assert [e.name for e in rep.entries] == ["mine"] and cat.names() == ["mine"]
    assert_same_dna(b, cat.get("mine"))
    with pytest.raises(ConfigError, match="exactly one DNA"):
        H.pull(cat, "me/dnas", name="both")
    with pytest.raises(H.HubNotFoundError, match="DNAs there: dnas/a, dnas/b"):
        H.pull(cat, "me/dnas", path="dnas/c.h5")
    rep = H.pull(cat, "me/dnas", path="dnas")  # a folder selects everything below it
    assert sorted(e.name for e in rep.entries) == ["a", "b"]


def test_repull_is_unchanged_and_conflicts_need_replace(hub, tmp_path, monkeypatch):
    cat_pub = published(hub, tmp_path, {"a": synthetic(8, kinds=("hist",))})
    cat = Catalog(tmp_path / "reg")
    H.pull(cat, "me/dnas")
    before = registry_state(cat.root)
    again = H.pull(cat, "me/dnas")
    assert [e.status for e in again.entries] == ["unchanged"] and registry_state(cat.root) == before
    newer = synthetic(9, kinds=("hist",))
    cat_pub.put("a", newer, replace=True)
    monkeypatch.setenv("HF_TOKEN", WRITE)
    H.push(cat_pub, "a", "me/dnas")
    with pytest.raises(H.HubError, match="already exists .*pulled from me/dnas.*--replace"):
        H.pull(cat, "me/dnas")
    assert registry_state(cat.root) == before
    rep = H.pull(cat, "me/dnas", replace=True)
    assert [e.status for e in rep.entries] == ["replaced"]
    assert_same_dna(newer, cat.get("a"))


def test_push_to_a_branch(hub, tmp_path, monkeypatch):
    published(hub, tmp_path, {"main-dna": synthetic(10, kinds=("hist",))}, repo="me/br")
    monkeypatch.setenv("HF_TOKEN", WRITE)
    cat = Catalog(tmp_path / "publisher")
    cat.put("exp", synthetic(11, kinds=("hist",)))
    rep = H.push(cat, "exp", "me/br", revision="experiments")
    assert rep.revision == "experiments" and rep.commit == hub.head("me/br", branch="experiments")
    assert "dnas/exp.h5" not in hub.files("me/br")
    reg = Catalog(tmp_path / "reg")
    got = H.pull(reg, "me/br", revision="experiments")
    assert sorted(e.name for e in got.entries) == ["exp", "main-dna"]  # the branch started from main
    assert reg.get("exp").meta["origin"]["requested_revision"] == "experiments"


# -- offline ------------------------------------------------------------------------------------
def test_offline_reads_the_cache_only(hub, tmp_path, monkeypatch):
    a = synthetic(12)
    published(hub, tmp_path, {"a": a, "b": synthetic(13)})
    online = H.pull(Catalog(tmp_path / "first"), "me/dnas")
    hub.requests.clear()

    cat = Catalog(tmp_path / "offline")
    rep = H.pull(cat, "me/dnas", offline=True)
    assert rep.from_cache and rep.offline and rep.revision == online.revision
    assert sorted(e.name for e in rep.entries) == ["a", "b"]
    assert_same_dna(a, cat.get("a"))
    online_files = {f for e in online.entries for f in e.files.items()}
    assert {f for e in rep.entries for f in e.files.items()} == online_files and hub.requests == []

    # HF_HUB_OFFLINE=1 set after huggingface_hub was imported still means offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rep = H.pull(Catalog(tmp_path / "env-offline"), "me/dnas", path="dnas/a.h5")
    assert rep.from_cache and [e.name for e in rep.entries] == ["a"] and hub.requests == []
    # a revision never pulled, or a repo never pulled: say how to get a cached copy
    with pytest.raises(H.HubOfflineError, match="no cached copy .*revision v2.*once with network access"):
        H.pull(cat, "me/dnas", revision="v2")
    with pytest.raises(H.HubOfflineError, match="no cached copy of dataset repo 'me/other'"):
        H.pull(cat, "me/other")
    assert hub.requests == []


def test_offline_detects_a_damaged_cache(hub, tmp_path):
    published(hub, tmp_path, {"a": synthetic(14, kinds=("hist",))})
    H.pull(Catalog(tmp_path / "first"), "me/dnas")
    blob = next((tmp_path / "hf" / "hub" / "datasets--me--dnas" / "blobs").glob("*"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    cat = Catalog(tmp_path / "reg")
    before = registry_state(cat.root)
    with pytest.raises(H.HubIntegrityError, match="does not match the Hub's checksum"):
        H.pull(cat, "me/dnas", offline=True)
    assert registry_state(cat.root) == before and not blob.exists()  # evicted: the next online pull re-downloads
    rep = H.pull(cat, "me/dnas")
    assert [e.name for e in rep.entries] == ["a"]


# -- failures leave the registry as it was ------------------------------------------------------
def test_corrupted_download_changes_nothing(hub, tmp_path):
    published(hub, tmp_path, {"a": synthetic(15, kinds=("hist",)), "b": synthetic(16, kinds=("hist",))})
    cat = Catalog(tmp_path / "reg")
    cat.put("keep", synthetic(17, kinds=("hist",)))
    before = registry_state(cat.root)
    hub.fault("dnas/b.h5", "corrupt")  # same size, one byte flipped: only the sha256 check can tell
    with pytest.raises(H.HubIntegrityError, match="dnas/b.h5 in me/dnas does not match the Hub's checksum"):
        H.pull(cat, "me/dnas")
    assert registry_state(cat.root) == before
    hub.fault("dnas/b.h5", None)
    rep = H.pull(cat, "me/dnas")  # the bad copy was evicted from the cache, so this downloads it again
    assert sorted(e.name for e in rep.entries) == ["a", "b"]


def test_invalid_dna_file_changes_nothing(hub, tmp_path):
    published(hub, tmp_path, {"a": synthetic(18, kinds=("hist",))})
    hub.commit("me/dnas", {"dnas/broken.h5": b"\x89HDF\r\n\x1a\n" + b"not really hdf5" * 100})
    cat = Catalog(tmp_path / "reg")
    before = registry_state(cat.root)
    with pytest.raises(FormatError, match="dnas/broken.h5 in me/dnas is not a valid vdna entry"):
        H.pull(cat, "me/dnas")
    assert registry_state(cat.root) == before
    H.pull(cat, "me/dnas", path="dnas/a.h5")
    assert cat.names() == ["a"]


def test_killed_pull_changes_nothing(hub, tmp_path, vdna, registry_dir):
    """A real `vdna pull` process killed mid-download leaves the registry as it was."""
    published(hub, tmp_path, {"a": synthetic(19, kinds=("hist",)), "b": synthetic(20, kinds=("hist",))})
    cat = Catalog(registry_dir)
    cat.put("keep", synthetic(21, kinds=("hist",)))
    before = registry_state(registry_dir)
    hub.fault("dnas/b.h5", "stall")
    env = dict(os.environ, VDNA_REGISTRY=str(registry_dir), HF_HUB_OFFLINE="0", NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "vdnacli", "pull", "me/dnas"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert hub.stalled.wait(60), "the pull never reached the second file"
        assert registry_state(registry_dir) == before  # a.h5 is downloaded and parsed, nothing written yet
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert registry_state(registry_dir) == before
    hub.fault("dnas/b.h5", None)
    hub.release()
    r = vdna("pull", "me/dnas", "--json", env={"HF_HUB_OFFLINE": "0"})
    assert r.code == 0, r.stderr
    assert sorted(e["name"] for e in r.json()["entries"]) == ["a", "b"]


# -- errors with the next step --------------------------------------------------------------------
def test_repo_revision_and_files_not_found(hub, tmp_path):
    cat = Catalog(tmp_path / "reg")
    with pytest.raises(H.HubNotFoundError, match="no dataset repo 'me/nothing' on http://127.0.0.1.*--repo-type"):
        H.pull(cat, "me/nothing")
    hub.add_repo("me/empty", {"README.md": b"# nothing here\n", "data/train.csv": b"a,b\n"})
    with pytest.raises(H.HubNotFoundError, match="holds no DNA files .*dnas/<name>.h5"):
        H.pull(cat, "me/empty")
    with pytest.raises(H.HubNotFoundError, match="has no revision 'v9'"):
        H.pull(cat, "me/empty", revision="v9")
    with pytest.raises(ConfigError, match="unknown repo type"):
        H.pull(cat, "me/empty", repo_type="bucket")
    with pytest.raises(ConfigError, match="invalid repo id"):
        H.pull(cat, "not a/valid//id")
    assert cat.names() == []


def test_private_and_gated_repos_need_a_token(hub, tmp_path, monkeypatch):
    cat_pub = Catalog(tmp_path / "pub")
    d = synthetic(22, kinds=("hist",))
    cat_pub.put("a", d)
    monkeypatch.setenv("HF_TOKEN", WRITE)
    H.push(cat_pub, "a", "me/secret", private=True)
    commit = H.push(cat_pub, "a", "me/gated").commit
    hub.repos[("dataset", "me/gated")].gated = True
    monkeypatch.delenv("HF_TOKEN")
    cat = Catalog(tmp_path / "reg")
    with pytest.raises(H.HubNotFoundError, match="if it is private, authenticate .*HF_TOKEN.*hf auth login"):
        H.pull(cat, "me/secret")
    with pytest.raises(H.HubAuthError, match="gated repo: accept its conditions at .*/datasets/me/gated.*HF_TOKEN"):
        H.pull(cat, "me/gated")
    monkeypatch.setenv("HF_TOKEN", READ)  # a token without access to the gated repo
    with pytest.raises(H.HubAuthError, match="no access yet: accept its conditions"):
        H.pull(cat, "me/gated")
    assert cat.names() == []
    H.pull(cat, "me/secret")  # any valid token reads the private repo
    monkeypatch.setenv("HF_TOKEN", WRITE)
    rep = H.pull(cat, "me/gated", name="gated-a")
    assert rep.revision == commit and sorted(cat.names()) == ["a", "gated-a"]


def test_network_error_and_cached_fallback(hub, tmp_path, monkeypatch):
    published(hub, tmp_path, {"a": synthetic(23, kinds=("hist",))})
    cat = Catalog(tmp_path / "reg")
    first = H.pull(cat, "me/dnas")
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(H.HubNetworkError, match=f"cannot reach {dead} .*--offline"):
        H.pull(cat, "me/never-pulled")
    # offline-first: an unreachable Hub falls back to the cached copy of the same revision, and says so
    rep = H.pull(Catalog(tmp_path / "reg2"), "me/dnas")
    assert rep.from_cache and rep.revision == first.revision
    assert any("unreachable" in w and "cached copy" in w for w in rep.warnings)


def test_incompatible_extractor_is_refused(hub, tmp_path):
    toy = {"block1": 5, "block2": 3}
    published(hub, tmp_path, {"ok": synthetic(24, kinds=("hist",)),
                              "odd": synthetic(25, kinds=("hist",), layers=toy)})
    cat = Catalog(tmp_path / "reg")
    before = registry_state(cat.root)
    with pytest.raises(IncompatibleDNAError, match="'efficientnet-lite0' but has 2 layers / 8 neurons .* 8 layers / "
                                                   "2064 neurons"):
        H.pull(cat, "me/dnas")
    assert registry_state(cat.root) == before
    # other weights for a known extractor, or an extractor this vdna lacks: imported, with a warning
    published(hub, tmp_path, {"w": synthetic(26, kinds=("hist",), weights="f" * 64),
                              "u": synthetic(27, kinds=("hist",), extractor="mystery-net", layers=toy)}, repo="me/warn")
    rep = H.pull(cat, "me/warn")
    assert sorted(e.name for e in rep.entries) == ["u", "w"]
    assert any("other 'efficientnet-lite0' weights" in w for w in rep.warnings)
    assert any("'mystery-net' is not available" in w for w in rep.warnings)


def test_push_errors(hub, tmp_path, monkeypatch):
    cat = Catalog(tmp_path / "reg")
    cat.put("a", synthetic(28, kinds=("hist",)))
    with pytest.raises(H.HubAuthError, match="write access: set HF_TOKEN or run 'hf auth login'"):
        H.push(cat, "a", "me/new")
    assert ("POST", "/api/repos/create") not in hub.requests
    monkeypatch.setenv("HF_TOKEN", READ)
    with pytest.raises(H.HubAuthError, match=r"denied \(403\).*write access"):
        H.push(cat, "a", "me/new")
    monkeypatch.setenv("HF_TOKEN", WRITE)
    with pytest.raises(EntryNotFoundError):
        H.push(cat, "missing", "me/new")
    H.push(cat, "a", "me/public")
    rep = H.push(cat, "a", "me/public", private=True)
    assert any("already exists and is public" in w for w in rep.warnings)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(H.HubOfflineError, match="pushing needs the network"):
        H.push(cat, "a", "me/public")


# -- masks ---------------------------------------------------------------------------------------
def test_masks_travel_with_their_dna(hub, tmp_path, monkeypatch):
    masks = pytest.importorskip("vdnacli.masks")
    monkeypatch.setenv("HF_TOKEN", WRITE)
    cat = Catalog(tmp_path / "pub")
    a, b = synthetic(29, kinds=("hist",)), synthetic(30, kinds=("hist",))
    cat.put("a", a)
    focus = masks.create_focus_mask([a], [b], top=10)
    cat.put_mask("hats", focus)
    toy = {"block1": 5, "block2": 3}
    other = masks.create_focus_mask([synthetic(31, ("hist",), layers=toy, extractor="mystery-net")],
                                    [synthetic(32, ("hist",), layers=toy, extractor="mystery-net")], top=2)
    cat.put_mask("other-net", other)
    rep = H.push(cat, "a", "me/masked", with_masks=True)
    assert rep.masks == ["hats"] and "masks/hats.h5" in hub.files("me/masked")
    assert ("mask", "hats") in list(H.iter_card_sections(hub.files("me/masked")["README.md"].decode()))
    monkeypatch.delenv("HF_TOKEN")
    dst = Catalog(tmp_path / "reg")
    got = H.pull(dst, "me/masked")
    assert sorted((e.kind, e.name) for e in got.entries) == [("dna", "a"), ("mask", "hats")]
    pulled = dst.get_mask("hats")
    assert pulled.kind == "focus" and pulled.extractor == SPEC.name
    for l in focus.weights:
        np.testing.assert_array_equal(pulled.weights[l], focus.weights[l])


# -- the command line ---------------------------------------------------------------------------
def test_cli_push_and_pull(hub, tmp_path, vdna, registry_dir):
    Catalog(registry_dir).put("syn", synthetic(33))
    online = {"HF_HUB_OFFLINE": "0", "HF_TOKEN": WRITE}
    r = vdna("push", "syn", "me/cli", "--json", env=online)
    assert r.code == 0, r.stderr
    pushed = r.json()
    assert pushed["repo_id"] == "me/cli" and pushed["commit"] == hub.head("me/cli")
    assert pushed["dropped"] == ["origin.source_name"] and list(pushed["files"]) == ["dnas/syn.h5"]

    other = tmp_path / "other"
    r = vdna("pull", "me/cli", "--name", "copy", "--registry", other, "--json", env={"HF_HUB_OFFLINE": "0"})
    assert r.code == 0, r.stderr
    got = r.json()
    assert got["revision"] == pushed["commit"] and got["entries"][0]["name"] == "copy"
    assert got["entries"][0]["files"] == pushed["files"]
    assert_same_dna(Catalog(registry_dir).get("syn"), Catalog(other).get("copy"))
    r = vdna("compare", "copy", "copy", "--registry", other, "--json")
    assert r.code == 0, r.stderr

    # the vdna fixture runs with HF_HUB_OFFLINE=1: the cache answers, the Hub is not asked
    hub.requests.clear()
    r = vdna("pull", "me/cli", "--registry", tmp_path / "third")
    assert r.code == 0, r.stderr
    assert "from dataset me/cli" in r.stdout and "the cache" in r.stdout
    assert hub.requests == []

    # errors: one line, the exit code of their class (docs/cli.md), the next step named
    r = vdna("pull", "me/missing", env={"HF_HUB_OFFLINE": "0"})
    assert r.code == 3 and r.stderr.strip().splitlines()[-1].startswith("error: no dataset repo 'me/missing'")
    assert "Traceback" not in r.stderr
    r = vdna("pull", "me/missing", "--offline")
    assert r.code == 6 and "run 'vdna pull me/missing' once with network access" in r.stderr
    r = vdna("push", "syn", env={"HF_HUB_OFFLINE": "0"})
    assert r.code == 1 and "give the repo id" in r.stderr
    r = vdna("push", "syn", "me/cli")  # the fixture's HF_HUB_OFFLINE=1
    assert r.code == 6 and "pushing needs the network" in r.stderr


@pytest.mark.slow
def test_real_dna_round_trip(hub, tmp_path, monkeypatch, sample_dirs, lite0):
    """A real EfficientNet-Lite0 DNA (2,064 neurons x 1000 bins, hist + gauss) survives push and pull exactly."""
    from vdnacli.pipeline import compute_dna
    from vdnacli.sources import list_images

    from vdnacli.pipeline import Run
    from vdnacli.settings import ComputeSettings

    real, _ = compute_dna(list_images(sample_dirs["faces-a"]), lite0,
                          ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist", "gauss")), Run(batch_size=16),
                          name="faces-a")
    monkeypatch.setenv("HF_TOKEN", WRITE)
    cat = Catalog(tmp_path / "pub")
    cat.put("faces-a", real)
    rep = H.push(cat, "faces-a", "me/real")
    dst = Catalog(tmp_path / "reg")
    got = H.pull(dst, "me/real")
    assert got.warnings == [] and got.revision == rep.commit
    assert_same_dna(cat.get("faces-a"), dst.get("faces-a"))
    assert dst.compare("faces-a", "faces-a").distance == 0.0


def test_pull_reports_bytes_downloaded(hub, tmp_path):
    published(hub, tmp_path, {"a": synthetic(12), "b": synthetic(13)})
    calls = []
    rep = H.pull(Catalog(tmp_path / "reg"), "me/dnas", progress=lambda done, total: calls.append((done, total)))
    assert sorted(e.name for e in rep.entries) == ["a", "b"]
    assert calls, "pull called progress while downloading"
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] > 0, calls[-3:]
