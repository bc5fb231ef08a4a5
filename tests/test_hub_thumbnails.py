"""Thumbnails are private: `push` leaves them out unless asked, and the card says which
(the real huggingface_hub client against the loopback fake Hub of tests/test_hub.py)."""
from __future__ import annotations

import hashlib

import numpy as np

from test_hub import WRITE, hub, no_internet, synthetic  # noqa: F401 (fixtures)
from vdnacli import hub as H
from vdnacli.catalog import Catalog
from vdnacli.dna import images_digest
from vdnacli.sources import list_images
from vdnacli.thumbnails import collect


def test_push_keeps_thumbnails_private_unless_asked(hub, sample_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE)
    refs = list_images(sample_dirs["faces-a"])[:6]
    dna = synthetic(1)
    dna.image_hashes = _hashes(refs)
    dna.meta["num_images"] = len(dna.image_hashes)
    dna.meta["images_sha256"] = images_digest(dna.image_hashes)
    dna.thumbnails = collect(refs, dna.image_hashes, 4)
    cat = Catalog(tmp_path / "alice")
    cat.put("faces", dna)

    H.push(cat, "faces", "me/private")
    dst = Catalog(tmp_path / "bob")
    H.pull(dst, "me/private")
    assert dst.thumbnails("faces") is None
    assert "Thumbnails: none published." in hub.files("me/private")["README.md"].decode()

    H.push(cat, "faces", "me/shown", with_thumbnails=True)
    H.pull(dst, "me/shown", name="shown")
    assert dst.thumbnails("shown").images == dna.thumbnails.images
    assert "Thumbnails: 4 published." in hub.files("me/shown")["README.md"].decode()
    assert dst.registry.verify("shown") == []


def _hashes(refs):
    hs = sorted({hashlib.sha256(r.read_bytes()).digest()[:16] for r in refs})
    return np.frombuffer(b"".join(hs), dtype=np.uint8).reshape(-1, 16).copy()
