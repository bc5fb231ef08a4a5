"""Feature extractors: a registry of declarative specs, and their loading.

Importing this package registers every family (cheap: torch, timm and open_clip are only
imported when a network is built). Listing order: the offline default first, then the
paper's extractors, then the others. `identity` maps vdna 0.1.1's extractor names and
retired names to today's.
"""
from vdnacli.extractors import efficientnet_lite  # noqa: F401, I001  (registers first: the default)
from vdnacli.extractors import vit, clip, inception, resnet, vgg, timm_models  # noqa: F401
from vdnacli.extractors.identity import UPSTREAM_NAMES, current_name, from_upstream, to_upstream
from vdnacli.extractors.loaded import Extractor, build_module, default_ranges, load_extractor, packaged_ranges
from vdnacli.extractors.spec import ExtractorSpec, all_specs, get_spec, register

__all__ = ["Extractor", "ExtractorSpec", "UPSTREAM_NAMES", "all_specs", "build_module", "current_name",
           "default_ranges", "from_upstream", "get_spec", "load_extractor", "packaged_ranges", "register",
           "to_upstream"]
