"""Commands that exchange DNAs with the Hugging Face Hub: pull, push (work in vdnacli.hub)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from vdnacli.cli.common import open_catalog, settings
from vdnacli.cli.options import JsonOpt, QuietOpt, RegistryOpt
from vdnacli.cli.output import Output

RepoTypeOpt = Annotated[str, typer.Option("--repo-type", help="Hub repo type: dataset, model or space.")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit (default: main).",
                                                    show_default=False)]


def pull_cmd(
    repo_id: Annotated[str, typer.Argument(help="Hub repo id, e.g. bramtoula/ffhq-mugs.")],
    path: Annotated[Optional[str], typer.Option(
        "--path", help="Only this file, pair stem or folder of the repo (e.g. dnas/ffhq.h5).", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(
        "--name", help="Entry name for the DNA (when the selection holds one).", show_default=False)] = None,
    revision: RevisionOpt = None,
    repo_type: RepoTypeOpt = "dataset",
    offline: Annotated[bool, typer.Option(
        "--offline", help="Use only the local Hugging Face cache (also HF_HUB_OFFLINE=1).")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite entries of the same names.")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Pull the DNAs of a Hub repo into the registry, verified against the Hub's checksums.

    Reads our layout (dnas/<name>.h5, masks/<name>.h5) and upstream vdna pairs (<stem>.json + <stem>.npz).
    Tokens come from HF_TOKEN or 'hf auth login'.

    Example: vdna pull bramtoula/ffhq-mugs --name ffhq
    """
    from vdnacli.cli.progress import progress_bar
    from vdnacli.hub import pull

    s = settings(registry=registry, offline=True if offline else None)
    with progress_bar(not quiet and not json, f"pull {repo_id}", unit="bytes") as update:
        report = pull(open_catalog(s.registry, create=True), repo_id, path=path, name=name, revision=revision,
                      repo_type=repo_type, offline=s.offline, replace=replace, progress=update)
    out = _emit_report(report, json)
    if json:
        return
    where = "the cache" if report.from_cache else "the Hub"
    out.print(f"pulled {len(report.entries)} entr{'y' if len(report.entries) == 1 else 'ies'} from {report.repo_type} "
              f"{report.repo_id} at {report.revision[:12]} ({where}; every file matched the Hub's checksum)")
    out.table(None, ["name", "kind", "status", "format", "extractor", "images", "distributions"],
              [[e.name, e.kind, e.status, e.format, e.extractor, e.num_images, ",".join(e.kinds)]
               for e in report.entries], numeric={5})


def push_cmd(
    name: Annotated[str, typer.Argument(help="The DNA to publish.")],
    repo_id: Annotated[Optional[str], typer.Argument(
        help="Hub repo id (default: hub_repo in vdna.yaml or VDNA_HUB_REPO).", show_default=False)] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private (new repos only).")] = False,
    revision: Annotated[Optional[str], typer.Option(
        "--revision", help="Branch to commit to, created if missing (default: main).", show_default=False)] = None,
    repo_type: RepoTypeOpt = "dataset",
    include_filenames: Annotated[bool, typer.Option(
        "--include-filenames", help="Also publish the source folder's name (never local paths).")] = False,
    with_masks: Annotated[bool, typer.Option(
        "--with-masks", help="Also publish the registry's masks made for this DNA's extractor.")] = False,
    with_thumbnails: Annotated[bool, typer.Option(
        "--with-thumbnails", help="Also publish the DNA's thumbnails (kept private by default).")] = False,
    registry: RegistryOpt = None,
    json: JsonOpt = False,
):
    """Publish a DNA (dnas/NAME.h5) and a generated dataset card to a Hub repo.

    Needs a write token from HF_TOKEN or 'hf auth login'. No local paths leave the machine, nor file
    names unless --include-filenames.

    Example: vdna push ffhq me/ffhq-dna --private
    """
    from vdnacli.errors import ConfigError
    from vdnacli.hub import HubOfflineError, push

    s = settings(registry=registry)
    repo_id = repo_id or s.hub_repo
    if not repo_id:
        raise ConfigError("give the repo id (vdna push NAME REPO_ID) or set hub_repo in vdna.yaml / VDNA_HUB_REPO")
    if s.offline:
        raise HubOfflineError("pushing needs the network but offline mode is on (HF_HUB_OFFLINE / VDNA_OFFLINE / "
                              "offline in vdna.yaml): turn it off and push again")
    report = push(open_catalog(s.registry), name, repo_id, private=private, revision=revision,
                  include_filenames=include_filenames, with_masks=with_masks, repo_type=repo_type,
                  with_thumbnails=with_thumbnails)
    out = _emit_report(report, json)
    if json:
        return
    out.print(f"pushed {name} to {report.url} ({report.revision} @ {report.commit[:12]}"
              f"{', new repo' if report.created else ''})")
    out.table(None, ["file", "sha256"], [[p, h] for p, h in report.files.items()])
    if report.dropped:
        out.note(f"kept private: {', '.join(report.dropped)}")


def _emit_report(report, json: bool) -> Output:
    """Warnings on stderr, then the report as JSON when asked; the caller prints the summary line."""
    out = Output(json=json)
    for w in report.warnings:
        out.warn(w)
    if json:
        out.emit_json(report.as_dict())
    return out


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_cmd)
    app.command("push")(push_cmd)
