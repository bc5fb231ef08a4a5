"""Helpers shared by the command modules: settings and the catalog they open."""
from __future__ import annotations

from pathlib import Path

from vdnacli.config import Settings, load_settings


def settings(**flags) -> Settings:
    return load_settings(**flags)


def open_catalog(registry: Path | None):
    from vdnacli.catalog import Catalog

    return Catalog(settings(registry=registry).registry)


def split_csv(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out or None
