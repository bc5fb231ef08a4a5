"""Feature extractors: a registry of declarative specs, and their loading."""
from vdnacli.extractors import efficientnet_lite  # noqa: F401  (registers its spec)
from vdnacli.extractors.loaded import Extractor, load_extractor, packaged_ranges
from vdnacli.extractors.spec import ExtractorSpec, all_specs, get_spec, register

__all__ = ["Extractor", "ExtractorSpec", "all_specs", "get_spec", "load_extractor", "packaged_ranges", "register"]
