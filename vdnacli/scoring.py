"""Image-to-dataset scores (paper sec. 5.1, 5.4): each image's own DNA against a DNA."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vdnacli.distances import emd_rows, make_selection
from vdnacli.dna import DNA
from vdnacli.errors import ExtractorError, IncompatibleDNAError
from vdnacli.extractors import load_extractor
from vdnacli.extractors.loaded import Extractor, packaged_ranges
from vdnacli.pipeline import ComputeReport, compute_dna, iter_batches
from vdnacli.ranges import ActivationRanges, load_ranges
from vdnacli.sources import ImageRef, list_images


def _extractor_for(reference: DNA, device: str, weights: Path | None) -> Extractor:
    ext = load_extractor(reference.meta["extractor"], device, weights)
    ref_w = reference.meta.get("weights_sha256")
    if ref_w and ref_w != ext.weights_sha256:
        raise IncompatibleDNAError("the reference DNA was computed with other weights than the local ones")
    return ext


def _ranges_for(reference: DNA, ext: Extractor, ranges_path: Path | None) -> ActivationRanges:
    ranges = load_ranges(ranges_path) if ranges_path else packaged_ranges(ext.spec)
    if ranges is None:
        raise ExtractorError(f"no activation ranges for '{ext.spec.name}'; pass --ranges")
    want = reference.meta.get("ranges_sha256")
    if want and ranges.sha256() != want:
        raise IncompatibleDNAError("the reference DNA used other activation ranges; pass the same file with --ranges")
    return ranges


def score_images(refs: Sequence[ImageRef], reference: DNA, device: str = "auto", layers=None, neurons=None,
                 weights: Path | None = None, ranges_path: Path | None = None, batch_size: int = 16,
                 workers: int = 0, weights_per_neuron=None, extractor: Extractor | None = None,
                 progress=None) -> tuple[list[tuple[str, float]], ComputeReport]:
    """(image name, EMD to `reference`) for every decodable image, best (closest) first."""
    import torch

    from vdnacli.kernels import bin_params, histogram_counts

    reference.require("hist")
    ext = extractor or _extractor_for(reference, device, weights)
    ranges = _ranges_for(reference, ext, ranges_path)
    bins = int(reference.meta["bins"])
    sel = make_selection(reference.layers, layers, neurons)
    params = {}
    for layer in sel:
        lo, scale = bin_params(*ranges.interval(layer), bins)
        params[layer] = (torch.from_numpy(lo).to(ext.device), torch.from_numpy(scale).to(ext.device))
    ref_h = {l: (reference.hist[l] if idx is None else reference.hist[l][idx]) for l, idx in sel.items()}
    report = ComputeReport()
    scores: list[tuple[str, float]] = []
    def track(done, total):
        if progress:
            progress(done, total)

    for feats, _, indices in iter_batches(refs, ext, batch_size, workers, False, None, report, track):
        b = next(iter(feats.values())).shape[0]
        per_image = np.zeros(b)
        count = 0
        for layer, idx in sel.items():
            acts = feats[layer]
            lo, scale = params[layer]
            for i in range(b):
                h = histogram_counts(acts[i : i + 1], lo, scale, bins).cpu().numpy()
                if idx is not None:
                    h = h[idx]
                d = emd_rows(h, ref_h[layer])
                if weights_per_neuron is not None:
                    per_image[i] += float((np.asarray(weights_per_neuron[layer]) * d).sum())
                else:
                    per_image[i] += float(d.sum())
            count += ref_h[layer].shape[0]
        if weights_per_neuron is None:
            per_image /= count
        for i in range(b):
            scores.append((refs[indices[i]].name, float(per_image[i])))
    scores.sort(key=lambda r: (r[1], r[0]))
    return scores, report


def similar_images(image: Path, source: Path, extractor: str, device: str = "auto", bins: int = 1000,
                   layers=None, neurons=None, limit=None, seed=0, workers: int = 0, progress=None,
                   weights_per_neuron=None):
    """Rank the images of `source` by EMD to the DNA of one reference image (Fig. 6)."""
    ext = load_extractor(extractor, device)
    ref_dna, _ = compute_dna(list_images(image), ext, ("hist",), bins, strict=True, name=Path(image).name)
    refs = [r for r in list_images(source, limit, seed)]
    return score_images(refs, ref_dna, layers=layers, neurons=neurons, extractor=ext, workers=workers,
                        progress=progress, weights_per_neuron=weights_per_neuron)
