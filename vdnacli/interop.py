"""The upstream `vdna` 0.1.1 file pair: <stem>.json (metadata) + <stem>.npz (arrays).

Histograms: one int32 array [neurons, bins] per layer; Gaussians: "mu-<layer>" and
"var-<layer>" float32. Our own metadata travels under the extra key "vdnacli" so a
round trip is lossless; upstream readers ignore it.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from vdnacli import __version__
from vdnacli.dna import DNA, Gaussian, new_meta
from vdnacli.errors import FormatError, SourceError

MAX_ARRAY_BYTES = 2 << 30  # refuse arrays that would not fit a sane DNA
UPSTREAM_EXTRACTORS = {  # upstream feature_extractor_name -> ours
    "mugs_vit_base": "mugs-vit-b16",
    "mugs_vit_large": "mugs-vit-l16",
    "dino_vit_base": "dino-vit-b16",
    "dino_resnet50": "dino-resnet50",
    "clip_im_vit_b16": "clip-vit-b16",
    "inception": "inception-v3",
    "vgg16": "vgg16",
    "rand_resnet50": "rand-resnet50",
}
_REVERSE = {v: k for k, v in UPSTREAM_EXTRACTORS.items()}


def _stem(path: Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".npz") else path


def export_upstream(dna: DNA, path: Path) -> tuple[Path, Path]:
    """Write the pair; returns (json, npz). Histograms take the DNA's hist, else its Gaussian."""
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    layers = dna.layers
    if dna.hist is not None:
        arrays = {}
        for l in layers:
            h = dna.hist[l]
            arrays[l] = h.astype(np.int32) if h.max(initial=0) <= np.iinfo(np.int32).max else h
        kind, dist = "histogram", {"hist_nb_bins": dna.meta["bins"]}
        name = f"histogram-{dna.meta['bins']}"
    elif dna.gauss is not None:
        arrays = {}
        for l in layers:
            arrays["mu-" + l] = dna.gauss[l].mean.astype(np.float32)
            arrays["var-" + l] = dna.gauss[l].var.astype(np.float32)
        kind, dist, name = "gaussian", {}, "gaussian"
    else:
        raise FormatError("this DNA holds no distributions to export")
    pre = dna.meta.get("preprocessing", {})
    meta = {
        "time_of_compute": dna.meta.get("created"),
        "vdna_version": f"vdnacli-{__version__}",
        "distribution": dist,
        "type": kind,
        "name": name,
        "data_settings": {"source": "not recorded", "crop_to_square_pre_resize": "center" if pre.get("crop") == "center" else "none",
                          "resize_mode": "clean", "num_images": dna.num_images},
        "extraction_settings": {"range_scale_for_norm_params": 1.2, "hist_range": [-1.0, 1.0],
                                "hist_nb_bins": dna.meta.get("bins") or 0},
        "num_images": dna.num_images,
        "feature_extractor_name": _REVERSE.get(dna.meta["extractor"], dna.meta["extractor"]),
        "neurons_list": layers,
        "vdnacli": {k: v for k, v in dna.meta.items() if k != "name"},
    }
    jpath, npath = stem.with_suffix(".json"), stem.with_suffix(".npz")
    tmp_n = npath.with_name(npath.name + ".part.npz")
    np.savez_compressed(tmp_n, **arrays)
    tmp_n.replace(npath)
    tmp_j = jpath.with_name(jpath.name + ".part")
    tmp_j.write_text(json.dumps(meta, indent=2) + "\n")
    tmp_j.replace(jpath)
    return jpath, npath


def _check_npy_headers(path: Path) -> None:
    """Refuse a member whose header declares more bytes than it holds: np.load allocates
    the declared shape before reading, so a forged header could ask for terabytes."""
    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = npy.read_magic(f)
                readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
                if version not in readers:
                    raise FormatError(f"{path.name}: {info.filename} uses .npy format {version}")
                shape, _, dtype = readers[version](f)  # a literal dict: nothing is unpickled
            declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if declared > min(MAX_ARRAY_BYTES, info.file_size):
                raise FormatError(f"{path.name}: {info.filename} declares {list(shape)} {dtype} "
                                  f"({declared >> 20} MiB) but holds {info.file_size >> 20} MiB")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(i.file_size for i in z.infolist())
        if total > MAX_ARRAY_BYTES:
            raise FormatError(f"{path.name}: arrays are too large ({total >> 20} MiB)")
        _check_npy_headers(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FormatError:
        raise
    except MemoryError:
        raise FormatError(f"{path.name}: arrays are too large to load") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise FormatError(f"{path.name}: not a plain NumPy .npz archive ({str(e).splitlines()[0][:120]})") from None


def import_upstream(path: Path) -> DNA:
    """Read a pair written by upstream vdna (or by export_upstream)."""
    stem = _stem(path)
    jpath, npath = stem.with_suffix(".json"), stem.with_suffix(".npz")
    for p in (jpath, npath):
        if not p.is_file():
            raise SourceError(f"missing {p} (an upstream DNA is a <stem>.json + <stem>.npz pair)")
    try:
        meta = json.loads(jpath.read_text())
    except (ValueError, OSError) as e:
        raise FormatError(f"{jpath.name} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{jpath.name} must hold a JSON object")
    arrays = _load_npz(npath)
    try:
        kind = meta["type"]
        layers = {str(k): int(v) for k, v in meta["neurons_list"].items()}
        num_images = int(meta["num_images"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FormatError(f"{jpath.name} lacks type, neurons_list or num_images") from None
    if num_images < 0 or any(n < 1 for n in layers.values()):
        raise FormatError(f"{jpath.name}: num_images and neuron counts must be positive")
    ours = meta.get("vdnacli") if isinstance(meta.get("vdnacli"), dict) else None
    if ours is not None:
        m = dict(ours)
    else:
        ext = str(meta.get("feature_extractor_name", "unknown"))
        m = new_meta(
            extractor=UPSTREAM_EXTRACTORS.get(ext, ext),
            weights_sha256=None,
            ranges_sha256=None,
            layers=layers,
            bins=int((meta.get("distribution") or {}).get("hist_nb_bins", 0) or 0),
            preprocessing={"crop": (meta.get("data_settings") or {}).get("crop_to_square_pre_resize", "unknown"),
                           "upstream": True},
            kinds=["hist"] if kind == "histogram" else ["gauss"],
        )
        m["origin"] = {"kind": "upstream-vdna", "vdna_version": meta.get("vdna_version"),
                       "time_of_compute": meta.get("time_of_compute")}
    m["num_images"] = num_images
    m["layers"] = [[l, n] for l, n in layers.items()]
    if kind == "histogram":
        bins = int(m.get("bins") or (meta.get("distribution") or {}).get("hist_nb_bins", 0))
        m["bins"], m["kinds"] = bins, ["hist"]
        hist = {}
        for l, n in layers.items():
            h = arrays.get(l)
            if h is None or h.shape != (n, bins) or h.dtype.kind not in "iu":
                raise FormatError(f"{npath.name}: layer {l!r} must be an integer array [{n}, {bins}]")
            if h.size and h.min() < 0:
                raise FormatError(f"{npath.name}: layer {l!r} has negative counts")
            hist[l] = h.astype(np.int64)
        return DNA(meta=m, hist=hist)
    if kind == "gaussian":
        m["kinds"], m["bins"] = ["gauss"], None
        gauss = {}
        for l, n in layers.items():
            mu, var = arrays.get("mu-" + l), arrays.get("var-" + l)
            if mu is None or var is None or mu.shape != (n,) or var.shape != (n,):
                raise FormatError(f"{npath.name}: layer {l!r} needs mu/var arrays of {n} values")
            if not (np.isfinite(mu).all() and np.isfinite(var).all()) or (var < 0).any():
                raise FormatError(f"{npath.name}: layer {l!r} has non-finite or negative values")
            mu, var = mu.astype(np.float64), var.astype(np.float64)
            c = num_images
            gauss[l] = Gaussian(c, mu * c, var * max(c - 1, 0) + mu * mu * c)
        return DNA(meta=m, gauss=gauss)
    raise FormatError(f"{jpath.name}: unsupported DNA type {kind!r} (histogram or gaussian)")
