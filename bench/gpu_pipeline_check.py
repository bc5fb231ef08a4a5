"""GPU checks of the DNA pipeline that no CPU test can make (run by bench/gpu_check.sh).

1. `compute_dna` on CUDA counts with the Triton kernel; with deterministic cuDNN the same
   images give exactly the counts of the bincount path (pinned double-buffered staging,
   device NaN tally and all).
2. `--decode torch` (nvjpeg) against `--decode pil` on the same JPEGs: EMD, in bins, next to
   the distance between two halves of one source (the scale that matters).
Exit status 1 if (1) fails. Usage: python bench/gpu_pipeline_check.py [cuda|cpu]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

import vdnacli.kernels as kernels  # noqa: E402
from vdnacli import samples  # noqa: E402
from bench.bench_dna import synthetic_photos  # noqa: E402
from vdnacli.distances import compare  # noqa: E402
from vdnacli.errors import VdnaError  # noqa: E402
from vdnacli.extractors import load_extractor  # noqa: E402
from vdnacli.pipeline import Run, compute_dna  # noqa: E402
from vdnacli.settings import ComputeSettings  # noqa: E402
from vdnacli.sources import list_images  # noqa: E402


def write_jpegs(arrays, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(np.asarray(a, dtype=np.uint8)).save(folder / f"{i:04d}.jpg", quality=95)
    return folder


def main() -> int:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"  # "cpu": a dry run of this script itself
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    work = Path(tempfile.mkdtemp(prefix="vdna-gpu-"))
    try:
        sets = samples.demo_sets(per_half=64)
    except VdnaError:  # no scikit-learn / scikit-image on the GPU box: three synthetic sources
        sets = {f"{kind}-{half}": synthetic_photos(64, seed=100 * i + j, size=160, smooth=smooth)
                for i, (kind, smooth) in enumerate((("photos", 8), ("faces", 2), ("digits", 32)))
                for j, half in enumerate("ab")}
    folders = {name: write_jpegs(arrays, work / name) for name, arrays in sets.items()}
    ext = load_extractor("rand-resnet50-seeded", device)
    settings = ComputeSettings.for_extractor(ext.spec.name, crop="center", resize="pil", decode_mode="upright")
    refs = list_images(folders["photos-a"])
    ok = True

    fn, how = kernels.counter_for(ext.device)
    print(f"counter on {ext.device}: {how}")
    run = Run(batch_size=32, workers=4)
    fused, _ = compute_dna(refs, ext, run=run)
    original = kernels.counter_for
    kernels.counter_for = lambda device: (kernels.histogram_counts, "bincount")
    try:
        plain, _ = compute_dna(refs, ext, run=run)
    finally:
        kernels.counter_for = original
    same = all(np.array_equal(fused.hist[l], plain.hist[l]) for l in fused.hist)
    print(f"triton counts == bincount counts on the same GPU activations: {same}")
    ok &= same

    for name in ("photos-a", "faces-a", "digits-a"):
        r = list_images(folders[name])
        pil, rep_pil = compute_dna(r, ext, settings.replace(decoder="pil"), run)
        nv, rep_nv = compute_dna(r, ext, settings.replace(decoder="torch"), run)
        twin = name[:-1] + "b"
        other, _ = compute_dna(list_images(folders[twin]), ext, settings, run)
        print(f"{name}: EMD(pil, nvjpeg) = {compare(pil, nv).distance:.4f} bins; twin halves {name} vs {twin}: "
              f"{compare(pil, other).distance:.4f}; decoder recorded: {nv.meta['preprocessing'].get('decoder')}; "
              f"failed pil/nvjpeg: {len(rep_pil.failed)}/{len(rep_nv.failed)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
