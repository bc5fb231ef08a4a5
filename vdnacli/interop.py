"""The file pair of the paper's own code (vdna 0.1.1): <stem>.json (metadata) + <stem>.npz.

Every type vdna 0.1.1 writes is read: "histogram" (one int [neurons, bins] array per layer),
"gaussian" ("mu-<layer>", "var-<layer>" float32), "layer-gaussian" ("mu-<layer>" float64
[C], "sigma-<layer>" float64 [C, C]) and "activation-ranges" ("min-<layer>", "max-<layer>").
vdna 0.1.1 also stores one 0-d object member per layer (`data[layer] = {}`): such members
are skipped from their header alone, never unpickled. Histograms, Gaussians and layer
Gaussians are written in the same layout, loadable by vdna 0.1.1's own loader; our metadata
(and the activation ranges a histogram DNA keeps) travel under the extra JSON key "vdnacli",
which vdna 0.1.1 ignores, so a round trip is lossless.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from vdnacli import __version__
from vdnacli.dna import DNA, Gaussian, LayerGaussian, new_meta, ranges_record
from vdnacli.errors import ConfigError, FormatError, OutputError, SourceError, SourceNotFoundError
from vdnacli.extractors.identity import UPSTREAM_NAMES as UPSTREAM_EXTRACTORS  # re-export: vdna 0.1.1 name -> ours

MAX_ARRAY_BYTES = 2 << 30  # refuse arrays that would not fit a sane DNA
MAX_JSON_BYTES = 64 << 20  # a metadata file (with kept ranges of a large extractor: a few MB)
MAX_BINS = 100_000
MAX_IMAGES = 2**53  # image counts are exact integers in float64 and JSON
_LAYER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
TYPES = {"histogram": "hist", "gaussian": "gauss", "layer-gaussian": "layer-gauss"}
_REVERSE = {v: k for k, v in UPSTREAM_EXTRACTORS.items()}


def check_layer_name(name) -> str:
    """A layer name from a file: it becomes an HDF5 path and a zip member name, so only
    plain names pass (letters, digits, '_', '.', '+', '-'; no '/', no leading '.')."""
    if not isinstance(name, str) or not _LAYER.fullmatch(name):
        raise FormatError(f"invalid layer name {str(name)[:60]!r}")
    return name


def pair_paths(path: Path) -> tuple[Path, Path]:
    """(<stem>.json, <stem>.npz) for a stem, taken literally ("run.v1" -> "run.v1.json");
    a path that already ends in .json or .npz names its pair."""
    path = Path(path)
    if path.suffix in (".json", ".npz"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".npz")


# -- export ------------------------------------------------------------------------------------
def export_upstream(dna: DNA, path: Path, kind: str | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write the pair; returns (json, npz). `kind`: hist, gauss or layer-gauss (default: the
    first the DNA holds, in that order). An existing pair is refused unless `force`."""
    kinds = [k for k in ("hist", "gauss", "layer-gauss") if dna.data(k) is not None]
    if not kinds:
        raise FormatError("this DNA holds no distributions to export")
    kind = kind or kinds[0]
    if kind not in TYPES.values():
        raise ConfigError(f"unknown kind '{kind}'; choose from hist, gauss, layer-gauss")
    dna.require(kind)
    jpath, npath = pair_paths(path)
    if not force:
        for p in (jpath, npath):
            if p.exists():
                raise ConfigError(f"{p} exists; pass --force to overwrite it")
    layers = {check_layer_name(l): n for l, n in dna.layers.items()}
    arrays, dist = _export_arrays(dna, kind, layers)
    upstream_type = {v: k for k, v in TYPES.items()}[kind]
    name = f"histogram-{dna.meta['bins']}" if kind == "hist" else upstream_type
    pre = dna.meta.get("preprocessing") or {}
    ours = {k: v for k, v in dna.meta.items() if k not in ("name", "shards")}  # the pair has no room for shards
    if kind == "hist" and dna.ranges is not None:
        ours["ranges_values"] = {l: {"min": dna.ranges.mins[l].tolist(), "max": dna.ranges.maxs[l].tolist()}
                                 for l in layers}
    meta = {
        "time_of_compute": dna.meta.get("created"),
        "vdna_version": f"vdnacli-{__version__}",
        "distribution": dist,
        "type": upstream_type,
        "name": name,
        "data_settings": {"source": "not recorded",
                          "crop_to_square_pre_resize": pre.get("crop") if pre.get("crop") in ("center", "none", "random")
                          else "none",
                          "resize_mode": pre.get("resize") if pre.get("resize") in ("clean", "legacy_pytorch")
                          else "clean",
                          "num_images": dna.num_images},
        "extraction_settings": {"range_scale_for_norm_params": 1.2, "hist_range": [-1.0, 1.0],
                                "hist_nb_bins": dna.meta.get("bins") or 0},
        "num_images": dna.num_images,
        "feature_extractor_name": _REVERSE.get(dna.meta["extractor"], dna.meta["extractor"]),
        "neurons_list": layers,
        "vdnacli": ours,
    }
    _write_pair_files(jpath, npath, [lambda f: np.savez_compressed(f, **arrays),
                                     lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode())], force)
    return jpath, npath


def _export_arrays(dna: DNA, kind: str, layers: dict) -> tuple[dict, dict]:
    arrays = {}
    if kind == "hist":
        for l in layers:
            h = dna.hist[l]
            arrays[l] = h.astype(np.int32) if h.max(initial=0) <= np.iinfo(np.int32).max else h
        return arrays, {"hist_nb_bins": dna.meta["bins"]}
    if kind == "gauss":
        for l in layers:
            arrays["mu-" + l] = dna.gauss[l].mean.astype(np.float32)
            arrays["var-" + l] = dna.gauss[l].var.astype(np.float32)
        return arrays, {}
    for l in layers:
        arrays["mu-" + l] = dna.layer_gauss[l].mean.astype(np.float64)
        arrays["sigma-" + l] = dna.layer_gauss[l].cov.astype(np.float64)
    return arrays, {}


def _write_pair_files(jpath: Path, npath: Path, writers: list, force: bool) -> None:
    """Both files of a pair written through fresh temp files in their folder (O_EXCL: never
    through a planted link), fsynced, then put in place together: a full disk, a quota, a
    read-only folder or a permission stops the export with one OutputError, the temp files
    removed and nothing in place. An existing file is refused unless `force`."""
    from registry.errors import os_error_text

    temps: list[Path] = []
    try:
        jpath.parent.mkdir(parents=True, exist_ok=True)
        for target, write in zip((npath, jpath), writers):
            temps.append(_temp_beside(target))
            fd = os.open(temps[-1], os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        placed: list[Path] = []
        try:
            for tmp, target in zip(temps, (npath, jpath)):
                if force:
                    os.replace(tmp, target)
                else:
                    os.link(tmp, target)  # atomic and never replaces: a pair that appeared meanwhile is kept
                    placed.append(target)
        except BaseException:
            for p in placed:  # never half a pair
                _unlink(p)
            raise
    except FileExistsError as e:
        raise ConfigError(f"{e.filename2 or e.filename} exists; pass --force to overwrite it") from None
    except OSError as e:
        raise OutputError(f"cannot export to {jpath} and {npath.name}: {os_error_text(e)}; nothing was written") from None
    finally:
        for tmp in temps:
            _unlink(tmp)


def _temp_beside(target: Path) -> Path:
    """A fresh, exclusively created temp file in the target's folder."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for attempt in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
        try:
            os.close(os.open(tmp, flags, 0o644))
            return tmp
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a temporary file beside {target}")


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


# -- reading -------------------------------------------------------------------------------------
# Values are widened to 8 bytes (int64 counts, float64 sums) once read: a pair may declare at most
# max(_FILE_FLOOR, _FILE_RATIO x its .npz size) of them, counted at 8 bytes each, as an entry file
# may (registry/layout.py): a compression bomb whose shapes match its own JSON is refused too.
_FILE_FLOOR = 128 << 20
_FILE_RATIO = 128

Expected = dict  # member name without .npy -> (shape, dtype kinds "iu" / "f" / "iuf")


def _npy_members(path: Path, expected: Expected | None = None) -> dict[str, tuple[zipfile.ZipInfo, tuple, np.dtype]]:
    """{member name without .npy: (zip info, shape, dtype)} from the headers alone. Object
    members are left out (vdna 0.1.1 writes one per layer); a member whose header declares
    more bytes than it holds is refused (np.load would allocate the declared shape first).
    With `expected` (what the pair's JSON promises), only those members are kept and each must
    declare exactly its shape and a dtype of its kind; the total is capped by the file's size."""
    from numpy.lib import format as npy

    out = {}
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        if sum(i.file_size for i in infos) > MAX_ARRAY_BYTES:
            raise FormatError(f"{path.name}: arrays are too large ({sum(i.file_size for i in infos) >> 20} MiB)")
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise FormatError(f"{path.name}: member {info.filename[:60]!r} is not a .npy array")
            key = info.filename[: -len(".npy")]
            if expected is not None and key not in expected:
                continue  # not part of this DNA (vdna 0.1.1's per-layer object members): never read
            with z.open(info) as f:
                version = npy.read_magic(f)
                readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
                if version not in readers:
                    raise FormatError(f"{path.name}: {info.filename} uses .npy format {version}")
                shape, _, dtype = readers[version](f)  # a literal dict: nothing is unpickled
            if dtype.hasobject:
                continue
            declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if declared > min(MAX_ARRAY_BYTES, info.file_size):
                raise FormatError(f"{path.name}: {info.filename} declares {list(shape)} {dtype} "
                                  f"({declared >> 20} MiB) but holds {info.file_size >> 20} MiB")
            if expected is not None:
                want, kinds = expected[key]
                if tuple(shape) != tuple(want) or dtype.kind not in kinds:
                    raise FormatError(f"{path.name}: {info.filename} declares {list(shape)} {dtype}; the pair's "
                                      f"JSON makes it {list(want)} of {_KIND_WORDS[kinds]}")
            out[key] = (info, tuple(shape), dtype)
    widened = 8 * sum(int(np.prod(shape, dtype=np.float64)) for _, shape, _ in out.values())
    size = path.stat().st_size
    if widened > max(_FILE_FLOOR, _FILE_RATIO * size):
        raise FormatError(f"{path.name}: its arrays declare {widened // 8:,} values for a file of {size:,} bytes "
                          "(a compression bomb?)")
    return out


_KIND_WORDS = {"iu": "integers", "f": "floats", "iuf": "numbers"}


def _load_npz(path: Path, expected: Expected | None = None) -> dict[str, np.ndarray]:
    """Every numeric member of an .npz (with `expected`: those it names, checked from their
    headers first), read one by one with allow_pickle=False."""
    from numpy.lib import format as npy

    try:
        members = _npy_members(path, expected)
        arrays = {}
        with zipfile.ZipFile(path) as z:
            for key, (info, _, _) in members.items():
                with z.open(info) as f:
                    arrays[key] = npy.read_array(f, allow_pickle=False)
        return arrays
    except FormatError:
        raise
    except MemoryError:
        raise FormatError(f"{path.name}: arrays are too large to load") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise FormatError(f"{path.name}: not a plain NumPy .npz archive ({str(e).splitlines()[0][:120]})") from None


def read_meta(path: Path) -> tuple[dict, Path, Path]:
    """(metadata, json path, npz path) of a pair: the JSON, checked for plain form."""
    jpath, npath = pair_paths(path)
    for p in (jpath, npath):
        if not p.is_file():
            raise SourceNotFoundError(f"missing {p} (a vdna 0.1.1 DNA is a <stem>.json + <stem>.npz pair)")
    try:
        if jpath.stat().st_size > MAX_JSON_BYTES:
            raise FormatError(f"{jpath.name} is too large for DNA metadata")
        meta = json.loads(jpath.read_text())
    except (ValueError, OSError, RecursionError) as e:
        raise FormatError(f"{jpath.name} is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{jpath.name} must hold a JSON object")
    return meta, jpath, npath


def read_pair(path: Path, expected: Expected | None = None) -> tuple[dict, dict[str, np.ndarray], Path, Path]:
    """(metadata, arrays, json path, npz path) of a pair, each part checked for plain form."""
    meta, jpath, npath = read_meta(path)
    return meta, _load_npz(npath, expected), jpath, npath


def _expected(kind: str, layers: dict[str, int], bins: int | None) -> Expected:
    """The members a DNA of `kind` over `layers` holds, with their shapes: what the JSON promises."""
    out = {}
    for l, n in layers.items():
        if kind == "hist":
            out[l] = ((n, bins), "iu")
        elif kind == "gauss":
            out["mu-" + l], out["var-" + l] = ((n,), "f"), ((n,), "f")
        elif kind == "layer-gauss":
            out["mu-" + l], out["sigma-" + l] = ((n,), "f"), ((n, n), "f")
        else:  # activation ranges
            out["min-" + l], out["max-" + l] = ((n,), "iuf"), ((n,), "iuf")
    return out


def _layers_of(meta: dict, jname: str) -> dict[str, int]:
    try:
        layers = {check_layer_name(str(k)): int(v) for k, v in meta["neurons_list"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FormatError(f"{jname} lacks a neurons_list of layer: neurons") from None
    if not layers or any(not 1 <= n <= 1 << 20 for n in layers.values()):
        raise FormatError(f"{jname}: neuron counts must be between 1 and 2^20")
    return layers


def _count(value, what: str, jname: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FormatError(f"{jname}: {what} is not a number")
    try:
        f = float(value)
        n = int(value) if not isinstance(value, float) else int(f)
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{jname}: {what} is not a number") from None
    if f != n or not 0 <= n < top:
        raise FormatError(f"{jname}: {what} must be a whole number in [0, {top})")
    return n


def import_upstream(path: Path) -> DNA:
    """Read a DNA pair written by vdna 0.1.1 (or by export_upstream). The JSON is read and
    checked first; every array's declared shape is checked against it before any is read."""
    meta, jpath, npath = read_meta(path)
    kind_name = meta.get("type")
    if kind_name == "activation-ranges":
        raise FormatError(f"{jpath.name} holds activation ranges, not a DNA: use 'vdna ranges import {jpath}'")
    if kind_name not in TYPES:
        raise FormatError(f"{jpath.name}: unsupported DNA type {str(kind_name)[:40]!r} "
                          "(histogram, gaussian or layer-gaussian)")
    kind = TYPES[kind_name]
    layers = _layers_of(meta, jpath.name)
    num_images = _count(meta.get("num_images"), "num_images", jpath.name, MAX_IMAGES)
    ours = meta.get("vdnacli") if isinstance(meta.get("vdnacli"), dict) else None
    m = dict(ours) if ours is not None else _meta_from_upstream(meta, layers, kind, jpath.name)
    kept_ranges = m.pop("ranges_values", None)
    m.pop("shards", None)  # the pair never carries shard DNAs
    m["num_images"] = num_images
    m["layers"] = [[l, n] for l, n in layers.items()]
    m["kinds"] = [kind]
    if kind != "hist":
        m["bins"] = None
        m.pop("ranges", None)
    if kind == "hist":
        dist = meta.get("distribution") if isinstance(meta.get("distribution"), dict) else {}
        bins = _count(m.get("bins") or dist.get("hist_nb_bins"), "hist_nb_bins", jpath.name, MAX_BINS + 1)
        if bins < 2:
            raise FormatError(f"{jpath.name}: hist_nb_bins must be at least 2")
        m["bins"] = bins
        arrays = _load_npz(npath, _expected(kind, layers, bins))
        dna = DNA(meta=m, hist=_hist(arrays, layers, bins, npath.name))
        dna.ranges = _kept_ranges(kept_ranges, m, layers, jpath.name)
        return dna
    arrays = _load_npz(npath, _expected(kind, layers, None))
    if kind == "gauss":
        return DNA(meta=m, gauss=_gauss(arrays, layers, num_images, npath.name))
    return DNA(meta=m, layer_gauss=_layer_gauss(arrays, layers, num_images, npath.name))


def _meta_from_upstream(meta: dict, layers: dict, kind: str, jname: str) -> dict:
    """Our metadata for a file vdna 0.1.1 wrote: its settings, complete enough for --like."""
    ext = str(meta.get("feature_extractor_name", "unknown"))[:128]
    name = UPSTREAM_EXTRACTORS.get(ext, ext)
    data = meta.get("data_settings") if isinstance(meta.get("data_settings"), dict) else {}
    crop = data.get("crop_to_square_pre_resize", "none")
    resize = data.get("resize_mode", "clean")
    if crop not in ("none", "center", "random") or resize not in ("clean", "legacy_pytorch", "legacy_tensorflow"):
        raise FormatError(f"{jname}: unknown crop or resize mode ({str(crop)[:20]}, {str(resize)[:20]})")
    pre = {"decode": "plain", "crop": crop, "resize": resize}
    revision = 1
    try:
        from vdnacli.extractors import get_spec

        spec = get_spec(name)
        pre.update(size=spec.input_size, mean=list(spec.mean), std=list(spec.std))
        revision = spec.revision  # our specs of its extractors compute what it computes
    except Exception:  # an extractor this version does not know: recorded as is
        pass
    dist = meta.get("distribution") if isinstance(meta.get("distribution"), dict) else {}
    m = new_meta(extractor=name, weights_sha256=None, ranges_sha256=None, layers=layers,
                 bins=_count(dist.get("hist_nb_bins"), "hist_nb_bins", jname, MAX_BINS + 1) if kind == "hist" else None,
                 preprocessing=pre, kinds=[kind],
                 binning="vdna-0.1.1", extractor_revision=revision)
    m["origin"] = {"kind": "upstream-vdna", "vdna_version": str(meta.get("vdna_version"))[:40],
                   "time_of_compute": str(meta.get("time_of_compute"))[:60],
                   "feature_extractor_name": ext}
    return m


def _hist(arrays: dict, layers: dict, bins: int, nname: str) -> dict:
    hist = {}
    for l, n in layers.items():
        h = arrays.get(l)
        if h is None or h.shape != (n, bins) or h.dtype.kind not in "iu":
            raise FormatError(f"{nname}: layer {l!r} must be an integer array [{n}, {bins}]")
        if h.size and h.min() < 0:
            raise FormatError(f"{nname}: layer {l!r} has negative counts")
        if h.dtype == np.uint64 and h.size and h.max() > np.iinfo(np.int64).max:
            raise FormatError(f"{nname}: layer {l!r} has counts beyond int64")
        hist[l] = h.astype(np.int64)
    return hist


def _gauss(arrays: dict, layers: dict, count: int, nname: str) -> dict:
    gauss = {}
    for l, n in layers.items():
        mu, var = arrays.get("mu-" + l), arrays.get("var-" + l)
        if mu is None or var is None or mu.shape != (n,) or var.shape != (n,) or mu.dtype.kind != "f" \
                or var.dtype.kind != "f":
            raise FormatError(f"{nname}: layer {l!r} needs mu/var float arrays of {n} values")
        if not (np.isfinite(mu).all() and np.isfinite(var).all()) or (var < 0).any():
            raise FormatError(f"{nname}: layer {l!r} has non-finite or negative values")
        mu, var = mu.astype(np.float64), var.astype(np.float64)
        gauss[l] = Gaussian(count, mu * count, var * max(count - 1, 0) + mu * mu * count)
    return gauss


def _layer_gauss(arrays: dict, layers: dict, count: int, nname: str) -> dict:
    out = {}
    for l, n in layers.items():
        mu, sigma = arrays.get("mu-" + l), arrays.get("sigma-" + l)
        if mu is None or sigma is None or mu.shape != (n,) or sigma.shape != (n, n) \
                or mu.dtype.kind != "f" or sigma.dtype.kind != "f":
            raise FormatError(f"{nname}: layer {l!r} needs mu [{n}] and sigma [{n}, {n}] float arrays")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise FormatError(f"{nname}: layer {l!r} has non-finite values")
        mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
        out[l] = LayerGaussian(count, mu * count, sigma * max(count - 1, 0) + np.outer(mu, mu) * count)
    return out


def _kept_ranges(values, meta: dict, layers: dict, jname: str):
    """The activation ranges our export keeps in the JSON, checked against ranges_sha256."""
    if not isinstance(values, dict) or not isinstance(meta.get("ranges"), dict):
        meta.pop("ranges", None)
        return None
    from vdnacli.dna import _ranges_from_arrays

    arrays = {}
    try:
        for l in layers:
            arrays[f"ranges/{l}/min"] = np.asarray(values[l]["min"], dtype=np.float64)
            arrays[f"ranges/{l}/max"] = np.asarray(values[l]["max"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{jname}: the kept activation ranges are malformed") from None
    return _ranges_from_arrays(meta, arrays, layers)


def import_ranges_pair(path: Path, extractor: str):
    """vdna 0.1.1's saved "activation-ranges" pair (min-<layer>, max-<layer>) as our
    ActivationRanges, with vdna 0.1.1's margin rule (min and max x 1.2)."""
    from vdnacli.ranges import ActivationRanges, _validate

    meta, jpath, npath = read_meta(path)
    if meta.get("type") != "activation-ranges":
        raise FormatError(f"{jpath.name} is not an activation-ranges file (type {str(meta.get('type'))[:30]!r})")
    layers = _layers_of(meta, jpath.name)
    arrays = _load_npz(npath, _expected("ranges", layers, None))
    mins, maxs = {}, {}
    for l, n in layers.items():
        mn, mx = arrays.get("min-" + l), arrays.get("max-" + l)
        if mn is None or mx is None or mn.shape != (n,) or mx.shape != (n,):
            raise FormatError(f"{npath.name}: layer {l!r} needs min/max arrays of {n} values")
        mins[l], maxs[l] = mn.astype(np.float64), mx.astype(np.float64)
    r = ActivationRanges(extractor=extractor, mins=mins, maxs=maxs, margin=0.2, rule="scale",
                         sources=(jpath.name,))
    _validate(r, jpath)
    return r


__all__ = ["export_upstream", "import_upstream", "import_ranges_pair", "pair_paths", "read_meta", "read_pair", "ranges_record",
           "check_layer_name", "UPSTREAM_EXTRACTORS"]
