"""Evidence for two EfficientNet-Lite0 choices (issue: agreement with the paper's code):

1. the default resize: "pil" (uint8 PIL bicubic, antialiased) or "clean" (each channel a float
   image, bicubic, no uint8 rounding: vdna 0.1.1's and clean-fid's);
2. the `head` layer: after its ReLU6 (most neurons two spikes, 0 and the clip at 6) or the
   batch-norm output before the clip.

For each variant, on real sample images (digits, LFW faces, photo crops at 128 px and 320 px;
two disjoint halves each) it reports
  margin   mean over sets of  min distance to another source / distance to its twin half
           (higher: the DNA tells sources apart better relative to sampling noise)
  twin     mean EMD between twin halves (bins)
  resize   EMD between the same photos stored at 320 px and at 240 px (lower: less sensitive
           to the storage resolution)
per layer group: all layers with the ReLU6 head, the head alone, and the pre-clip head alone.
Ranges for the pre-clip head are measured on the same images (min/max, widened 20 %), as
the packaged Lite0 ranges were measured on these sources too.

  python bench/lite0_choices.py [--per-half 40]
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

import numpy as np
import torch
from PIL import Image

from vdnacli import samples
from vdnacli.distances import emd_rows
from vdnacli.extractors import load_extractor, packaged_ranges
from vdnacli.kernels import bin_params, histogram_counts
from vdnacli.preprocess import ImageRecipe, normalise

BINS = 1000


def image_sets(per_half: int) -> dict[str, list[np.ndarray]]:
    sets = samples.demo_sets(per_half)
    sets["big-a"] = samples.photo_crops(per_half, seed=11, size=320)
    sets["big-b"] = samples.photo_crops(per_half, seed=12, size=320)
    sets["big-a@240"] = [np.asarray(Image.fromarray(a).resize((240, 240), Image.Resampling.LANCZOS)) for a in sets["big-a"]]
    return sets


def activations(ext, arrays, resize: str) -> dict[str, torch.Tensor]:
    """{layer: [images, C, S]} for every layer plus "head_pre" (the head's batch norm output)."""
    recipe = ImageRecipe(size=224, resize=resize)
    captured = []
    hook = ext.module.net._bn1.register_forward_hook(lambda m, i, o: captured.append(o.flatten(2)))
    out: dict[str, list] = {}
    try:
        for start in range(0, len(arrays), 16):
            batch = []
            for a in arrays[start:start + 16]:
                img = Image.fromarray(a if a.ndim == 3 else np.stack([a] * 3, -1)).convert("RGB")
                from vdnacli.preprocess import prepare

                batch.append(prepare(img, 224, "center", "bicubic", recipe.resize))
            x = normalise(torch.from_numpy(np.stack(batch)), ext.spec.mean, ext.spec.std)
            with torch.inference_mode():
                feats = ext(x)
            feats["head_pre"] = captured.pop()
            for l, v in feats.items():
                out.setdefault(l, []).append(v.clone())
    finally:
        hook.remove()
    return {l: torch.cat(v) for l, v in out.items()}


def hists(acts: dict, intervals: dict) -> dict[str, np.ndarray]:
    out = {}
    for l, a in acts.items():
        lo, scale = bin_params(*intervals[l], BINS)
        out[l] = histogram_counts(a, torch.from_numpy(lo), torch.from_numpy(scale), BINS).numpy()
    return out


def distance(h1: dict, h2: dict, layers) -> float:
    return float(np.concatenate([emd_rows(h1[l], h2[l]) for l in layers]).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-half", type=int, default=40)
    args = ap.parse_args(argv)
    t0 = time.time()
    ext = load_extractor("efficientnet-lite0", "cpu")
    ranges = packaged_ranges(ext.spec)
    sets = image_sets(args.per_half)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; {args.per_half} images per half\n")
    print("| resize | layers | margin other/twin | twin EMD | 320 vs 240 px EMD |")
    print("|---|---|---|---|---|")
    for resize in ("pil", "clean"):
        acts = {name: activations(ext, arrs, resize) for name, arrs in sets.items()}
        intervals = {l: ranges.interval(l) for l, _ in ext.spec.layers}
        pre = torch.cat([acts[n]["head_pre"] for n in sets]).transpose(0, 1).reshape(1280, -1)
        mn, mx = pre.amin(1).double().numpy(), pre.amax(1).double().numpy()
        pad = (mx - mn) * 0.1
        intervals["head_pre"] = (mn - pad, mx + pad)
        h = {name: hists(a, intervals) for name, a in acts.items()}
        all_layers = [l for l, _ in ext.spec.layers]
        groups = {"all (ReLU6 head)": all_layers, "head (after ReLU6)": ["head"], "head before the clip": ["head_pre"],
                  "all, head before the clip": all_layers[:-1] + ["head_pre"]}
        sources = ["digits", "faces", "photos", "big"]
        for label, layers in groups.items():
            margins, twins = [], []
            for s in sources:
                for half, other_half in (("a", "b"), ("b", "a")):
                    twin = distance(h[f"{s}-{half}"], h[f"{s}-{other_half}"], layers)
                    other = min(distance(h[f"{s}-{half}"], h[f"{o}-{x}"], layers)
                                for o, x in itertools.product(sources, "ab") if o != s)
                    margins.append(other / twin)
                    twins.append(twin)
            res = distance(h["big-a"], h["big-a@240"], layers)
            print(f"| {resize} | {label} | {np.mean(margins):.2f} | {np.mean(twins):.3f} | {res:.3f} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
