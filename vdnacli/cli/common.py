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


def resolve_focus(catalog, mask: str | None, ignore: str | None, layers, neurons, reference_meta: dict):
    """Turn --mask / --ignore into (layers, neurons, weights) for the catalog's comparisons."""
    from vdnacli.errors import ConfigError

    if mask and ignore:
        raise ConfigError("use either --mask or --ignore, not both")
    name = mask or ignore
    if not name:
        return layers, neurons, None
    if neurons:
        raise ConfigError("--neuron cannot be combined with a mask")
    m = catalog.get_mask(name)
    if (m.kind == "focus") != bool(mask):
        want = "--mask" if m.kind == "focus" else "--ignore"
        raise ConfigError(f"'{name}' is a {m.kind} mask: pass it with {want}")
    m.check(reference_meta)
    return m.focus(layers)
