"""Shard patterns: brace expansion (`shard-{000..099}.tar`, `{train,val}/*.tar`) and globs.

Braces are expanded first (numeric ranges keep their zero padding), then each result is
globbed if it holds *, ? or [ (recursive ** allowed). Names are reported relative to the
pattern's fixed folder, so no absolute path reaches a report or a DNA.
"""
from __future__ import annotations

import glob
import os
import re

from vdnacli.errors import SourceError

MAX_EXPANSION = 1_000_000  # names a brace pattern may expand to
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$")


def has_braces(text: str) -> bool:
    return _first_group(text) is not None


def has_magic(text: str) -> bool:
    return glob.has_magic(text)


def is_pattern(text: str) -> bool:
    return has_braces(text) or has_magic(text)


def _first_group(text: str, start: int = 0) -> tuple[int, int, list[str]] | None:
    """(open, close, alternatives) of the first {...} that expands (a comma or a range)."""
    i = text.find("{", start)
    while i != -1:
        depth, parts, last = 0, [], i + 1
        for j in range(i, len(text)):
            c = text[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    parts.append(text[last:j])
                    if len(parts) > 1:
                        return i, j, parts
                    m = _RANGE.match(parts[0])
                    if m:
                        return i, j, _range(m)
                    break
            elif c == "," and depth == 1:
                parts.append(text[last:j])
                last = j + 1
        i = text.find("{", i + 1)
    return None


def _range(m: re.Match) -> list[str]:
    a, b = m.group(1), m.group(2)
    step = int(m.group(3) or 1) or 1
    lo, hi = int(a), int(b)
    digits = [a.lstrip("-"), b.lstrip("-")]
    padded = any(len(d) > 1 and d.startswith("0") for d in digits)  # {000..099}: keep the zeros, as bash does
    width = max(len(d) for d in digits) if padded else 0
    count = abs(hi - lo) // step + 1
    if count > MAX_EXPANSION:
        raise SourceError(f"brace range {{{m.group(0)}}} expands to {count:,} names (at most {MAX_EXPANSION:,})")
    seq = range(lo, hi + 1, step) if hi >= lo else range(lo, hi - 1, -step)
    return [f"{'-' if n < 0 else ''}{abs(n):0{width}d}" for n in seq]


def expand_braces(text: str) -> list[str]:
    """All names a brace pattern stands for, in order (bash's expansion, without sequences of letters)."""
    out: list[str] = []
    todo = [text]
    while todo:
        t = todo.pop()
        g = _first_group(t)
        if g is None:
            out.append(t)
        else:
            i, j, alts = g
            todo.extend(t[:i] + a + t[j + 1 :] for a in reversed(alts))
        if len(out) + len(todo) > MAX_EXPANSION:
            raise SourceError(f"{text} expands to more than {MAX_EXPANSION:,} names")
    return out


def fixed_root(pattern: str) -> str:
    """The folder of the pattern's part before any brace or glob character."""
    cut = len(pattern)
    for ch in "{*?[":
        k = pattern.find(ch)
        if k != -1:
            cut = min(cut, k)
    head = pattern[:cut]
    return head if head.endswith(os.sep) else os.path.dirname(head)


def resolve_local(pattern: str) -> tuple[list[tuple[str, str]], list[str]]:
    """([(name relative to the pattern's root, path)], [names that do not exist]) in pattern order."""
    root = fixed_root(pattern)
    found, missing, seen = [], [], set()
    for name in expand_braces(pattern):
        paths = sorted(glob.glob(name, recursive=True)) if has_magic(name) else [name]
        for p in paths:
            if not os.path.exists(p):
                missing.append(_rel(p, root))
                continue
            if p in seen or os.path.isdir(p):
                continue
            seen.add(p)
            found.append((_rel(p, root), p))
    return found, missing


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root) if root else path
    return rel.replace(os.sep, "/")
