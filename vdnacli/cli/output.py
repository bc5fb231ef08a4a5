"""One output helper: rich tables for people, plain JSON for scripts, notes on stderr."""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass

from rich.box import HEAVY_HEAD
from rich.console import Console
from rich.table import Table


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


@dataclass
class Output:
    json: bool = False
    quiet: bool = False

    def __post_init__(self):
        # Not a terminal: no colour codes and no truncated columns (tables fit their content).
        width = None if sys.stdout.isatty() else 250
        # markup=False: text holds user data (file names like 'a/[/b].png'), never rich markup.
        self.out = Console(no_color=_no_color(), highlight=False, soft_wrap=True, width=width, markup=False)
        self.err = Console(stderr=True, no_color=_no_color(), highlight=False, soft_wrap=True, markup=False)

    def emit_json(self, data) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")

    def table(self, title: str | None, columns: list[str], rows: list[list], numeric: set[int] | None = None) -> None:
        """Rows under a header; floats to SIG_DIGITS significant digits, with one number of decimals
        per column (`column_formats`). Piped (not a terminal): plain text, no trailing spaces."""
        numeric = numeric or set()
        cells = format_columns(rows, len(columns))
        if not self.out.is_terminal:
            _plain_table(title, columns, cells, numeric)
            return
        t = Table(title=title, show_lines=False, title_justify="left", box=None if _no_color() else HEAVY_HEAD,
                  pad_edge=False)
        for i, c in enumerate(columns):
            t.add_column(c, justify="right" if i in numeric else "left")
        for r in cells:
            t.add_row(*r)
        self.out.print(t)

    def print(self, text: str) -> None:
        self.out.print(text)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}")


SIG_DIGITS = 4
MAX_DECIMALS = 7  # smaller columns (and values that would show as 0) are written as 1.234e-09


def _is_float(v) -> bool:
    return isinstance(v, float) or type(v).__name__ in ("float32", "float64", "float16")


def _decimals(values: list[float], sig: int = SIG_DIGITS) -> int:
    """Decimals that give the column's largest finite magnitude `sig` significant digits."""
    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not finite:
        return 1
    top = max(finite)
    decimals = max(0, sig - 1 - math.floor(math.log10(top)))
    if decimals and abs(float(f"{top:.{decimals}f}")) >= 10 ** (sig - decimals):  # 0.99999 rounds up to 1.000
        decimals -= 1
    return min(decimals, MAX_DECIMALS)


def fmt_sig(v, decimals: int | None = None) -> str:
    """One number as tables show it: SIG_DIGITS significant digits (or `decimals` fixed);
    None and NaN are "—"; a nonzero value that would round to 0 keeps its significant digits."""
    if v is None:
        return "—"
    if not _is_float(v):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if decimals is None:
        decimals = _decimals([v])
    text = f"{v:.{decimals}f}"
    if v != 0 and (float(text) == 0 or abs(v) >= 1e12):
        return f"{v:.{SIG_DIGITS - 1}e}"
    return text


def format_columns(rows: list[list], width: int) -> list[list[str]]:
    """Cells as text: each column's floats share one number of decimals (its largest value to
    SIG_DIGITS significant digits), so a column never mixes precisions."""
    decimals = []
    for i in range(width):
        decimals.append(_decimals([float(r[i]) for r in rows if i < len(r) and _is_float(r[i])]))
    return [[fmt_sig(v, decimals[i]) for i, v in enumerate(r)] for r in rows]


def fmt(v) -> str:
    return fmt_sig(v)


def _plain_table(title: str | None, columns: list[str], cells: list[list[str]], numeric: set[int]) -> None:
    """The table for pipes and files: two spaces between columns, numbers right-aligned, no
    padding after the last cell of a line, no box characters."""
    widths = [max([len(c)] + [len(r[i]) for r in cells if i < len(r)]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    for row in [columns, *cells]:
        parts = [(str(v).rjust(w) if i in numeric else str(v).ljust(w)) for i, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def bar(value: float, vmax: float, width: int = 20) -> str:
    """A small inline bar so distances can be compared at a glance."""
    if vmax <= 0 or not math.isfinite(value):
        return ""
    n = int(round(width * min(value / vmax, 1.0)))
    return "█" * n + "·" * (width - n)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)
