"""Image-to-dataset scores (paper sec. 5.1, 5.4): each image's own DNA against a DNA.

Images are prepared and binned with the reference DNA's own recorded settings (as `--like`
would compute them), so an image's histogram and the reference's are comparable."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vdnacli.distances import emd_rows, make_selection
from vdnacli.dna import DNA
from vdnacli.extractors import load_extractor
from vdnacli.extractors.loaded import Extractor
from vdnacli.pipeline import (ComputeReport, HistAccumulator, Run, announce, check_weights, compute_dna, iter_batches,
                              resolve_ranges)
from vdnacli.settings import ComputeSettings
from vdnacli.sources import ImageRef, list_images


def score_images(refs: Sequence[ImageRef], reference: DNA, device: str = "auto", layers=None, neurons=None,
                 weights: Path | None = None, ranges_path: Path | None = None, run: Run | None = None,
                 weights_per_neuron=None, extractor: Extractor | None = None) -> tuple[list[tuple[str, float]], ComputeReport]:
    """(image name, EMD to `reference`) for every decodable image, best (closest) first."""
    reference.require("hist")
    settings = ComputeSettings.from_meta(reference.meta, like=reference.meta.get("name")).replace(
        kinds=("hist",), weights=weights, ranges=ranges_path)
    if extractor is None:
        announce(run.progress if run else None, f"loading {settings.extractor}…")
    ext = extractor or load_extractor(settings.extractor, device, settings.weights)
    check_weights(settings, ext)
    ranges = resolve_ranges(settings, ext, None if ranges_path else reference.ranges)
    counts = HistAccumulator(ext, ranges, settings.bins, settings.binning)
    sel = make_selection(reference.layers, layers, neurons)
    ref_h = {l: (reference.hist[l] if idx is None else reference.hist[l][idx]) for l, idx in sel.items()}
    total = sum(h.shape[0] for h in ref_h.values())
    report = ComputeReport()
    scores: list[tuple[str, float]] = []
    for feats, _, names in iter_batches(refs, ext, settings, run or Run(batch_size=16), report):
        per_image = np.zeros(len(names))
        for layer, idx in sel.items():
            acts = feats[layer]
            for i in range(len(names)):
                h = counts.layer_counts(layer, acts[i: i + 1]).cpu().numpy()
                d = emd_rows(h if idx is None else h[idx], ref_h[layer])
                if weights_per_neuron is not None:
                    per_image[i] += float((np.asarray(weights_per_neuron[layer]) * d).sum())
                else:
                    per_image[i] += float(d.sum())
        if weights_per_neuron is None:
            per_image /= total
        scores.extend((n, float(v)) for n, v in zip(names, per_image))
    counts.workspace.check_nan()
    scores.sort(key=lambda r: (r[1], r[0]))
    return scores, report


def similar_images(image: Path, source: Path, extractor: str, device: str = "auto", bins: int = 1000,
                   layers=None, neurons=None, limit=None, seed=0, run: Run | None = None, weights_per_neuron=None):
    """Rank the images of `source` by EMD to the DNA of one reference image (Fig. 6)."""
    settings = ComputeSettings.for_extractor(extractor, kinds=("hist",), bins=bins)
    announce(run.progress if run else None, f"loading {settings.extractor}…")
    ext = load_extractor(settings.extractor, device)
    ref_dna, _ = compute_dna(list_images(image), ext, settings, Run(strict=True), name=Path(image).name)
    refs = list(list_images(source, limit, seed))
    return score_images(refs, ref_dna, layers=layers, neurons=neurons, extractor=ext, run=run,
                        weights_per_neuron=weights_per_neuron)
