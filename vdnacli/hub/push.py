"""`push`: publish one DNA (and the masks made for its network) with a dataset card, in one
commit, then check the Hub's checksums of that commit. What never leaves the machine: local
paths, file and folder names (unless asked, and then as base names), the endpoint a DNA was
pulled from. Tokens come only from huggingface_hub (HF_TOKEN or `hf auth login`).
"""
from __future__ import annotations

import copy
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from registry import layout
from vdnacli import __version__
from vdnacli.errors import IncompatibleDNAError
from vdnacli.hub.cache import HubContext, guard_session, hub_context
from vdnacli.hub.card import DNA_DIR, MASK_DIR, dna_section, mask_section, render_card
from vdnacli.hub.errors import (
    HubAuthError,
    HubError,
    HubIntegrityError,
    HubOfflineError,
    from_hub,
    has_token,
    hf,
    hub_errors,
)
from vdnacli.hub.listing import REQUEST_TIMEOUT, file_digests
from vdnacli.hub.pull import check_request

CARD = "README.md"
THUMBNAILS = "thumbnails"  # the entry's group of thumbnails (registry/layout.py)
# keys that name files or folders on the publisher's machine: published only with --include-filenames
_FILENAME_KEYS = {"source_name", "source", "filename", "filenames", "file_name", "path", "paths",
                  "table", "tables", "pattern", "shards", "files"}  # the last five: origins of vdnacli.sources
_NEVER_PUBLISHED = {"endpoint"}  # e.g. the URL of a private Hub mirror a DNA was pulled from


@dataclass
class PushReport:
    name: str
    repo_id: str
    repo_type: str
    revision: str  # the branch
    commit: str
    url: str
    created: bool
    files: dict[str, str]  # path in repo -> sha256
    masks: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # metadata kept private
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _looks_local(value: str) -> bool:
    home = str(Path.home())
    return (value.startswith(("/", "~", "\\\\", "file:")) or bool(re.match(r"^[A-Za-z]:[\\/]", value))
            or (len(home) > 1 and home in value))


def public_meta(meta: dict, include_filenames: bool = False) -> tuple[dict, list[str]]:
    """A copy of `meta` fit to publish, and the fields kept back.

    Local paths never leave the machine; file and folder names (origin.source_name, …) only
    with `include_filenames`, and then as base names.
    """
    dropped: list[str] = []

    def clean(value, where: str, parent_key: str | None):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                here = f"{where}.{k}" if where else str(k)
                filename = k in _FILENAME_KEYS and not (where == "" and k == "shards")  # top level: the shard record
                if (k in _NEVER_PUBLISHED or (filename and not include_filenames)) and v is not None:
                    dropped.append(here)
                    continue
                out[k] = clean(v, here, k)
            return out
        if isinstance(value, list):
            return [clean(v, f"{where}[{i}]", parent_key) for i, v in enumerate(value)]
        if isinstance(value, str) and _looks_local(value):
            if include_filenames and parent_key in _FILENAME_KEYS:
                return Path(value.rstrip("/\\")).name or None
            dropped.append(where)
            return None
        return value

    out = clean(copy.deepcopy(meta), "", None)
    out.pop("name", None)
    return out, dropped


def _select_masks(catalog, dna, with_masks, include_filenames: bool) -> list[tuple[str, dict, dict]]:
    """The masks to publish with a DNA: all masks made for its network (True) or the named ones."""
    if not with_masks:
        return []
    from vdnacli.masks import Mask

    reg = catalog.masks
    explicit = not isinstance(with_masks, bool)
    names = list(with_masks) if explicit else reg.names()
    out = []
    for n in names:
        meta, arrays = reg.read(n)
        mask = Mask.from_entry(meta, arrays)
        try:
            mask.check(dna.meta)
        except IncompatibleDNAError:
            if explicit:
                raise
            continue
        pm, _ = public_meta(meta, include_filenames)
        out.append((n, pm, arrays))
    return out


def push(catalog, name: str, repo_id: str, private: bool = False, revision: str | None = None,
         include_filenames: bool = False, with_masks: bool | Sequence[str] = False,
         repo_type: str = "dataset", with_thumbnails: bool = False) -> PushReport:
    """Publish one DNA (and, with `with_masks`, the masks made for its network) to a Hub repo.

    Uploads dnas/<name>.h5 (and masks/<mask>.h5) plus the dataset card, in one commit on
    `revision` (a branch, created if missing), then checks the Hub's checksums of the commit.
    The DNA's thumbnails (pictures of its images) stay private unless `with_thumbnails`.
    """
    check_request(repo_id, repo_type, revision)
    ctx = hub_context()
    if ctx.offline:
        raise HubOfflineError("pushing needs the network but offline mode is on (HF_HUB_OFFLINE / VDNA_OFFLINE / "
                              "offline in vdna.yaml): turn it off and push again")
    dna = catalog.get(name)
    meta, dropped = public_meta(dna.meta, include_filenames)
    masks = _select_masks(catalog, dna, with_masks, include_filenames)
    if not has_token():
        raise HubAuthError("pushing needs a Hugging Face token with write access: set HF_TOKEN or run "
                           "'hf auth login'")
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=ctx.endpoint, library_name="vdna", library_version=__version__)
    branch = revision or "main"
    report = PushReport(name, repo_id, repo_type, branch, "", ctx.repo_url(repo_id, repo_type), False, {},
                        [m[0] for m in masks], dropped)
    if with_masks is True and not masks:
        report.warnings.append(f"no mask in the registry is made for {dna.meta.get('extractor')}; pushed the DNA alone")
    with tempfile.TemporaryDirectory(prefix="vdna-push-") as tmp:
        _, arrays = catalog.registry.read(name, verify=True)  # as stored, checked against its checksums
        if not with_thumbnails:  # private unless asked for
            arrays = {k: a for k, a in arrays.items() if not k.startswith(THUMBNAILS + "/")}
        thumbs = int(arrays[f"{THUMBNAILS}/hashes"].shape[0]) if f"{THUMBNAILS}/hashes" in arrays else 0
        stage = _stage(Path(tmp), name, arrays, meta, masks)
        digests = {p: file_digests(f) for p, f in stage.items()}
        report.files = {p: d[0] for p, d in digests.items()}
        with hub_errors(ctx, repo_id, repo_type, branch, pushing=True):
            guard_session()
            parent, card, report.created, warn = _prepare_repo(api, ctx, repo_id, repo_type, branch, private)
            report.warnings += warn
            dna_sha = report.files[f"{DNA_DIR}/{name}.h5"]
            sections = [("dna", name, dna_section(name, meta, dna_sha, include_filenames)
                         + f"\nThumbnails: {f'{thumbs} published' if thumbs else 'none published'}.\n")]
            sections += [("mask", m, mask_section(m, mm, report.files[f"{MASK_DIR}/{m}.h5"])) for m, mm, _ in masks]
            card = render_card(card, repo_id, repo_type, sections)
            ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(f)) for p, f in stage.items()]
            ops.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card.encode()))
            info = api.create_commit(repo_id, ops, commit_message=f"vdna push {name}",
                                     commit_description=f"Published with vdna {__version__}.", repo_type=repo_type,
                                     revision=branch, parent_commit=parent)
            report.commit = info.oid
            _verify_published(api, repo_id, repo_type, info.oid, digests)
    return report


def _stage(tmp: Path, name: str, arrays: dict, meta: dict, masks) -> dict[str, Path]:
    """Write the files to publish with the registry's own writer: the stored arrays (checksums and
    sketch as in the registry), the metadata cleaned for publication."""
    (tmp / DNA_DIR).mkdir()
    files = {f"{DNA_DIR}/{name}.h5": tmp / DNA_DIR / f"{name}.h5"}
    layout.write_entry(files[f"{DNA_DIR}/{name}.h5"], name, dict(meta, name=name), arrays)
    if masks:
        (tmp / MASK_DIR).mkdir()
    for m, mmeta, arrays in masks:
        files[f"{MASK_DIR}/{m}.h5"] = tmp / MASK_DIR / f"{m}.h5"
        layout.write_entry(files[f"{MASK_DIR}/{m}.h5"], m, dict(mmeta, name=m), arrays)
    return files


def _prepare_repo(api, ctx: HubContext, repo_id: str, repo_type: str, branch: str, private: bool):
    """Create the repo / branch when missing; return (parent commit, current card, created, warnings)."""
    from huggingface_hub import hf_hub_download

    from registry import names

    warnings, created = [], False
    try:
        info = api.repo_info(repo_id, repo_type=repo_type, timeout=REQUEST_TIMEOUT)
    except hf.GatedRepoError:
        raise
    except hf.RepositoryNotFoundError:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.repo_info(repo_id, repo_type=repo_type, timeout=REQUEST_TIMEOUT)
        created = True
    if private and not created and info.private is False:
        warnings.append(f"{repo_id} already exists and is public: --private applies only to new repos")
    try:
        if branch != "main":
            info = api.repo_info(repo_id, repo_type=repo_type, revision=branch, timeout=REQUEST_TIMEOUT)
    except hf.RevisionNotFoundError:
        api.create_branch(repo_id, branch=branch, repo_type=repo_type)
        info = api.repo_info(repo_id, repo_type=repo_type, revision=branch, timeout=REQUEST_TIMEOUT)
    parent = from_hub(names.commit_sha, info.sha, f"commit id of {repo_id}") if info.sha else None
    card = None
    if parent and any(s.rfilename == CARD for s in info.siblings or []):
        p = hf_hub_download(repo_id, CARD, repo_type=repo_type, revision=parent, cache_dir=str(ctx.cache_dir),
                            endpoint=ctx.endpoint, library_name="vdna", library_version=__version__)
        if Path(p).stat().st_size > 4 << 20:
            raise HubError(f"the dataset card of {repo_id} is larger than 4 MiB: trim it, then push again")
        card = Path(p).read_text(encoding="utf-8", errors="replace")
    return parent, card, created, warnings


def _verify_published(api, repo_id: str, repo_type: str, commit: str, digests: dict[str, tuple[str, str, int]]) -> None:
    info = api.repo_info(repo_id, repo_type=repo_type, revision=commit, files_metadata=True, timeout=REQUEST_TIMEOUT)
    remote = {s.rfilename: s for s in info.siblings or []}
    for p, (sha, git, size) in digests.items():
        s = remote.get(p)
        ok = s is not None and ((s.lfs["sha256"] == sha) if s.lfs else (s.blob_id == git))
        if not ok:
            raise HubIntegrityError(f"after the push, the Hub's checksum of {p} in {repo_id} (commit {commit[:12]}) "
                                    "does not match the uploaded file: push again")
