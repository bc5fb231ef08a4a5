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
        plain = not self.out.is_terminal or _no_color()
        t = Table(title=title, show_lines=False, title_justify="left", box=None if plain else HEAVY_HEAD,
                  pad_edge=False)
        numeric = numeric or set()
        for i, c in enumerate(columns):
            t.add_column(c, justify="right" if i in numeric else "left")
        for r in rows:
            t.add_row(*[fmt(v) for v in r])
        self.out.print(t)

    def print(self, text: str) -> None:
        self.out.print(text)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}")


def fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.2f}"
    if v is None:
        return "—"
    return str(v)


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
