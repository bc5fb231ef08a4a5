"""The dataset card `push` writes: huggingface_hub's DatasetCard (YAML front matter in
`card.data`, markdown in `card.text`), with one marked section per DNA and mask.

Sections sit between `<!-- vdna:KIND:NAME:begin/end -->` markers, so pushing another DNA to
the same repo adds its section and keeps the others, the front matter's other fields, and any
text written by hand.
"""
from __future__ import annotations

import re
from typing import Iterator

from vdnacli import __version__

DNA_DIR, MASK_DIR = "dnas", "masks"
TAGS = ("vdna", "visual-dna")


def _intro(repo_id: str, repo_type: str) -> str:
    flag = "" if repo_type == "dataset" else f" --repo-type {repo_type}"
    pull_one = f"vdna pull {repo_id}{flag} --path {DNA_DIR}/NAME.h5"
    pull_all = f"vdna pull {repo_id}{flag}".ljust(len(pull_one))
    return f"""
# Visual DNAs

[Visual DNAs](https://arxiv.org/abs/2304.10036) (Ramtoula et al., CVPR 2023): for every neuron of a frozen
network, the distribution of its activations over a set of images. Published with `vdna` {__version__}.

```bash
{pull_all}  # every DNA (and mask) in this repo
{pull_one}  # one of them
```

`{DNA_DIR}/<name>.h5` are vdna registry entries (HDF5: per-layer integer histograms `hist/<layer>` and/or
Gaussian sums `gauss/<layer>/*`, JSON metadata in the `meta` attribute, sha256 of every array in `checksums`);
`{MASK_DIR}/<name>.h5` are neuron masks in the same format. They hold no images and no file names: only
counts, and 16-byte truncated sha256 hashes of the image files (`images/hashes`, to avoid counting an image
twice when DNAs are merged).
"""


def _md(value) -> str:
    if isinstance(value, dict):
        value = ", ".join(f"{k}={_md_plain(v)}" for k, v in value.items())
    elif isinstance(value, list):
        value = ", ".join(_md_plain(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _md_plain(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_md_plain(x) for x in v) + "]"
    return str(v)


def _table(rows: list[tuple[str, object]]) -> str:
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {k} | {_md(v) if v is not None else '—'} |" for k, v in rows]
    return "\n".join(lines)


def _sha(v) -> str:
    return f"`{v}`" if v else "unknown"


def dna_section(name: str, meta: dict, sha256: str, include_filenames: bool) -> str:
    layers = meta.get("layers", [])
    rows = [
        ("file", f"`{DNA_DIR}/{name}.h5`"),
        ("file sha256", f"`{sha256}`"),
        ("extractor", f"`{meta.get('extractor')}`"),
        ("weights sha256", _sha(meta.get("weights_sha256"))),
        ("ranges sha256", _sha(meta.get("ranges_sha256"))),
        ("distributions", meta.get("kinds", [])),
        ("bins", meta.get("bins")),
        ("images", meta.get("num_images")),
        ("images sha256", f"`{meta.get('images_sha256')}`" if meta.get("images_sha256") else None),
        ("layers", f"{len(layers)} ({sum(int(n) for _, n in layers):,} neurons): "
                   + ", ".join(f"{l} {n}" for l, n in layers)),
        ("preprocessing", meta.get("preprocessing", {})),
        ("precision", meta.get("precision")),
        ("computed", f"{meta.get('created')} with {meta.get('tool', 'vdna')} {meta.get('tool_version')}"),
    ]
    origin = meta.get("origin") or {}
    if origin.get("kind"):
        src = origin.get("kind")
        if include_filenames and origin.get("source_name"):
            src += f" `{origin['source_name']}`"
        rows.append(("origin", src))
    return f"## DNA `{name}`\n\n{_table(rows)}\n"


def mask_section(name: str, meta: dict, sha256: str) -> str:
    rows = [
        ("file", f"`{MASK_DIR}/{name}.h5`"),
        ("file sha256", f"`{sha256}`"),
        ("kind", meta.get("kind")),
        ("extractor", f"`{meta.get('extractor')}`"),
        ("weights sha256", _sha(meta.get("weights_sha256"))),
        ("neurons selected", meta.get("neurons_selected")),
    ]
    return f"## Mask `{name}`\n\n{_table(rows)}\n"


def render_card(existing: str | None, repo_id: str, repo_type: str, sections: list[tuple[str, str, str]]) -> str:
    """The card with each (kind, name, markdown) section replaced in place or appended, and the
    `vdna` / `visual-dna` tags in its front matter (other fields and text kept)."""
    from huggingface_hub import DatasetCard

    text = existing if existing and existing.strip() else _intro(repo_id, repo_type)
    if not text.lstrip().startswith("---"):  # a card without front matter (or a new one): give it one
        text = "---\ntags: []\n---\n" + text
    card = DatasetCard(text, ignore_metadata_errors=True)
    tags = [t for t in (card.data.get("tags") or []) if isinstance(t, str)]
    card.data.tags = [*TAGS, *(t for t in tags if t not in TAGS)] if not set(TAGS) <= set(tags) else tags
    body = card.text
    for kind, name, section in sections:
        begin, end = f"<!-- vdna:{kind}:{name}:begin -->", f"<!-- vdna:{kind}:{name}:end -->"
        block = f"{begin}\n{section.rstrip()}\n{end}\n"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
        if pattern.search(body):
            body = pattern.sub(lambda _m: block, body, count=1)
        else:
            body = body.rstrip("\n") + "\n\n" + block
    card.text = body
    return str(card)


def iter_card_sections(card: str) -> Iterator[tuple[str, str]]:
    """(kind, name) of every vdna section in a card."""
    for m in re.finditer(r"<!-- vdna:(\w+):([A-Za-z0-9._+-]+):begin -->", card):
        yield m.group(1), m.group(2)
