"""`vdna demo`: a small real catalog from images that install offline, then real answers."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vdnacli import samples
from vdnacli.build import AddRequest, add
from vdnacli.catalog import Catalog
from vdnacli.settings import ComputeSettings


@dataclass
class DemoResult:
    entries: list[str]
    nearest: dict[str, tuple[str, float]]
    twins_ok: bool


def twin(name: str) -> str:
    return name[:-1] + ("b" if name.endswith("a") else "a")


def run_demo(catalog: Catalog, per_half: int = 50, device: str = "auto", workers: int = 2,
             on_entry=None, progress=None) -> DemoResult:
    tmp = Path(tempfile.mkdtemp(prefix="vdna-demo-"))
    try:
        sets = samples.write_demo_sets(tmp, per_half)
        names = []
        for key, folder in sets.items():
            name = f"demo-{key}"
            settings = ComputeSettings.for_extractor("efficientnet-lite0", kinds=("hist", "gauss"))
            dna, report = add(catalog, AddRequest(name=name, source=folder, settings=settings, device=device,
                                                  workers=workers, replace=True), progress=progress)
            names.append(name)
            if on_entry:
                on_entry(name, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nearest = {}
    for n in names:
        ranked, _ = catalog.nearest(n, top=1, candidates=names)
        nearest[n] = ranked[0]
    ok = all(nearest[n][0] == twin(n) for n in names)
    return DemoResult(entries=names, nearest=nearest, twins_ok=ok)
