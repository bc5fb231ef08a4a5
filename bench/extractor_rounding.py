"""How much the arithmetic changes of issue 13 move histograms (not timings: agreement).

Two networks are run on the same weights and real images, side by side:
  vit:  timm's ViT-B/16 with its fused attention kernel (what `mugs-vit-b16` / `dino-vit-b16` ran
        before) vs explicit attention (now, as vdna 0.1.1)
  clip: open_clip's ViT-B-16 image encoder in float32 (what `clip-vit-b16` ran before) vs our
        float16 module (now, as vdna 0.1.1)
Weights are random (no real weights on this machine; 'randomised' below), so the figures show the
size of the effect, not its exact value for the published networks. Ranges: the new network's own
per-neuron min/max on these images x 1.2 (vdna 0.1.1's margin rule); bins: vdna 0.1.1's
(float64 normalisation, 1,000 bins on [-1, 1], values outside dropped).
Reported per layer kind: max |activation difference|, the share of activation values that land in
another bin, and the mean per-neuron EMD (in bins) between the two histograms; with --speed, the
forward throughput of both, timed in the same run.

  python bench/extractor_rounding.py --images 8 --speed
"""
from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch
from PIL import Image

from vdnacli import samples
from vdnacli.extractors import build_module, get_spec
from vdnacli.preprocess import normalise, prepare, to_rgb


def randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, v in module.state_dict().items():
        if not v.is_floating_point():
            state[key] = v
        elif v.ndim == 1 and key.endswith("weight"):
            state[key] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim <= 1 or key.endswith(("pos_embed", "positional_embedding", "cls_token")):
            state[key] = 0.1 * torch.randn(v.shape, generator=g)
        else:
            state[key] = torch.randn(v.shape, generator=g) / math.sqrt(math.prod(v.shape[1:]))
    return state


def images(n, spec):
    pics = samples.photo_crops(n, seed=7, size=256)
    a = np.stack([prepare(to_rgb(Image.fromarray(p)), spec.input_size) for p in pics])
    return normalise(torch.from_numpy(a), spec.mean, spec.std)


def upstream_bins(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """[C, N] activations -> [C, N] bin indices (-1 outside), vdna 0.1.1's normalisation."""
    mean, std = (lo + hi) / 2, (hi - lo) / 2 + 1e-8
    x = (a.astype(np.float64) - mean[:, None]) / std[:, None]
    idx = np.floor((x + 1) / 2 * bins).astype(np.int64)
    idx[idx == bins] = bins - 1  # histc puts the upper edge in the last bin
    idx[(x < -1) | (x > 1)] = -1
    return idx


def compare(old: dict, new: dict, bins: int = 1000) -> dict:
    rows = {}
    for layer in new:
        a_old = old[layer].transpose(0, 1).reshape(new[layer].shape[1], -1).double().numpy()
        a_new = new[layer].transpose(0, 1).reshape(new[layer].shape[1], -1).double().numpy()
        lo, hi = a_new.min(1) * 1.2, a_new.max(1) * 1.2
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        b_old, b_new = upstream_bins(a_old, lo, hi, bins), upstream_bins(a_new, lo, hi, bins)
        emd = []
        for c in range(b_new.shape[0]):
            h_old = np.bincount(b_old[c][b_old[c] >= 0], minlength=bins).astype(np.float64)
            h_new = np.bincount(b_new[c][b_new[c] >= 0], minlength=bins).astype(np.float64)
            emd.append(np.abs(np.cumsum(h_old / h_old.sum() - h_new / h_new.sum())).sum())
        rows[layer] = (float(np.abs(a_old - a_new).max()), float((b_old != b_new).mean()), float(np.mean(emd)))
    return rows


def vit_pair(n):
    """(before, now, images): forward functions of the same random ViT-B/16."""
    spec = get_spec("mugs-vit-b16")
    now = build_module(spec, None)
    now.vit.load_state_dict(randomised(now.vit))

    def run(fused: bool):
        def forward(x):
            for block in now.vit.blocks:
                block.attn.fused_attn = fused
            return now(x)
        return forward

    return run(True), run(False), images(n, spec)


def clip_pair(n):
    import logging

    import open_clip

    spec = get_spec("clip-vit-b16")
    now = build_module(spec, None)  # float16 where vdna 0.1.1 has it
    state = {k: v.half() for k, v in randomised(now).items()}  # OpenAI's weights are float16 values
    now.load_state_dict(state)
    logging.disable(logging.WARNING)
    old = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).visual.eval()
    logging.disable(logging.NOTSET)
    old.load_state_dict({k: v.float() for k, v in state.items()})

    def before(x):
        _, blocks = old.transformer.forward_intermediates(old._embeds(x))
        out = {f"block_{i}": t.transpose(1, 2) for i, t in enumerate(blocks)}
        out["last_norm"] = old.ln_post(blocks[-1][:, 0]).unsqueeze(2)
        return out

    return before, now, images(n, spec)


def speed(forward, x, repeat: int = 2) -> float:
    forward(x[:1])  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        forward(x)
    return repeat * len(x) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--pairs", nargs="+", default=["vit", "clip"], choices=["vit", "clip"])
    ap.add_argument("--speed", action="store_true", help="also time both forwards (batch = --images), side by side")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.images} images, 1000 bins\n")
    print("| change | layer | max abs diff | values in another bin | mean EMD (bins) |\n|---|---|---|---|---|")
    speeds = []
    for pair in args.pairs:
        before, now, x = {"vit": vit_pair, "clip": clip_pair}[pair](args.images)
        label = {"vit": "ViT-B/16 fused -> explicit attention", "clip": "CLIP float32 -> float16"}[pair]
        with torch.inference_mode():
            rows = compare(before(x), now(x))
            if args.speed:
                speeds.append((label, speed(before, x), speed(now, x)))
        for layer, (diff, moved, emd) in rows.items():
            if layer in ("block_0", "block_5", "block_11", "last_norm"):
                print(f"| {label} | {layer} | {diff:.3g} | {moved:.3%} | {emd:.4f} |")
    if speeds:
        print("\n| change | before img/s | now img/s | now / before |\n|---|---|---|---|")
        for label, b, n in speeds:
            print(f"| {label} | {b:.2f} | {n:.2f} | {n / b:.2f} |")


if __name__ == "__main__":
    main()
