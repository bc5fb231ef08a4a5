"""Pull DNAs (and masks) from the Hugging Face Hub into the registry; push them there.

Built on huggingface_hub's own verbs: `repo_info` for the listing and its checksums,
`snapshot_download` (parallel, `allow_patterns`) for downloads into the standard HF cache,
`scan_cache_dir` for offline pulls, `DatasetCard` for the card, `HfApi.create_commit` for
pushes, with `library_name="vdna"` in the user agent. vdna adds what the library does not do:
checksums held to the listing, validation of every name the Hub answers before it reaches the
filesystem, privacy scrubbing of what is published, all-or-nothing registry writes, and one-line
errors that name the next step.

  listing   the files of a revision and their checksums (online / cached), file checks
  pull      discover, download, validate, commit
  push      scrub, stage, commit, verify
  card      the dataset card
  cache     endpoint / cache / offline now, the guard on the Hub's answers, cached revisions
  errors    error classes and the mapping of huggingface_hub's exceptions

Published layout (docs/hub.md): README.md (the card), dnas/<name>.h5 (DNAs, in the registry's
entry format), masks/<name>.h5; upstream vdna 0.1.1 pairs (<stem>.json + <stem>.npz) are pulled too.
"""
from vdnacli.hub.cache import HubContext, hub_context
from vdnacli.hub.card import iter_card_sections, render_card
from vdnacli.hub.errors import (
    HubAuthError,
    HubError,
    HubIntegrityError,
    HubNetworkError,
    HubNotFoundError,
    HubOfflineError,
)
from vdnacli.hub.listing import Listing, RemoteFile, file_digests
from vdnacli.hub.pull import PulledEntry, PullReport, discover, pull
from vdnacli.hub.push import PushReport, public_meta, push

__all__ = [
    "pull", "push", "PullReport", "PulledEntry", "PushReport", "public_meta", "discover",
    "render_card", "iter_card_sections", "hub_context", "HubContext", "Listing", "RemoteFile", "file_digests",
    "HubError", "HubNotFoundError", "HubAuthError", "HubOfflineError", "HubNetworkError", "HubIntegrityError",
]
