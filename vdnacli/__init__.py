"""vdna: compute, store and compare Visual DNAs of image datasets (Ramtoula et al., CVPR 2023)."""

__version__ = "0.3.0"
