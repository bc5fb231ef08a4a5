"""Tables: .parquet (pyarrow, the `tables` extra), .csv and .jsonl (standard library), one
column of images.

A column may hold image structs ({"bytes", "path"}: the Hugging Face `datasets` Image
feature), raw bytes, or text: a path (relative to the table's folder, or to the table's
folder in a Hub repo) or a URL. Columns of bytes and structs are streamed, one parquet row
group at a time (memory follows the row group, not the file); columns of text become one
ref per row, read (or fetched, URLs in parallel) on their own.

The column is --column, else the first Image column (the `datasets` metadata of the file,
or the first {bytes, path} struct), else the first bytes column, else a text column with an
obvious name (image, file_name, path, url, ...); a table without one is an error that lists
its columns. A null or empty cell is a skipped-and-reported image, as is a cell whose bytes
are not an image.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from vdnacli.errors import SourceError
from vdnacli.sources.base import (MAX_FILE_BYTES, FailedRef, Item, Ref, SourceOptions, Unit, Want, display_path,
                                  is_url, printable, public_url)

MAX_CHUNK_BYTES = 4 << 30  # a parquet column chunk (one row group) larger than this is refused unread
MAX_LINE_BYTES = 1 << 20  # a CSV field or JSONL line longer than this is a bad row
TEXT_NAMES = ("image", "img", "file_name", "filename", "file", "path", "image_path", "filepath", "url", "image_url")
_ROWS_PER_BATCH = 64


def need_pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError("parquet tables need pyarrow: pip install 'vdnacli[tables]'") from None
    return pq


@dataclass(frozen=True)
class TableFile:
    """A table: its public name, and where its bytes are (a local path, or a Hub file
    downloaded on first use). Paths in its cells are relative to its folder."""

    name: str
    path: str | None = None
    hub: Any = None  # vdnacli.sources.hf.HubFile

    def local(self) -> str:
        return self.path if self.hub is None else self.hub.download()

    def cell_ref(self, text: str, name: str, options: SourceOptions) -> Ref:
        if is_url(text):
            from vdnacli.sources.url import url_ref

            return url_ref(text, options, name)
        if self.hub is not None:
            return self.hub.sibling_ref(text, name)
        from vdnacli.sources.folder import ImageRef

        p = Path(text)
        return ImageRef(name=name, path=str(p if p.is_absolute() else Path(self.path).parent / p))


# -- the column ---------------------------------------------------------------------------------------
def _kind_of(arrow_type) -> str | None:
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if "bytes" in names and (pa.types.is_binary(t.field("bytes").type) or pa.types.is_large_binary(t.field("bytes").type)):
            return "image"
        return None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    return None


def _hf_image_columns(schema) -> list[str]:
    """Image columns named by the `datasets` library's metadata in the parquet file."""
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return []
    try:
        feats = json.loads(meta).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return []
    return [k for k, v in feats.items() if isinstance(v, dict) and v.get("_type") == "Image"] if isinstance(feats, dict) else []


def _columns_text(columns: list[tuple[str, str]]) -> str:
    return ", ".join(f"{n} ({t})" for n, t in columns) or "none"


def pick_column(table: str, columns: list[tuple[str, str, str | None]], options: SourceOptions,
                hf_images: list[str] = ()) -> tuple[str, str]:
    """(column, kind) from [(name, type text, kind or None)]; SourceError lists the columns."""
    listing = _columns_text([(n, t) for n, t, _ in columns])
    kinds = {n: k for n, _, k in columns}
    if options.column is not None:
        if options.column not in kinds:
            raise SourceError(f"{table} has no column '{options.column}'; its columns: {listing}")
        kind = kinds[options.column]
        if kind is None:
            typ = next(t for n, t, _ in columns if n == options.column)
            raise SourceError(f"column '{options.column}' of {table} holds {typ}: not images, bytes, paths or URLs")
        return options.column, kind
    for n in hf_images:
        if kinds.get(n) == "image":
            return n, "image"
    for want in ("image", "bytes"):
        for n, _, k in columns:
            if k == want:
                return n, k
    texts = [n for n, _, k in columns if k == "text"]
    for n in texts:
        if n.lower() in TEXT_NAMES:
            return n, "text"
    if len(columns) == 1 and texts:
        return texts[0], "text"
    raise SourceError(f"no image column found in {table}; give --column (its columns: {listing})")


# -- parquet -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetPart(Unit):
    """Row groups of one parquet file, streamed (bytes or image-struct column)."""

    name: str
    table: TableFile
    column: str
    kind: str  # "image" | "bytes" | "text"
    row_groups: tuple[int, ...] | None = None  # None: all (a Hub file not yet downloaded)
    first_row: int = 0
    rows: int | None = None
    options: SourceOptions = SourceOptions()

    def known_count(self) -> int | None:
        return self.rows

    def count(self) -> int:
        if self.rows is not None:
            return self.rows
        pq = need_pyarrow()
        return pq.ParquetFile(self.table.local()).metadata.num_rows

    def items(self, want: Want | None, report: bool = True) -> Iterator[Item]:
        pq = need_pyarrow()
        try:
            pf = pq.ParquetFile(self.table.local(), pre_buffer=False)
            groups = list(self.row_groups) if self.row_groups is not None else list(range(pf.num_row_groups))
            first = self.first_row if self.row_groups is not None else 0
            batches = pf.iter_batches(batch_size=_ROWS_PER_BATCH, row_groups=groups, columns=[self.column],
                                      use_threads=False)
        except Exception as e:  # pyarrow raises its own types for damaged files
            if report:
                yield Item(self.name, error=f"cannot read table: {_reason(e)}")
            return
        too_big = _oversized_groups(pf, self.column, groups)
        if too_big:
            if report:
                yield Item(self.name, error=f"row group {too_big[0][0]} holds {too_big[0][1] >> 20} MiB of column "
                                            f"'{self.column}' (at most {MAX_CHUNK_BYTES >> 20} MiB): not read")
            return
        pos = 0
        try:
            for batch in batches:
                col = batch.column(0)
                data = col.field("bytes") if self.kind == "image" else col
                paths = col.field("path") if self.kind == "image" and col.type.get_field_index("path") != -1 else None
                for i in range(len(col)):
                    p, pos = pos, pos + 1
                    if want is not None and not want(p):
                        continue
                    name = f"{self.table.name}#{first + p}"
                    if not col[i].is_valid:
                        yield Item(name, error="empty cell (null)")
                    elif self.kind == "text":
                        text = data[i].as_py()
                        yield _read_ref(self.table.cell_ref(text, name, self.options)) if text else \
                            Item(name, error="empty cell")
                    elif data[i].is_valid or paths is None or not paths[i].is_valid:
                        yield _bytes_item(name, data[i].as_py())
                    else:  # an Image struct that names a file instead of holding its bytes
                        yield _read_ref(self.table.cell_ref(paths[i].as_py(), name, self.options))
        except Exception as e:
            if report:
                yield Item(self.name, error=f"damaged table after {pos} row(s): {_reason(e)}")


def _oversized_groups(pf, column: str, groups: list[int]) -> list[tuple[int, int]]:
    """(row group, bytes) of the groups whose chunk of `column` (all its leaves) is too large
    to read, from the file's metadata (before anything is allocated)."""
    meta = pf.metadata
    out = []
    for g in groups:
        rg = meta.row_group(g)
        size = sum(rg.column(j).total_uncompressed_size for j in range(rg.num_columns)
                   if rg.column(j).path_in_schema.split(".")[0] == column)
        if size > MAX_CHUNK_BYTES:
            out.append((g, size))
    return out


def _bytes_item(name: str, data) -> Item:
    if not data:
        return Item(name, error="empty cell (no bytes)")
    if len(data) > MAX_FILE_BYTES:
        return Item(name, error=f"cell too large ({len(data) >> 20} MiB)")
    return Item(name, bytes(data))


def _read_ref(ref: Ref) -> Item:
    try:
        return Item(ref.name, ref.read_bytes())
    except (OSError, KeyError) as e:
        return Item(ref.name, error=f"unreadable: {getattr(e, 'strerror', None) or e}")


def _reason(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def parquet_schema(local: str, table: str):
    pq = need_pyarrow()
    try:
        pf = pq.ParquetFile(local)
    except Exception as e:
        raise SourceError(f"cannot read {table} as parquet: {_reason(e)}") from None
    return pf


def parquet_source(t: TableFile, options: SourceOptions) -> tuple[list | None, list | None, str]:
    """(refs, units, column): units of row groups for bytes/struct columns, refs for text."""
    pf = parquet_schema(t.local(), t.name)
    schema = pf.schema_arrow
    cols = [(f.name, str(f.type), _kind_of(f.type)) for f in schema]
    column, kind = pick_column(t.name, cols, options, _hf_image_columns(schema))
    if kind == "text":
        return _text_refs(t, _parquet_texts(pf, column), options), None, column
    meta = pf.metadata
    units, first = [], 0
    for g in range(meta.num_row_groups):
        rows = meta.row_group(g).num_rows
        if rows:
            units.append(ParquetPart(f"{t.name}[row group {g}]", t, column, kind, (g,), first, rows, options))
        first += rows
    return None, units, column


def _parquet_texts(pf, column: str) -> Iterator[Any]:
    for batch in pf.iter_batches(batch_size=65536, columns=[column], use_threads=False):
        yield from batch.column(0).to_pylist()


def _text_refs(t: TableFile, cells, options: SourceOptions) -> list[Ref]:
    refs: list[Ref] = []
    for row, cell in enumerate(cells):
        name = f"{t.name}#{row}"
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            refs.append(FailedRef(name, "empty cell"))
        elif not isinstance(cell, str):
            refs.append(FailedRef(name, f"not a path or URL ({type(cell).__name__})"))
        else:
            text = cell.strip()
            shown = public_url(text) if is_url(text) else display_path(text)
            try:
                refs.append(t.cell_ref(text, shown, options))
            except SourceError as e:
                refs.append(FailedRef(shown, str(e)))
    return refs


# -- csv / jsonl ---------------------------------------------------------------------------------------
def _open_text(local: str, table: str):
    try:
        return open(local, newline="", encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise SourceError(f"cannot read {table}: {e.strerror}") from None


def csv_source(t: TableFile, options: SourceOptions) -> tuple[list, str]:
    csv.field_size_limit(MAX_LINE_BYTES)
    with _open_text(t.local(), t.name) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if not header:
                raise SourceError(f"{t.name} is empty (no header line)")
            column, _ = pick_column(t.name, [(h, "text", "text") for h in header], options)
            k = header.index(column)
            cells = [row[k] if k < len(row) else None for row in reader if row]  # blank lines are no rows
        except csv.Error as e:
            raise SourceError(f"{t.name} is not a readable CSV file (line {reader.line_num}: {e})") from None
        return _text_refs(t, cells, options), column


def jsonl_source(t: TableFile, options: SourceOptions) -> tuple[list, str]:
    with _open_text(t.local(), t.name) as f:
        rows: list[Any] = []
        keys: dict[str, str] = {}
        for n, line in enumerate(_lines(f)):
            if line is not None and not line.strip():
                continue
            try:
                obj = json.loads(line) if line is not None else _BadLine(n + 1)
            except ValueError:
                obj = _BadLine(n + 1)
            if isinstance(obj, dict):
                for key, v in obj.items():
                    keys.setdefault(key, type(v).__name__ if v is not None else "null")
            rows.append(obj)
    if not keys:
        raise SourceError(f"{t.name} holds no JSON objects")
    column, _ = pick_column(t.name, [(k, v, "text") for k, v in keys.items()], options)
    cells = [(r.get(column) if isinstance(r, dict) else r) for r in rows]
    refs = _text_refs(t, [c if not isinstance(c, _BadLine) else None for c in cells], options)
    for i, c in enumerate(cells):
        if isinstance(c, _BadLine):
            refs[i] = FailedRef(f"{t.name}#{i}", f"line {c.line} is not a JSON object")
    return refs, column


def _lines(f) -> Iterator[str | None]:
    """The lines of a text file; None for a line longer than MAX_LINE_BYTES (read past, not kept)."""
    while True:
        line = f.readline(MAX_LINE_BYTES)
        if not line:
            return
        if len(line) >= MAX_LINE_BYTES and not line.endswith("\n"):
            while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith("\n"):
                pass
            yield None
        else:
            yield line


@dataclass(frozen=True)
class _BadLine:
    line: int


def table_source(t: TableFile, options: SourceOptions) -> tuple[list | None, list | None, dict]:
    """refs or units of a table, and the origin a DNA records (table name + column)."""
    ext = os.path.splitext(t.name)[1].lower()
    if ext == ".parquet":
        refs, units, column = parquet_source(t, options)
    elif ext == ".csv":
        (refs, column), units = csv_source(t, options), None
    elif ext == ".jsonl":
        (refs, column), units = jsonl_source(t, options), None
    else:
        raise SourceError(f"{t.name}: not a table (.parquet, .csv or .jsonl)")
    return refs, units, {"kind": "table", "table": printable(t.name), "column": column}
