"""Real sample images that install offline (scikit-learn, scikit-image), written as PNGs.

Used by `vdna demo`, by calibration and by the tests. Each sample set is split into
disjoint halves (A/B) so that "each half's nearest is its twin" can be checked.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vdnacli.errors import VdnaError

PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field", "immunohistochemistry", "moon",
    "page", "rocket", "text", "retina", "brick", "grass", "gravel", "colorwheel", "clock", "cell", "checkerboard",
)


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise VdnaError(f"the sample images need {module.split('.')[0]}; pip install 'vdnacli[demo]'") from None


def digits() -> np.ndarray:
    """1,797 handwritten digits (8x8, 0..255)."""
    ds = _need("sklearn.datasets")
    return (ds.load_digits().images * (255 / 16)).round().astype(np.uint8)


def faces() -> np.ndarray:
    """The 100 LFW faces of scikit-image's lfw_subset (25x25, grey; the other 100 are not faces)."""
    data = _need("skimage.data")
    return (data.lfw_subset()[:100] * 255).round().astype(np.uint8)


def photos() -> list[np.ndarray]:
    data = _need("skimage.data")
    out = []
    for name in PHOTOS:
        try:
            a = getattr(data, name)()
        except Exception:  # some releases fetch a few images from the web
            continue
        if a.dtype != np.uint8:
            a = (a.astype(np.float64) / max(float(a.max()), 1e-9) * 255).astype(np.uint8)
        out.append(a)
    ds = _need("sklearn.datasets")
    out += list(ds.load_sample_images().images)
    return out


def photo_crops(count: int, seed: int, size: int = 128) -> list[np.ndarray]:
    """Random square crops of the sample photos (different seeds give disjoint sets)."""
    rng = np.random.default_rng(seed)
    pics = photos()
    crops = []
    for i in range(count):
        p = pics[i % len(pics)]
        h, w = p.shape[:2]
        s = min(size, h, w)
        y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
        crops.append(p[y : y + s, x : x + s])
    return crops


def write_pngs(arrays, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(np.ascontiguousarray(a)).save(folder / f"{i:04d}.png")
    return folder


def demo_sets(per_half: int = 80) -> dict[str, list[np.ndarray]]:
    """Three sources, each split into two disjoint halves."""
    d, f = digits(), faces()
    n = min(per_half, len(f) // 2)
    return {
        "digits-a": list(d[:per_half]),
        "digits-b": list(d[per_half : 2 * per_half]),
        "faces-a": list(f[:n]),
        "faces-b": list(f[n : 2 * n]),
        "photos-a": photo_crops(per_half, seed=1),
        "photos-b": photo_crops(per_half, seed=2),
    }


def write_demo_sets(root: Path, per_half: int = 80) -> dict[str, Path]:
    return {name: write_pngs(arrs, Path(root) / name) for name, arrs in demo_sets(per_half).items()}
