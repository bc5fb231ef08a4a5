"""docs/architecture.md stays true: every module is in its map, and imports run one way
(registry/ is storage only: never torch, never vdnacli; the library never imports the CLI)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def modules(package: str) -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path) -> set[str]:
    """Every module an import statement names (top level or inside functions), absolute."""
    out = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_every_module_is_in_the_map():
    missing = [str(p) for p in modules("vdnacli") + modules("registry") if f"`{p.as_posix()}`" not in DOC]
    assert not missing, f"docs/architecture.md's module map misses: {', '.join(missing)}"


def test_the_map_names_no_module_that_is_gone():
    import re

    named = set(re.findall(r"`((?:vdnacli|registry)/[\w/]+\.py)`", DOC))
    gone = sorted(n for n in named if not (ROOT / n).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {', '.join(gone)}"


@pytest.mark.parametrize("path", modules("registry"), ids=str)
def test_registry_imports_neither_torch_nor_vdnacli(path):
    bad = sorted(m for m in imported(path) if m.split(".")[0] in ("torch", "vdnacli", "timm", "typer", "rich", "PIL"))
    assert not bad, f"{path} imports {bad}: registry/ is storage only"


def test_library_never_imports_the_cli():
    bad = {str(p): sorted(m for m in imported(p) if m.startswith("vdnacli.cli"))
           for p in modules("vdnacli") if "cli" not in p.parts and p.name != "__main__.py"}  # (the entry point)
    bad = {p: m for p, m in bad.items() if m}
    assert not bad, f"library modules import the CLI: {bad}"
