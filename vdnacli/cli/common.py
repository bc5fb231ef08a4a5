"""Helpers shared by the command modules: settings and the catalog they open."""
from __future__ import annotations

import sys
from pathlib import Path

from vdnacli.config import CONFIG_FILE, Settings, load_settings

_noted: set[str] = set()


def settings(**flags) -> Settings:
    """Resolved settings; a registry chosen by a vdna.yaml is named on stderr (once per process),
    so a vdna.yaml in an untrusted folder cannot redirect the registry silently."""
    s = load_settings(**flags)
    if s.registry_from == str(Path.cwd() / CONFIG_FILE) and str(s.registry) not in _noted:
        _noted.add(str(s.registry))
        print(f"using registry {s.registry} from ./{CONFIG_FILE}", file=sys.stderr)
    return s


def open_catalog(registry: Path | None, create: bool = False):
    """The catalog at --registry (or the settings' registry). Read commands (the default) refuse a
    path that holds no registry ("no registry at PATH"); commands that store (add, import, pull,
    demo) pass create=True, and the registry is then created by their first write."""
    from registry import Registry
    from vdnacli.catalog import Catalog

    root = settings(registry=registry).registry
    if not create:
        Registry(root, create=False)  # RegistryNotFoundError: one line naming the path
    return Catalog(root)


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
