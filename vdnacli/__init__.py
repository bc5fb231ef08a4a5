"""vdna: compute, store and compare Visual DNAs of image datasets (Ramtoula et al., CVPR 2023)."""

__version__ = "0.3.0"


def compute(images, extractor="efficientnet-lite0", **kwargs):
    """The DNA of `images`: a path, shards, a table, a URL, hf://..., or images in memory (a list
    of PIL images / uint8 arrays / paths, a torch Dataset, an iterable). See vdnacli.api.compute."""
    from vdnacli.extras import require_compute

    require_compute("vdnacli.compute")  # one clear error in the base install (no torch)
    from vdnacli.api import compute as _compute

    return _compute(images, extractor, **kwargs)
