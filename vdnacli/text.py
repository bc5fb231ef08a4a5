"""Words around numbers in messages: "1 image", "3 images", "1 entry", "2 entries"."""
from __future__ import annotations

_IRREGULAR = {"entry": "entries", "is": "are", "was": "were", "DNA": "DNAs"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` followed by `word` in the right number (`many` overrides the plural form)."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many or _IRREGULAR.get(word) or word + 's'}"
