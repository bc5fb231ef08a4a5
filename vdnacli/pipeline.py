"""Images -> batches -> activations -> DNA counts, streaming (nothing per image is kept
but a 16-byte content hash, needed to append without double counting)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from vdnacli import decode_torch
from vdnacli.dna import DNA, KINDS, Gaussian, LayerGaussian, images_digest, new_meta
from vdnacli.errors import ConfigError, ImageDecodeError, SourceError, VdnaError
from vdnacli.extractors.loaded import Extractor, default_ranges
from vdnacli.preprocess import decode, prepare
from vdnacli.ranges import ActivationRanges
from vdnacli.sources import ImageRef

Progress = Callable[[int, int], None]


@dataclass
class ComputeReport:
    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative name, reason)
    duplicates: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _prepare_pil(data: bytes, size: int, crop: str, interpolation: str):
    """(uint8 [3, size, size] array, None) or (None, why the image cannot be used)."""
    try:
        return prepare(decode(data), size, crop, interpolation), None
    except ImageDecodeError as e:
        return None, str(e)
    except (ValueError, MemoryError, OSError) as e:  # one odd image must not end the run
        return None, f"cannot preprocess: {type(e).__name__}: {str(e)[:200]}"


class _ImageDataset:
    """Decode + preprocess one image; failures are returned, not raised (workers).

    decoder "torch": JPEGs that decode_torch takes are only read, hashed and probed here
    (header: size, EXIF orientation) and travel as bytes, to be decoded in batches on the
    extractor's device; every other file is prepared with PIL here, as with "pil".
    """

    def __init__(self, refs: Sequence[ImageRef], size: int, crop: str, interpolation: str, decoder: str = "pil"):
        self.refs, self.size, self.crop, self.interpolation = refs, size, crop, interpolation
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        ref = self.refs[i]
        try:
            data = ref.read_bytes()
        except (OSError, KeyError) as e:
            return i, None, None, f"unreadable: {getattr(e, 'strerror', None) or e}"
        digest = hashlib.sha256(data).digest()[:16]
        if self.decoder == "torch":
            header = decode_torch.probe_jpeg(data)
            if header is not None:
                return i, decode_torch.EncodedJpeg(data, header.orientation), digest, None
        arr, error = _prepare_pil(data, self.size, self.crop, self.interpolation)
        return i, arr, digest, error


def _decode_on_device(items: list, skip: set[bytes] | None, device, size: int, crop: str, interpolation: str) -> list:
    """Replace the encoded JPEGs of a batch by uint8 tensors decoded and resized on `device`
    (duplicates are left undecoded); a JPEG torchvision refuses goes through PIL here."""
    todo = [k for k, (_, payload, digest, error) in enumerate(items)
            if error is None and isinstance(payload, decode_torch.EncodedJpeg) and not (skip and digest in skip)]
    images = decode_torch.decode_resize([items[k][1] for k in todo], device, size, crop, interpolation)
    items = list(items)
    for k, img in zip(todo, images):
        i, payload, digest, _ = items[k]
        if img is None:
            img, error = _prepare_pil(payload.data, size, crop, interpolation)
            items[k] = (i, img, digest, error)
        else:
            items[k] = (i, img, digest, None)
    return items


def _stack(arrays: list, device):
    """One uint8 batch on `device` from numpy arrays (PIL path) and device tensors (torch path)."""
    import torch

    return torch.stack([a.to(device) if isinstance(a, torch.Tensor) else torch.from_numpy(a).to(device)
                        for a in arrays])


class _Stager:
    """uint8 batches of numpy images -> tensors on the device. On CUDA the batch is stacked
    straight into one of two reused pinned buffers and copied asynchronously; a buffer is
    refilled only after its previous copy has finished (its event). Pinning a fresh tensor
    per batch costs a cudaHostAlloc each time."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.buffers: list = [None, None]
        self.events: list = [None, None]
        self.turn = 0

    def to_device(self, arrays: list):
        import torch

        if not self.cuda:
            return torch.from_numpy(np.stack(arrays))
        i, self.turn = self.turn, self.turn ^ 1
        if self.events[i] is not None:
            self.events[i].synchronize()
        shape = (len(arrays), *arrays[0].shape)
        size = int(np.prod(shape))
        if self.buffers[i] is None or self.buffers[i].numel() < size:
            self.buffers[i] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        host = self.buffers[i][:size].view(shape)
        np.stack(arrays, out=host.numpy())
        x = host.to(self.device, non_blocking=True)
        self.events[i] = torch.cuda.Event()
        self.events[i].record()
        return x


def _collate(items):
    return items


def iter_batches(
    refs: Sequence[ImageRef],
    extractor: Extractor,
    batch_size: int = 32,
    workers: int = 0,
    strict: bool = False,
    skip: set[bytes] | None = None,
    report: ComputeReport | None = None,
    progress: Progress | None = None,
    crop: str | None = None,
    precision: str = "fp32",
    decoder: str = "pil",
) -> Iterator[tuple[dict, list[bytes], list[int]]]:
    """Yield ({layer: activations [B, C, S]}, content digests, indices into refs) batch by batch.

    `crop`: "center" (square centre crop, the paper's) or "none" (squash); default: the spec's.
    `decoder`: "pil" (decode + resize in the workers) or "torch" (JPEGs decoded and resized
    in batches on the extractor's device by vdnacli.decode_torch: nvjpeg on CUDA).
    """
    import torch

    from vdnacli.preprocess import normalise

    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if workers < 0:
        raise ConfigError("--workers must be 0 or more")
    spec = extractor.spec
    crop = check_crop(crop or spec.crop)
    autocast_dtype = check_precision(precision)
    on_device = decode_torch.check_decoder(decoder, spec.interpolation) == "torch"
    if on_device:
        decode_torch.check_available(extractor.device)
    ds = _ImageDataset(list(refs), spec.input_size, crop, spec.interpolation, decoder)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=False,  # CUDA batches are staged through _Stager's pinned buffers; nvjpeg reads host bytes itself
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    report = report if report is not None else ComputeReport()
    stager = _Stager(extractor.device)
    done = 0
    with torch.inference_mode():
        for items in loader:
            if on_device:
                items = _decode_on_device(items, skip, extractor.device, spec.input_size, crop, spec.interpolation)
            arrays, digests, indices = [], [], []
            for i, arr, digest, error in items:
                if error is not None:
                    if strict:
                        raise ImageDecodeError(f"{refs[i].name}: {error}")
                    report.failed.append((refs[i].name, error))
                elif skip is not None and digest in skip:
                    report.duplicates += 1
                else:
                    arrays.append(arr)
                    digests.append(digest)
                    indices.append(i)
            done += len(items)
            if arrays:
                if on_device:
                    x = _stack(arrays, extractor.device)
                else:
                    x = stager.to_device(arrays)
                x = normalise(x, spec.mean, spec.std)
                with torch.autocast(extractor.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    feats = extractor(x)
                report.images += len(arrays)
                yield feats, digests, indices
            if progress:
                progress(done, len(refs))


class _HistAccumulator:
    def __init__(self, extractor: Extractor, ranges: ActivationRanges, bins: int):
        import torch

        from vdnacli.kernels import Workspace, bin_params, counter_for

        self.bins = bins
        self.workspace = Workspace()
        self.count, _ = counter_for(extractor.device)
        self.params = {}
        self.counts = {}
        for layer, n in extractor.spec.layers:
            lo, hi = ranges.interval(layer)
            lo32, scale32 = bin_params(lo, hi, bins)
            dev = extractor.device
            self.params[layer] = (torch.from_numpy(lo32).to(dev), torch.from_numpy(scale32).to(dev))
            self.counts[layer] = torch.zeros((n, bins), dtype=torch.int64, device=dev)

    def update(self, feats: dict) -> None:
        for layer, acts in feats.items():
            lo, scale = self.params[layer]
            self.counts[layer] += self.count(acts, lo, scale, self.bins, self.workspace)

    def result(self) -> dict[str, np.ndarray]:
        self.workspace.check_nan()
        return {l: c.cpu().numpy() for l, c in self.counts.items()}


class _GaussAccumulator:
    """Sums of the per-image spatial mean of each neuron (float64), as upstream dna-fd."""

    def __init__(self, extractor: Extractor):
        import torch

        dev = extractor.device
        self.count = 0
        self.sum = {l: torch.zeros(n, dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
        self.sumsq = {l: torch.zeros(n, dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}

    def update(self, feats: dict) -> None:
        import torch

        for layer, acts in feats.items():
            m = acts.to(torch.float64).mean(dim=2)
            self.sum[layer] += m.sum(0)
            self.sumsq[layer] += (m * m).sum(0)
        self.count += next(iter(feats.values())).shape[0]

    def result(self) -> dict[str, Gaussian]:
        return {l: Gaussian(self.count, self.sum[l].cpu().numpy(), self.sumsq[l].cpu().numpy()) for l in self.sum}


class _LayerGaussAccumulator:
    """Per layer: count, sum [C] and sum of outer products [C, C] (float64) of the per-image
    spatially averaged activations (FID's statistics, kept as mergeable sums)."""

    def __init__(self, extractor: Extractor):
        import torch

        dev = extractor.device
        self.count = 0
        self.sum = {l: torch.zeros(n, dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
        self.outer = {l: torch.zeros((n, n), dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}

    def update(self, feats: dict) -> None:
        import torch

        for layer, acts in feats.items():
            m = acts.to(torch.float64).mean(dim=2)  # [B, C]
            self.sum[layer] += m.sum(0)
            self.outer[layer] += m.T @ m
        self.count += next(iter(feats.values())).shape[0]

    def result(self) -> dict[str, LayerGaussian]:
        return {l: LayerGaussian(self.count, self.sum[l].cpu().numpy(), self.outer[l].cpu().numpy()) for l in self.sum}


PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str):
    """The autocast dtype of a precision name (None for fp32)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def preprocessing(spec, crop: str, decoder: str, device) -> dict:
    """The preprocessing dict a DNA records: the spec's, plus the decoder keys for "torch"."""
    pre = spec.preprocessing(crop)
    if decoder == "torch":
        pre.update(decode_torch.recorded(device, spec.interpolation))
    return pre


CROPS = ("center", "none")


def check_crop(crop: str) -> str:
    if crop not in CROPS:
        raise ConfigError(f"unknown crop '{crop}'; choose from {', '.join(CROPS)}")
    return crop


def compute_dna(
    refs: Sequence[ImageRef],
    extractor: Extractor,
    kinds: Iterable[str] = ("hist",),
    bins: int = 1000,
    ranges: ActivationRanges | None = None,
    batch_size: int = 32,
    workers: int = 0,
    strict: bool = False,
    skip: set[bytes] | None = None,
    progress: Progress | None = None,
    name: str | None = None,
    crop: str | None = None,
    precision: str = "fp32",
    allow_empty: bool = False,
    decoder: str = "pil",
) -> tuple[DNA, ComputeReport]:
    """One pass over the images produces every requested kind.

    Histograms use `ranges`, else the extractor's default ranges (packaged, or upstream's on
    the Hub, fetched unless the extractor was loaded offline). `decoder` "torch" is recorded
    in the preprocessing dict (keys "decoder" and "resize"); "pil" DNAs keep theirs unchanged.
    """
    kinds = list(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(f"unknown kind {', '.join(bad) or '(none)'}; choose from {', '.join(KINDS)}")
    if not 2 <= bins <= 100_000:
        raise ConfigError("--bins must be between 2 and 100000")
    if not refs and not allow_empty:
        raise SourceError("no images to process")
    spec = extractor.spec
    if "hist" in kinds:
        ranges = ranges or default_ranges(spec, extractor.offline)
        if ranges is None:
            raise VdnaError(f"no activation ranges for '{spec.name}'; run 'vdna calibrate {spec.name} FOLDER... "
                            "--out ranges.json' and pass --ranges ranges.json (or use --kind gauss / layer-gauss)")
        if ranges.layers() != dict(spec.layers):
            raise VdnaError(f"activation ranges do not match the layers of '{spec.name}'")
    report = ComputeReport()
    hist = _HistAccumulator(extractor, ranges, bins) if "hist" in kinds else None
    gauss = _GaussAccumulator(extractor) if "gauss" in kinds else None
    layer_gauss = _LayerGaussAccumulator(extractor) if "layer-gauss" in kinds else None
    crop = check_crop(crop or spec.crop)
    decode_torch.check_decoder(decoder, spec.interpolation)
    hashes: list[bytes] = []
    start = time.perf_counter()
    for feats, digests, _ in iter_batches(refs, extractor, batch_size, workers, strict, skip, report, progress, crop,
                                          precision, decoder):
        if hist:
            hist.update(feats)
        if gauss:
            gauss.update(feats)
        if layer_gauss:
            layer_gauss.update(feats)
        hashes.extend(digests)
    report.seconds = time.perf_counter() - start
    if report.images == 0 and not allow_empty:
        if report.duplicates and not report.failed:
            raise SourceError("every image is already counted in this DNA; nothing to add")
        reasons = "; ".join(f"{n}: {r}" for n, r in report.failed[:3])
        raise SourceError(f"no valid image among {len(refs)} file(s) ({reasons})")
    meta = new_meta(
        extractor=spec.name,
        weights_sha256=extractor.weights_sha256,
        ranges_sha256=ranges.sha256() if "hist" in kinds else None,
        layers=dict(spec.layers),
        bins=bins,
        preprocessing=preprocessing(spec, crop, decoder, extractor.device),
        kinds=kinds,
        precision=precision,
    )
    sorted_hashes = np.unique(np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, 16), axis=0)
    if report.images == 0:  # an empty shard of a distributed run: zero counts
        sorted_hashes = np.zeros((0, 16), dtype=np.uint8)
    meta["num_images"] = report.images
    meta["images_sha256"] = images_digest(sorted_hashes)
    if name:
        meta["name"] = name
    dna = DNA(
        meta=meta,
        hist=hist.result() if hist else None,
        gauss=gauss.result() if gauss else None,
        layer_gauss=layer_gauss.result() if layer_gauss else None,
        image_hashes=sorted_hashes,
    )
    return dna, report


def calibrate(
    sources: Sequence[tuple[str, Sequence[ImageRef]]],
    extractor: Extractor,
    margin: float = 0.2,
    batch_size: int = 32,
    workers: int = 0,
    progress: Progress | None = None,
    crop: str | None = None,
    decoder: str = "pil",
) -> tuple[ActivationRanges, ComputeReport]:
    """Track every neuron's min and max over several image sets (paper A.2)."""
    ranges = ActivationRanges(extractor=extractor.spec.name, mins={}, maxs={}, margin=margin, rule="widen",
                              sources=tuple(label for label, _ in sources))
    report = ComputeReport()
    start = time.perf_counter()
    for _, refs in sources:
        for feats, _, _ in iter_batches(refs, extractor, batch_size, workers, False, None, report, progress, crop,
                                        decoder=decoder):
            for layer, acts in feats.items():
                a = acts.float().transpose(0, 1).reshape(acts.shape[1], -1)
                ranges.update(layer, a.amin(1).cpu().numpy(), a.amax(1).cpu().numpy())
    report.seconds = time.perf_counter() - start
    if report.images == 0:
        raise SourceError("no valid image to calibrate on")
    ranges.images = report.images
    return ranges, report
