"""Images -> batches -> activations -> DNA counts, streaming (nothing per image is kept
but a 16-byte content hash, needed to append without double counting)."""
from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from vdnacli import decode_torch
from vdnacli.dna import DNA, Gaussian, LayerGaussian, images_digest, new_meta, ranges_record
from vdnacli.errors import ConfigError, ExtractorError, ImageDecodeError, SourceError, VdnaError
from vdnacli.text import plural
from vdnacli.extractors.loaded import Extractor, default_ranges
from vdnacli.preprocess import ImageRecipe
from vdnacli.ranges import ActivationRanges
from vdnacli.settings import ComputeSettings
from vdnacli.shards import Shards, shard_ids
from vdnacli.sources import Item, Ref, Source, close_handles

Progress = Callable[[int, "int | None"], None]  # (done, total); total None: not known (a stream)


def announce(progress, phase: str) -> None:
    """Tell a progress callback that a phase begins before counting does ("loading
    efficientnet-lite0…"), when it listens for phases (a `phase(text)` method); the first
    (done, total) call ends it."""
    hook = getattr(progress, "phase", None)
    if hook is not None:
        hook(phase)


@dataclass
class Run:
    """How a computation runs; nothing here changes the DNA's numbers."""

    batch_size: int = 32
    workers: int = 0
    strict: bool = False  # fail on the first unusable image instead of skipping it
    skip: set[bytes] | None = None  # content hashes already counted (--append)
    progress: Progress | None = None
    allow_empty: bool = False  # an empty shard of a distributed run is not an error

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.workers < 0:
            raise ConfigError("--workers must be 0 or more")


@dataclass
class ComputeReport:
    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (relative name, reason)
    duplicates: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _prepare(data: bytes, digest: bytes, recipe: ImageRecipe):
    """(array [3, size, size], None) or (None, why the image cannot be used)."""
    try:
        return recipe.prepare(data, digest), None
    except ImageDecodeError as e:
        return None, str(e)
    except (ValueError, MemoryError, OSError) as e:  # one odd image must not end the run
        return None, f"cannot preprocess: {type(e).__name__}: {str(e)[:200]}"


def _prepare_item(item: Item, recipe: ImageRecipe, decoder: str):
    """(name, array or encoded JPEG, 16-byte digest, error) of one item a source yielded."""
    if item.error is not None:
        return item.name, None, None, item.error
    data = item.data
    digest = item.digest if item.digest is not None else hashlib.sha256(data).digest()[:16]
    if decoder == "torch":
        header = decode_torch.probe_jpeg(data)
        if header is not None:
            return item.name, decode_torch.EncodedJpeg(data, header.orientation), digest, None
    arr, error = _prepare(data, digest, recipe)
    return item.name, arr, digest, error


def _read(ref: Ref) -> Item:
    try:
        return ref.read()
    except (OSError, KeyError) as e:
        return Item(ref.name, error=f"unreadable: {getattr(e, 'strerror', None) or e}")


class _ImageDataset:
    """Read + decode + preprocess one image of a random-access source; failures are
    returned, not raised (workers). A batch of remote refs (URLs, Hub files) is fetched by
    up to `fetch_threads` threads per process.

    decoder "torch": JPEGs that decode_torch takes are only read, hashed and probed here
    (header: size, EXIF orientation) and travel as bytes, to be decoded in batches on the
    extractor's device; every other file is prepared with PIL here, as with "pil".
    """

    def __init__(self, refs: Sequence[Ref], recipe: ImageRecipe, decoder: str = "pil", fetch_threads: int = 1):
        self.refs, self.recipe, self.decoder = refs, recipe, decoder
        self.fetch_threads = fetch_threads

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        return _prepare_item(_read(self.refs[i]), self.recipe, self.decoder)

    def __getitems__(self, indices: list[int]) -> list:
        refs = [self.refs[i] for i in indices]
        threads = min(self.fetch_threads, len(refs))
        if threads > 1 and any(r.remote for r in refs):
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                items = list(pool.map(_read, refs))
        else:
            items = [_read(r) for r in refs]
        return [_prepare_item(it, self.recipe, self.decoder) for it in items]


def _stream_dataset(source: Source, recipe: ImageRecipe, decoder: str):
    """A torch IterableDataset over a streamed source: each decode worker takes its share of
    the units (within this torchrun rank's part) and prepares their items."""
    return _stream_class()(source, recipe, decoder)


def _stream_class():
    """The IterableDataset class, made on first use (torch is imported lazily) and kept as a
    module attribute, so worker processes started with 'spawn' can unpickle it."""
    cls = globals().get("_StreamDataset")
    if cls is not None:
        return cls
    from torch.utils.data import IterableDataset, get_worker_info

    class _StreamDataset(IterableDataset):
        def __init__(self, source: Source, recipe: ImageRecipe, decoder: str):
            self.source, self.recipe, self.decoder = source, recipe, decoder

        def __iter__(self):
            info = get_worker_info()
            worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            for item in self.source.iter_items(worker, workers):
                yield _prepare_item(item, self.recipe, self.decoder)

    _StreamDataset.__qualname__ = "_StreamDataset"
    globals()["_StreamDataset"] = _StreamDataset
    return _StreamDataset


def __getattr__(name: str):
    if name == "_StreamDataset":  # unpickling in a spawned worker
        return _stream_class()
    raise AttributeError(name)


def as_source(images) -> Source:
    """A Source, or a plain sequence of refs as one."""
    return images if isinstance(images, Source) else Source.of_refs(images)


def _decode_on_device(items: list, skip: set[bytes] | None, device, recipe: ImageRecipe) -> list:
    """Replace the encoded JPEGs of a batch by uint8 tensors decoded and resized on `device`
    (duplicates are left undecoded); a JPEG torchvision refuses goes through PIL here."""
    todo = [k for k, (_, payload, digest, error) in enumerate(items)
            if error is None and isinstance(payload, decode_torch.EncodedJpeg) and not (skip and digest in skip)]
    images = decode_torch.decode_resize([items[k][1] for k in todo], device, recipe.size, recipe.crop,
                                        recipe.interpolation)
    items = list(items)
    for k, img in zip(todo, images):
        i, payload, digest, _ = items[k]
        if img is None:
            img, error = _prepare(payload.data, digest, recipe)
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
    """Batches of numpy images (uint8, or float32 for the float resizes) -> tensors on the
    device. On CUDA the batch is stacked
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
        size = int(np.prod(shape)) * arrays[0].dtype.itemsize
        if self.buffers[i] is None or self.buffers[i].numel() < size:
            self.buffers[i] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        host = self.buffers[i][:size].view(torch.from_numpy(arrays[0][:0]).dtype).view(shape)
        np.stack(arrays, out=host.numpy())
        x = host.to(self.device, non_blocking=True)
        self.events[i] = torch.cuda.Event()
        self.events[i].record()
        return x


def _collate(items):
    return items


def _failed_item(name: str, reason: str):
    return name, None, None, reason


def _prepared_batches(source: Source, recipe: ImageRecipe, decoder: str, batch_size: int, workers: int) -> Iterator[list]:
    """Lists of (name, array or encoded JPEG, digest, error), batch after batch: in this process
    (workers=0), else in decode worker processes (vdnacli.decode_pool), where a worker that dies
    costs only the image it was preparing."""
    from functools import partial

    from vdnacli import decode_pool

    prepare = partial(_prepare_item, recipe=recipe, decoder=decoder)
    if source.streamed:
        if not workers:
            batch = []
            for item in source.iter_items(0, 1):
                batch.append(prepare(item))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
            return
        yield from decode_pool.stream_batches(decode_pool.StreamJob(source, prepare, batch_size), workers,
                                              _failed_item)
        return
    refs = source.refs
    fetch_threads = max(1, source.concurrency // max(workers, 1))
    if not workers:
        ds = _ImageDataset(refs, recipe, decoder, fetch_threads=fetch_threads)
        for a in range(0, len(refs), batch_size):
            yield ds.__getitems__(list(range(a, min(a + batch_size, len(refs)))))
        return
    job = decode_pool.RefsJob(_read, prepare, refs, fetch_threads)
    yield from decode_pool.refs_batches(job, len(refs), batch_size, workers,
                                        lambda i, why: _failed_item(refs[i].name, why))


class _closing_handles:
    """Close the archives the main process opened (workers=0) when a run ends."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        close_handles()
        return False


def iter_batches(
    refs: "Source | Sequence[Ref]",
    extractor: Extractor,
    settings: ComputeSettings,
    run: Run | None = None,
    report: ComputeReport | None = None,
) -> Iterator[tuple[dict, list[bytes], list[str]]]:
    """Yield ({layer: activations [B, C, S]}, content digests, image names) batch by batch,
    each image prepared as `settings` say (decode, crop, resize, decoder, precision).
    `refs`: a Source (vdnacli.sources.open_source), or a sequence of refs."""
    import torch

    from vdnacli.preprocess import normalise

    run = run or Run()
    spec = extractor.spec
    recipe = ImageRecipe.of(settings, spec)
    autocast_dtype = autocast_dtype_of(settings.precision)
    on_device = decode_torch.check_decoder(settings.decoder, settings.interpolation) == "torch"
    if on_device:
        decode_torch.check_available(extractor.device)
    source = as_source(refs)
    workers = 0 if source.in_process else run.workers  # a one-shot Python iterable stays in this process
    total = source.total
    loader = _prepared_batches(source, recipe, settings.decoder, run.batch_size, workers)
    report = report if report is not None else ComputeReport()
    stager = _Stager(extractor.device)
    skip = run.skip
    done = 0
    if run.progress:  # the network is loaded and the images listed: counting starts now
        run.progress(0, total)
    with torch.inference_mode(), _closing_handles(), contextlib.closing(loader):
        for items in loader:
            if on_device:
                items = _decode_on_device(items, skip, extractor.device, recipe)
            arrays, digests, names = [], [], []
            for name, arr, digest, error in items:
                if error is not None:
                    if run.strict:
                        raise ImageDecodeError(f"{name}: {error}")
                    report.failed.append((name, error))
                elif skip is not None and digest in skip:
                    report.duplicates += 1
                else:
                    arrays.append(arr)
                    digests.append(digest)
                    names.append(name)
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
                yield feats, digests, names
            if run.progress:
                run.progress(done, total)


class ShardGroups:
    """The images of one batch grouped by shard: a batch order that makes each shard's images
    contiguous, and (shard, start, stop) for each shard present. Counting per group and adding
    into the shard's row costs one count per shard present, not K counts of the whole batch."""

    def __init__(self, ids: np.ndarray, device):
        import torch

        order = np.argsort(ids, kind="stable")
        self.ids = torch.from_numpy(ids).to(device)
        self.sorted = bool((order == np.arange(len(ids))).all())
        self.order = None if self.sorted else torch.from_numpy(order).to(device)
        shards, starts, sizes = np.unique(ids[order], return_index=True, return_counts=True)
        self.groups = [(int(j), int(a), int(a + n)) for j, a, n in zip(shards, starts, sizes)]

    def arrange(self, acts):
        """The activations in group order (a copy only when the batch is not already grouped)."""
        return acts if self.order is None else acts.index_select(0, self.order)


class HistAccumulator:
    """Per-layer running counts under the settings' binning rule (vdnacli.binning); with
    `shards`, the counts of each shard (the full counts are their sum)."""

    def __init__(self, extractor: Extractor, ranges: ActivationRanges, bins: int, rule: str = "float32",
                 shards: int = 0):
        import torch

        from vdnacli.kernels import Workspace, bin_params, counter_for, upstream_counter_for

        self.bins, self.rule, self.shards = bins, rule, shards
        self.workspace = Workspace()
        if rule == "vdna-0.1.1":
            self.count, self.counter = upstream_counter_for(extractor.device)
        else:
            self.count, self.counter = counter_for(extractor.device)
        self.params = {}
        self.counts = {}
        dev = extractor.device
        for layer, n in extractor.spec.layers:
            if rule == "vdna-0.1.1":
                mean, std = ranges.upstream_norm(layer)
                self.params[layer] = (torch.from_numpy(mean).to(dev), torch.from_numpy(std).to(dev))
            else:
                lo32, scale32 = bin_params(*ranges.interval(layer), bins)
                self.params[layer] = (torch.from_numpy(lo32).to(dev), torch.from_numpy(scale32).to(dev))
            shape = (shards, n, bins) if shards else (n, bins)
            self.counts[layer] = torch.zeros(shape, dtype=torch.int64, device=dev)

    def layer_counts(self, layer: str, acts, out=None):
        """Counts [neurons, bins] of one batch of one layer (added to `out` in place if given)."""
        p0, p1 = self.params[layer]  # (lo, scale) or, for vdna-0.1.1, (mean, std)
        return self.count(acts, p0, p1, self.bins, self.workspace, out=out)

    def update(self, feats: dict, groups: ShardGroups | None = None) -> None:
        from vdnacli.kernels import histogram_counts

        for layer, acts in feats.items():
            if not self.shards:
                self.layer_counts(layer, acts, out=self.counts[layer])
                continue
            b, n, s = acts.shape
            if self.rule == "float32" and self.count is histogram_counts and b * s < 8 * len(groups.groups) * self.bins:
                self._scatter(layer, acts, groups.ids)
                continue
            acts = groups.arrange(acts)
            for j, start, stop in groups.groups:
                self.layer_counts(layer, acts[start:stop], out=self.counts[layer][j])

    def _scatter(self, layer: str, acts, ids) -> None:
        """Add every activation into its shard's row directly: a cost per activation, where a count
        per shard present would pay neurons x bins per shard (layers with few positions per bin)."""
        import torch

        from vdnacli.kernels import bin_keys

        b, n, _ = acts.shape
        lo, scale = self.params[layer]
        keys = bin_keys(acts, lo, scale, self.bins, self.workspace).to(torch.int64)
        keys += (ids * (n * self.bins)).view(b, 1, 1)
        keys = keys.view(-1)
        self.counts[layer].view(-1).scatter_add_(0, keys, torch.ones(1, dtype=torch.int64, device=keys.device)
                                                 .expand(keys.numel()))

    def result(self) -> dict[str, np.ndarray]:
        self.workspace.check_nan()
        if self.shards:
            return {l: c.sum(0).cpu().numpy() for l, c in self.counts.items()}
        return {l: c.cpu().numpy() for l, c in self.counts.items()}

    def shard_result(self) -> dict[str, np.ndarray]:
        """Counts [K, neurons, bins] of each shard."""
        return {l: c.cpu().numpy() for l, c in self.counts.items()}


class _GaussAccumulator:
    """Sums of the per-image spatial mean of each neuron (float64), as upstream dna-fd; with
    `shards`, also each shard's sums (the full sums keep their own order of summation)."""

    def __init__(self, extractor: Extractor, shards: int = 0):
        import torch

        dev = extractor.device
        self.count = 0
        self.sum = {l: torch.zeros(n, dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
        self.sumsq = {l: torch.zeros(n, dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
        self.shards = shards
        if shards:
            self.shard_sum = {l: torch.zeros((shards, n), dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
            self.shard_sumsq = {l: torch.zeros((shards, n), dtype=torch.float64, device=dev)
                                for l, n in extractor.spec.layers}

    def update(self, feats: dict, groups: ShardGroups | None = None) -> None:
        import torch

        for layer, acts in feats.items():
            m = acts.to(torch.float64).mean(dim=2)
            self.sum[layer] += m.sum(0)
            self.sumsq[layer] += (m * m).sum(0)
            if self.shards:
                self.shard_sum[layer].index_add_(0, groups.ids, m)
                self.shard_sumsq[layer].index_add_(0, groups.ids, m * m)
        self.count += next(iter(feats.values())).shape[0]

    def result(self) -> dict[str, Gaussian]:
        return {l: Gaussian(self.count, self.sum[l].cpu().numpy(), self.sumsq[l].cpu().numpy()) for l in self.sum}

    def shard_result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {l: (self.shard_sum[l].cpu().numpy(), self.shard_sumsq[l].cpu().numpy()) for l in self.shard_sum}


class _LayerGaussAccumulator:
    """Per layer: count, sum [C] and sum of outer products [C, C] (float64) of the per-image
    spatially averaged activations (FID's statistics, kept as mergeable sums); with `shards`,
    also each shard's."""

    def __init__(self, extractor: Extractor, shards: int = 0):
        import torch

        dev = extractor.device
        self.count = 0
        self.sum = {l: torch.zeros(n, dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
        self.outer = {l: torch.zeros((n, n), dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
        self.shards = shards
        if shards:
            self.shard_sum = {l: torch.zeros((shards, n), dtype=torch.float64, device=dev) for l, n in extractor.spec.layers}
            self.shard_outer = {l: torch.zeros((shards, n, n), dtype=torch.float64, device=dev)
                                for l, n in extractor.spec.layers}

    def update(self, feats: dict, groups: ShardGroups | None = None) -> None:
        import torch

        for layer, acts in feats.items():
            m = acts.to(torch.float64).mean(dim=2)  # [B, C]
            self.sum[layer] += m.sum(0)
            self.outer[layer] += m.T @ m
            if self.shards:
                self.shard_sum[layer].index_add_(0, groups.ids, m)
                m = groups.arrange(m)
                for j, start, stop in groups.groups:
                    self.shard_outer[layer][j] += m[start:stop].T @ m[start:stop]
        self.count += next(iter(feats.values())).shape[0]

    def result(self) -> dict[str, LayerGaussian]:
        return {l: LayerGaussian(self.count, self.sum[l].cpu().numpy(), self.outer[l].cpu().numpy()) for l in self.sum}

    def shard_result(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {l: (self.shard_sum[l].cpu().numpy(), self.shard_outer[l].cpu().numpy()) for l in self.shard_sum}


def autocast_dtype_of(precision: str):
    """The autocast dtype of a precision name (None for fp32)."""
    import torch

    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"unknown precision '{precision}'; choose from fp32, bf16, fp16")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def resolve_ranges(settings: ComputeSettings, extractor: Extractor,
                   given: ActivationRanges | None = None) -> ActivationRanges:
    """The ranges a histogram DNA is binned with: `given` (e.g. kept in the entry --like reads),
    else --ranges, else the extractor's default; refused if the settings expect another sha256."""
    from vdnacli.extractors.loaded import check_ranges
    from vdnacli.ranges import load_ranges

    spec = extractor.spec
    ranges = given
    if ranges is None and settings.ranges is not None:
        ranges = load_ranges(settings.ranges)
    if ranges is None:
        ranges = default_ranges(spec, extractor.offline)
    if ranges is None:
        raise ExtractorError(f"no activation ranges for '{spec.name}'; run 'vdna calibrate {spec.name} FOLDER... "
                             "--out ranges.json' and pass --ranges ranges.json (or use --kind gauss / layer-gauss)")
    check_ranges(ranges, spec)
    want = settings.ranges_sha256
    if want and ranges.sha256() != want:
        whose = f"'{settings.like}'" if settings.like else "these settings"
        raise ExtractorError(f"{whose} used activation ranges with sha256 {want[:12]}…, these have "
                             f"{ranges.sha256()[:12]}…; pass the original file with --ranges")
    return ranges


def check_weights(settings: ComputeSettings, extractor: Extractor) -> None:
    """Refuse weights whose sha256 differs from the one the settings expect (--like, score)."""
    from vdnacli.extractors.weights import matches

    want = settings.weights_sha256
    if want and extractor.weights_sha256 and not matches(extractor.weights_sha256, want):
        whose = f"'{settings.like}'" if settings.like else "these settings"
        raise ExtractorError(f"{whose} used weights with sha256 {want[:12]}…, the weights of '{settings.extractor}' "
                             f"here have {extractor.weights_sha256[:12]}…; pass the original file with --weights")


def compute_dna(
    refs: "Source | Sequence[Ref]",
    extractor: Extractor,
    settings: ComputeSettings | None = None,
    run: Run | None = None,
    ranges: ActivationRanges | None = None,
    name: str | None = None,
) -> tuple[DNA, ComputeReport]:
    """One pass over the images produces every kind the settings ask for.

    `settings` default to the extractor's own; histograms use `ranges` if given, else
    `resolve_ranges`. The DNA records the settings whole (ComputeSettings.from_meta reads
    them back), the ranges themselves included, so `--like` never needs the file again.
    """
    spec = extractor.spec
    settings = settings or ComputeSettings.for_extractor(spec.name)
    if settings.extractor != spec.name:
        raise ConfigError(f"settings are for '{settings.extractor}', the extractor is '{spec.name}'")
    run = run or Run()
    source = as_source(refs)
    if not len(source) and not run.allow_empty:
        raise SourceError("no images to process")
    kinds = settings.kinds
    if "hist" in kinds:
        ranges = resolve_ranges(settings, extractor, ranges)
    else:
        ranges = None
    report = ComputeReport()
    k = settings.shards
    hist = HistAccumulator(extractor, ranges, settings.bins, settings.binning, k) if "hist" in kinds else None
    gauss = _GaussAccumulator(extractor, k) if "gauss" in kinds else None
    layer_gauss = _LayerGaussAccumulator(extractor, k) if "layer-gauss" in kinds else None
    hashes: list[bytes] = []
    shard_images = np.zeros(k, dtype=np.int64)
    start = time.perf_counter()
    for feats, digests, _ in iter_batches(source, extractor, settings, run, report):
        groups = None
        if k:
            ids = shard_ids(digests, k)
            shard_images += np.bincount(ids, minlength=k)
            groups = ShardGroups(ids, extractor.device)
        if hist:
            hist.update(feats, groups)
        if gauss:
            gauss.update(feats, groups)
        if layer_gauss:
            layer_gauss.update(feats, groups)
        hashes.extend(digests)
    report.seconds = time.perf_counter() - start
    if report.images == 0 and not run.allow_empty:
        raise SourceError(_nothing_usable(report, len(report.failed) + report.duplicates))
    meta = new_meta(
        extractor=spec.name,
        weights_sha256=extractor.weights_sha256,
        ranges_sha256=ranges.sha256() if ranges is not None else None,
        layers=dict(spec.layers),
        bins=settings.bins,
        preprocessing=settings.preprocessing(spec, extractor.device),
        kinds=list(kinds),
        precision=settings.precision,
        binning=settings.binning,
        extractor_revision=spec.revision,
    )
    sorted_hashes = np.unique(np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(-1, 16), axis=0)
    if report.images == 0:  # an empty shard of a distributed run: zero counts
        sorted_hashes = np.zeros((0, 16), dtype=np.uint8)
    meta["num_images"] = report.images
    meta["images_sha256"] = images_digest(sorted_hashes)
    if ranges is not None:
        meta["ranges"] = ranges_record(ranges)
    if name:
        meta["name"] = name
    shards = None
    if k:
        shards = Shards(k, shard_images, hist.shard_result() if hist else None,
                        gauss.shard_result() if gauss else None, layer_gauss.shard_result() if layer_gauss else None)
        meta["shards"] = shards.record()
    dna = DNA(
        meta=meta,
        hist=hist.result() if hist else None,
        gauss=gauss.result() if gauss else None,
        layer_gauss=layer_gauss.result() if layer_gauss else None,
        image_hashes=sorted_hashes,
        ranges=ranges,
        shards=shards,
    )
    return dna, report


def _nothing_usable(report: ComputeReport, total: int) -> str:
    """Why a run counted no image, true to what happened."""
    if report.duplicates and not report.failed:
        return f"every image is already counted in this DNA ({plural(report.duplicates, 'image')}); nothing to add"
    reasons = "; ".join(f"{n}: {r}" for n, r in report.failed[:3])
    if report.duplicates:
        return (f"none new among {plural(total, 'file')}: {report.duplicates} already counted, "
                f"{len(report.failed)} unreadable ({reasons})")
    return f"no valid image among {plural(total, 'file')} ({reasons})"


def calibrate(
    sources: Sequence[tuple[str, "Source | Sequence[Ref]"]],
    extractor: Extractor,
    settings: ComputeSettings | None = None,
    margin: float = 0.2,
    run: Run | None = None,
) -> tuple[ActivationRanges, ComputeReport]:
    """Track every neuron's min and max over several image sets (paper A.2), each image
    prepared as `settings` say (the settings the DNAs binned with these ranges will use)."""
    settings = settings or ComputeSettings.for_extractor(extractor.spec.name)
    ranges = ActivationRanges(extractor=extractor.spec.name, mins={}, maxs={}, margin=margin, rule="widen",
                              sources=tuple(label for label, _ in sources))
    report = ComputeReport()
    start = time.perf_counter()
    run = run or Run()
    run = Run(run.batch_size, run.workers, False, None, run.progress)
    for _, refs in sources:
        for feats, _, _ in iter_batches(refs, extractor, settings, run, report):
            for layer, acts in feats.items():
                a = acts.float().transpose(0, 1).reshape(acts.shape[1], -1)
                ranges.update(layer, a.amin(1).cpu().numpy(), a.amax(1).cpu().numpy())
    report.seconds = time.perf_counter() - start
    if report.images == 0:
        raise SourceError("no valid image to calibrate on")
    ranges.images = report.images
    return ranges, report
