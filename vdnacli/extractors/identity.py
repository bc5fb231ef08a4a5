"""Extractor names across tools and versions.

* vdna 0.1.1 (the paper's code, PyPI `vdna`) names its networks by `feature_extractor_name`
  (`mugs_vit_base`, `clip_im_vit_b16`, ...). Each spec says which one it is (`spec.upstream`);
  `UPSTREAM_NAMES` maps theirs to ours, built from the specs so the two cannot drift apart.
* Names this project retired: until vdnacli 0.3, `rand-resnet50` was the numpy-seeded network now
  called `rand-resnet50-seeded`; `rand-resnet50` is now vdna 0.1.1's own random ResNet-50. A DNA's
  metadata names its extractor together with the weights' sha256, which tells the two apart:
  `current_name` gives the name to use today.
"""
from __future__ import annotations

from vdnacli.extractors.resnet import RAND_SHA256
from vdnacli.extractors.spec import all_specs

# vdna 0.1.1 feature_extractor_name -> this project's extractor (clip_im_rn50, clip_im_vit_b32 and
# clip_im_vit_l14 have no counterpart here).
UPSTREAM_NAMES: dict[str, str] = {s.upstream: s.name for s in all_specs() if s.upstream}
OURS_TO_UPSTREAM: dict[str, str] = {ours: theirs for theirs, ours in UPSTREAM_NAMES.items()}

# (name recorded in a DNA, weights sha256 recorded with it) -> the extractor's name today
LEGACY_NAMES: dict[tuple[str, str], str] = {
    ("rand-resnet50", RAND_SHA256): "rand-resnet50-seeded",
}


def from_upstream(name: str) -> str | None:
    """Our extractor for vdna 0.1.1's `feature_extractor_name`, or None when there is none."""
    return UPSTREAM_NAMES.get(name)


def to_upstream(name: str) -> str | None:
    """vdna 0.1.1's `feature_extractor_name` for one of our extractors, or None."""
    return OURS_TO_UPSTREAM.get(name)


def current_name(extractor: str, weights_sha256: str | None) -> str:
    """The extractor a DNA's metadata means today (`extractor` unchanged unless it was renamed)."""
    if weights_sha256:
        return LEGACY_NAMES.get((extractor, weights_sha256.lower()), extractor)
    return extractor
