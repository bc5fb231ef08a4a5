"""Image sources: where the images of a DNA come from, as items of (identity, bytes).

SOURCE, as `vdna add` and `open_source` take it:
  folder/                      every image below it (recursive); with --every/--fps: its videos
  photo.jpg                    one image
  list.txt                     one path (relative to the list) or URL per line
  -                            the same, on standard input
  images.zip                   the images in a zip archive (one open archive per worker)
  shards.tar, x.tar.gz         tar / webdataset shards, streamed
  shard-{000..099}.tar, *.tar  brace patterns and globs (of tar shards, tables, videos or images)
  table.parquet / .csv / .jsonl   a column (--column) of images, bytes, paths or URLs
  clip.mp4 (.mkv .avi .mov ...)   sampled frames (--every N, --fps F)
  https://host/x.jpg           one image by URL; https://host/shard-{0..9}.tar: shards by URL
  hf://datasets/ORG/NAME[@REV][/PATH]   a Hugging Face Hub dataset (--split, --column)

Modules: base (items, refs, units, Source, SourceOptions), folder, archive (zip, tar),
patterns (braces, globs), table, url, hf, video, stdin, memory (Python objects).
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from vdnacli.errors import ConfigError, SourceError, SourceNotFoundError
from vdnacli.sources.base import (HANDLES, IMAGE_EXTENSIONS, MAX_FILE_BYTES, FailedRef, FailedUnit, Item, Ref,
                                  Source, SourceOptions, Unit, is_image, is_table, is_tar, is_url, is_video,
                                  printable, public_url)
from vdnacli.sources.folder import ImageRef

__all__ = ["open_source", "list_images", "close_handles", "Source", "SourceOptions", "ImageRef", "Ref", "Unit",
           "Item", "IMAGE_EXTENSIONS", "MAX_FILE_BYTES", "printable", "public_url"]

KINDS_TEXT = "a folder, image, .txt list, .zip, tar shard, table (.parquet/.csv/.jsonl), video, URL, hf:// dataset or -"


def open_source(source, options: SourceOptions | None = None) -> Source:
    """The Source that SOURCE names (see the module's docstring); SourceError when there is
    nothing to read. Checks what it can before any image is read (the column of a table,
    the files of a Hub dataset, a pattern that matches nothing)."""
    options = options or SourceOptions()
    if isinstance(source, Source):
        return source
    from dataclasses import replace

    src = _open(source, options)
    _check_options(src, options)
    return replace(src, concurrency=options.url_concurrency)


def _check_options(src: Source, options: SourceOptions) -> None:
    """An option the source has no use for is an error, not silently ignored."""
    what = f"{src.label or 'the source'} ({src.kind})"
    if options.column is not None and src.kind not in ("table", "hf"):
        raise ConfigError(f"--column applies to tables and Hub datasets, not to {what}")
    if options.split is not None and src.kind != "hf":
        raise ConfigError(f"--split applies to Hub datasets (hf://datasets/...), not to {what}")
    if (options.every is not None or options.fps is not None) and src.kind != "video":
        raise ConfigError(f"--every and --fps apply to videos, not to {what}")


def _open(source, options: SourceOptions) -> Source:
    spec = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(spec, str):
        raise SourceError(f"a source is a path, URL, hf:// dataset or '-', not a {type(source).__name__} "
                          "(in-memory images: vdnacli.compute)")
    if spec == "-":
        from vdnacli.sources.stdin import stdin_source

        return stdin_source(options)
    if spec.startswith("hf://"):
        from vdnacli.sources.hf import hub_source

        return hub_source(spec, options)
    if is_url(spec):
        return _url_source(spec, options)
    return _local_source(spec, options)


def _url_source(spec: str, options: SourceOptions) -> Source:
    from vdnacli.sources.patterns import expand_braces
    from vdnacli.sources.url import check_scheme, url_ref

    check_scheme(spec)
    urls = expand_braces(spec)
    paths = [urlsplit(u).path for u in urls]
    if all(is_tar(p) for p in paths):
        from vdnacli.sources.archive import tar_shards

        shards, _, origin = tar_shards(spec, options)
        return Source("tar", origin, units=shards, label=public_url(spec))
    if all(is_image(p) for p in paths):
        return Source("url", {"kind": "url", "source_name": public_url(spec)},
                      refs=[url_ref(u, options) for u in urls], label=public_url(spec))
    raise SourceError(f"{public_url(spec)}: a URL source is an image or tar shards (a .txt list or table can "
                      "hold URLs of images)")


def _local_source(spec: str, options: SourceOptions) -> Source:
    from vdnacli.sources.archive import pattern_name
    from vdnacli.sources.patterns import is_pattern, resolve_local

    p = Path(spec)
    label = pattern_name(spec)
    if p.exists():
        found, missing = [(p.name, spec)], []
        if p.is_dir():
            return _folder(p, options, label)
    elif is_pattern(spec):
        found, missing = resolve_local(spec)
        if not found:
            raise SourceNotFoundError(f"nothing matches {label}"
                              + (f" ({len(missing)} name(s) expanded, none exists, e.g. {missing[0]})" if missing
                                 else ""))
    else:
        raise SourceNotFoundError(f"path does not exist: {spec}")
    names = [n for n, _ in found]
    single = len(found) == 1 and not is_pattern(spec)
    if all(is_tar(n) for n in names):
        from vdnacli.sources.archive import tar_shards

        shards, missing, origin = tar_shards(spec, options)
        units = shards + [FailedUnit(m, "no such shard") for m in missing]
        return Source("tar", origin, units=units, label=label)
    if all(is_table(n) for n in names):
        return _tables(found, options, label)
    if all(is_video(n) for n in names):
        from vdnacli.sources.video import video_units

        return Source("video", _video_origin(spec, found, options), units=video_units(found, options), label=label)
    if single and p.suffix.lower() == ".txt":
        from vdnacli.sources.folder import from_list

        return _nonempty(Source("list", {"kind": "list", "source_name": label}, refs=from_list(p, options),
                                label=label))
    if single and p.suffix.lower() == ".zip":
        from vdnacli.sources.archive import zip_refs

        return _nonempty(Source("zip", {"kind": "zip", "source_name": label}, refs=zip_refs(p), label=label))
    if all(is_image(n) for n in names):
        refs = [ImageRef(name=printable(n), path=path) for n, path in found]
        refs += [FailedRef(m, "no such file") for m in missing]
        kind = "image" if single else "images"
        return Source(kind, {"kind": kind, "source_name": label}, refs=refs, label=label)
    if single:
        raise SourceError(f"{label} is not {KINDS_TEXT}")
    raise SourceError(f"{label} matches files of several kinds ({', '.join(sorted(set(_kind(n) for n in names)))}); "
                      "a pattern names tar shards, tables, videos or images, one kind at a time")


def _kind(name: str) -> str:
    return ("tar" if is_tar(name) else "table" if is_table(name) else "video" if is_video(name)
            else "image" if is_image(name) else os.path.splitext(name)[1] or "other")


def _folder(p: Path, options: SourceOptions, label: str) -> Source:
    from vdnacli.sources.folder import walk

    if options.every is not None or options.fps is not None:  # a folder of videos
        from vdnacli.sources.video import video_units

        found = []
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames.sort()
            for fn in sorted(filenames):
                if is_video(fn):
                    full = os.path.join(dirpath, fn)
                    found.append((printable(os.path.relpath(full, p).replace(os.sep, "/")), full))
        if not found:
            raise SourceError(f"no videos found in {label} (--every/--fps sample the videos of a folder)")
        return Source("video", _video_origin(str(p), found, options), units=video_units(found, options), label=label)
    return _nonempty(Source("folder", {"kind": "folder", "source_name": label}, refs=walk(p), label=label))


def _video_origin(spec: str, found: list, options: SourceOptions) -> dict:
    from vdnacli.sources.archive import pattern_name

    return {"kind": "video", "source_name": pattern_name(spec), "files": [n for n, _ in found[:1000]],
            "files_total": len(found), "every": options.every, "fps": options.fps}


def _tables(found: list[tuple[str, str]], options: SourceOptions, label: str) -> Source:
    from dataclasses import replace

    from vdnacli.sources.table import TableFile, table_source

    refs, units, column = [], [], options.column
    for name, path in found:
        r, u, origin = table_source(TableFile(printable(name), path), replace(options, column=column))
        column = origin["column"]  # the other tables are read with the first one's column
        refs += r or []
        units += u or []
    origin = {"kind": "table", "table": label, "column": column}
    if len(found) > 1:
        origin["tables"] = [n for n, _ in found[:1000]]
    if units and refs:
        raise SourceError(f"the tables of {label} hold images in some and paths in others: add them one at a time")
    if not units and not refs:
        raise SourceError(f"no rows in {label}")
    return Source("table", origin, units=units, label=label) if units else Source("table", origin, refs=refs,
                                                                                  label=label)


def _nonempty(src: Source) -> Source:
    if not src.refs:
        raise SourceError(f"no images found in {src.label} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return src


def list_images(source, limit: int | None = None, seed: int = 0, options: SourceOptions | None = None) -> list[Ref]:
    """All images of a random-access source (folder, image, list, zip, table of paths...),
    in order; `limit` takes a seeded random subset. Streamed sources (tar shards, videos,
    tables of bytes) are read by `open_source` + the pipeline."""
    src = open_source(source, options)
    if src.streamed:
        raise SourceError(f"{src.label} is streamed ({src.kind}); this command reads folders, images, lists, "
                          "zips and tables of paths")
    return src.select(limit, seed).refs


def close_handles() -> None:
    """Close the archives this process keeps open (zip handles) after a run."""
    HANDLES.close_all()
