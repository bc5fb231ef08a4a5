"""The command-line side of one-off comparisons (vdnacli.oneoff): the request from the flags,
the progress of each computed side, and what is said about it afterwards."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from vdnacli.cli.common import split_csv
from vdnacli.cli.output import Output


def request(s, *, like, extractor, save, limit, seed, device, workers, kinds=()):
    """A vdnacli.oneoff.OneOffRequest from resolved settings `s` and the command's flags."""
    from vdnacli.oneoff import OneOffRequest

    return OneOffRequest(like=like, extractor=extractor, default_extractor=s.extractor, kinds=tuple(kinds),
                         limit=limit, seed=seed, device=device or s.device, batch_size=s.batch_size,
                         workers=s.workers if workers is None else workers, offline=s.offline,
                         save=split_csv(save) or [])


def progress_for(enabled: bool):
    """The progress_for of vdnacli.oneoff: a bar (or plain lines) per computed side."""
    from vdnacli.cli.progress import progress_bar

    @contextmanager
    def for_side(op, settings):
        name = Path(op.text.rstrip("/")).name or op.text
        with progress_bar(enabled, f"DNA of {name}") as update:
            yield update

    return for_side


def report_computed(out: Output, computed) -> None:
    """Notes on stderr for each computed side: settings notes, skipped images, what was saved."""
    for c in computed:
        for note in c.notes:
            out.note(note)
        if c.report.failed:
            out.warn(f"{c.operand.text}: skipped {len(c.report.failed)} unreadable image(s): "
                     + "; ".join(f"{n} ({r})" for n, r in c.report.failed[:5])
                     + (" …" if len(c.report.failed) > 5 else ""))
        if c.saved:
            out.note(f"registered {c.operand.text} as {c.saved}")


def computed_json(computed, sides: list[str]) -> dict:
    """{side: {source, images, failed, saved}} for each computed side ('a', 'b' or 'query')."""
    return {side: {"source": c.operand.text, "images": c.report.images, "failed": len(c.report.failed),
                   "saved": c.saved, "extractor": c.dna.meta.get("extractor")}
            for side, c in zip(sides, computed)}
