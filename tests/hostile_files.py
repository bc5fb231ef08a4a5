"""Hostile entry files for the memory and number checks (issue 14, rows 2, 6 and 8).

Each builder writes one entry file with valid format attributes and checksums where it has
data, so that only the size and number checks can refuse it. Shared by tests/test_hardening.py
and bench/hostile_memory.py (which also measures the peak memory of `verify` and `pull` on them).
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from registry.layout import FORMAT, FORMAT_VERSION, array_sha256

LITE0_LAYERS = [["blocks.0", 16], ["blocks.1", 24], ["blocks.2", 40], ["blocks.3", 80], ["blocks.4", 112],
                ["blocks.5", 192], ["blocks.6", 320], ["conv_head", 1280]]


def dna_meta(layers=None, bins: int = 16, num_images: int = 4, kinds=("hist",)) -> dict:
    return {"format": "vdna-dna", "extractor": "mystery-net", "weights_sha256": "w" * 64, "ranges_sha256": "r" * 64,
            "layers": [list(x) for x in (layers or [["l1", 6], ["l2", 4]])], "bins": bins, "kinds": list(kinds),
            "num_images": num_images, "preprocessing": {}, "precision": "fp32"}


def _file(path: Path, name: str, meta: dict, checksums: dict) -> h5py.File:
    f = h5py.File(path, "w")
    f.attrs["format"], f.attrs["format_version"], f.attrs["name"] = FORMAT, FORMAT_VERSION, name
    f.attrs["meta"] = json.dumps(meta)
    f.attrs["checksums"] = json.dumps(checksums)
    return f


def consistent(path: Path, name: str, meta: dict, hist_dtype=np.int64, value: int | None = None) -> None:
    """A DNA whose arrays match its metadata (counts `value`, or 1 image's worth per neuron)."""
    bins, n_img = meta["bins"], meta["num_images"]
    arrays = {}
    for l, n in meta["layers"]:
        h = np.zeros((n, bins), dtype=hist_dtype)
        h[:, 0] = n_img if value is None else value
        arrays[f"hist/{l}"] = h
    with _file(path, name, meta, {k: array_sha256(a) for k, a in arrays.items()}) as f:
        for k, a in arrays.items():
            f.create_dataset(k, data=a)


def unwritten(path: Path, name: str, meta: dict, shapes: dict[str, tuple], chunks: bool = True,
              compression: str | None = "gzip", written_rows: int = 0) -> None:
    """Datasets that declare `shapes` (int64) but hold no data (reads return the fill value), or
    only their first `written_rows` rows."""
    with _file(path, name, meta, {k: "0" * 64 for k in shapes}) as f:
        for k, shape in shapes.items():
            ch = (min(shape[0], 64), *shape[1:]) if chunks else None
            ds = f.create_dataset(k, shape=shape, dtype=np.int64, chunks=ch, compression=compression if chunks else None)
            if written_rows:
                ds[:written_rows] = 1


def zero_bomb(path: Path, name: str, meta: dict, shapes: dict[str, tuple], dtype=np.uint8) -> None:
    """Datasets of zeros, really written, gzip level 9: a small file that inflates ~1000x."""
    with _file(path, name, meta, {}) as f:
        sums = {}
        for k, shape in shapes.items():
            ds = f.create_dataset(k, shape=shape, dtype=dtype, chunks=(min(shape[0], 256), *shape[1:]),
                                  compression="gzip", compression_opts=9)
            block = np.zeros((min(shape[0], 256), *shape[1:]), dtype=dtype)
            for start in range(0, shape[0], block.shape[0]):
                stop = min(start + block.shape[0], shape[0])
                ds[start:stop] = block[: stop - start]
            sums[k] = array_sha256(np.zeros(shape, dtype=dtype)) if np.prod(shape) < 1 << 26 else "0" * 64
        f.attrs["checksums"] = json.dumps(sums)


def cases(small: bool = True) -> dict[str, tuple[str, callable]]:
    """name -> (what the file is, builder(path, name)). `small=False` adds the slow zero bomb."""
    lite0 = dna_meta(LITE0_LAYERS, bins=1000)
    out = {
        "unknown-key-8GiB-unwritten": (
            "a DNA with one extra dataset declaring 2^20 x 2^10 int64 (8 GiB), never written (issue 14 row 2)",
            lambda p, n: unwritten(p, n, lite0, {"hist/conv_head": (1280, 1000), "extra/blob": (1 << 20, 1 << 10)})),
        "hist-beyond-meta-unwritten": (
            "a 16-neuron layer whose histogram declares 10^6 x 1000 int64 (8 GB)",
            lambda p, n: unwritten(p, n, lite0, {"hist/blocks.0": (10**6, 1000)})),
        "meta-claims-500k-neurons-unwritten": (
            "metadata claiming a 500,000-neuron layer, its 4 GB histogram never written",
            lambda p, n: unwritten(p, n, dna_meta([["x", 500_000]], bins=1000), {"hist/x": (500_000, 1000)})),
        "every-layer-unwritten": (
            "a Lite0 DNA whose 8 histograms have the right shapes and were never written",
            lambda p, n: unwritten(p, n, lite0, {f"hist/{l}": (k, 1000) for l, k in LITE0_LAYERS})),
        "first-chunk-only": (
            "a 500,000-neuron histogram with its first 64 rows written, the rest fill values (uncompressed chunks)",
            lambda p, n: unwritten(p, n, dna_meta([["x", 500_000]], bins=1000), {"hist/x": (500_000, 1000)},
                                   compression=None, written_rows=64)),
        "num-images-10e400": (
            "num_images = 10**400 (issue 14 row 6)",
            lambda p, n: consistent(p, n, dna_meta(num_images=10**400), value=4)),
        "uint64-counts-above-int64": (
            "uint64 histogram counts of 2^63 + 5 (issue 14 row 8)",
            lambda p, n: consistent(p, n, dna_meta(num_images=1), hist_dtype=np.uint64, value=2**63 + 5)),
    }
    if not small:
        out["zero-bomb-1.6GB"] = (
            "metadata of 2,048 neurons x 100,000 bins; uint8 zeros written with gzip 9 (205 MB of values in a "
            "small file, 1.6 GB once widened to int64)",
            lambda p, n: zero_bomb(p, n, dna_meta([["x", 2048]], bins=100_000), {"hist/x": (2048, 100_000)}))
    return out
