"""Settings, resolved in one place: flag > environment > ./vdna.yaml > default."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vdnacli.env import truthy
from vdnacli.errors import ConfigError

CONFIG_FILE = "vdna.yaml"


def default_registry_path() -> Path:
    """The per-user registry: platformdirs' user data folder (~/.local/share/vdna/registry on Linux,
    honouring XDG_DATA_HOME; ~/Library/Application Support/vdna/registry on macOS; %LOCALAPPDATA%\\vdna
    on Windows). A registry at the place earlier versions used (~/.local/share/vdna/registry, built by
    hand) keeps being used where that differs and the new place holds none."""
    import platformdirs

    new = Path(platformdirs.user_data_dir("vdna", appauthor=False)) / "registry"
    old = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "vdna" / "registry"
    if old != new and (old / "registry.json").is_file() and not (new / "registry.json").is_file():
        return old
    return new


def default_workers() -> int:
    """Decoding processes: one per core up to 16 (a GPU eats ~400 2-megapixel JPEGs/s per 16
    PIL decoders), never fewer than 2 so that decoding overlaps the forward pass."""
    return max(2, min(16, os.cpu_count() or 2))


@dataclass(frozen=True)
class Settings:
    registry: Path
    extractor: str = "efficientnet-lite0"
    device: str = "auto"
    batch_size: int = 32
    workers: int = field(default_factory=lambda: default_workers())
    bins: int = 1000
    hub_repo: str | None = None
    offline: bool = False
    # where the registry setting came from: "flag", "env", the vdna.yaml path, or "default"
    registry_from: str = field(default="default", compare=False)


# Settings.registry_from is provenance, not a setting: the settings are the keys of _ENV
_ENV = {
    "registry": "VDNA_REGISTRY",
    "extractor": "VDNA_EXTRACTOR",
    "device": "VDNA_DEVICE",
    "batch_size": "VDNA_BATCH_SIZE",
    "workers": "VDNA_WORKERS",
    "bins": "VDNA_BINS",
    "hub_repo": "VDNA_HUB_REPO",
    "offline": "VDNA_OFFLINE",
}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    known = {f.name for f in fields(Settings) if f.name in _ENV}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; see vdna.yaml.example")
    return data


def _coerce(name: str, value: Any) -> Any:
    try:
        if name in ("batch_size", "workers", "bins"):
            value = int(value)
            if value < (0 if name == "workers" else 1):
                raise ValueError
        elif name == "offline":
            value = truthy(value)
        elif name == "registry":
            value = Path(str(value)).expanduser()
        elif value is not None:
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid value {value!r} for setting '{name}'") from None
    return value


def load_settings(cwd: Path | None = None, **flags: Any) -> Settings:
    """Resolve every setting; `flags` holds command-line values (None = not given)."""
    cwd = cwd or Path.cwd()
    file_values = _read_yaml(cwd / CONFIG_FILE)
    resolved: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in _ENV:
            continue
        source = "default"
        if flags.get(f.name) is not None:
            value, source = flags[f.name], "flag"
        elif os.environ.get(_ENV[f.name]):
            value, source = os.environ[_ENV[f.name]], "env"
        elif f.name in file_values:
            value, source = file_values[f.name], str(cwd / CONFIG_FILE)
            if f.name == "registry" and not Path(str(value)).expanduser().is_absolute():
                value = cwd / str(value)
        elif f.name == "registry":
            value = default_registry_path()
        else:
            continue
        resolved[f.name] = _coerce(f.name, value)
        if f.name == "registry":
            resolved["registry_from"] = source
    if "HF_HUB_OFFLINE" in os.environ and flags.get("offline") is None and "offline" not in resolved:
        resolved["offline"] = _coerce("offline", os.environ["HF_HUB_OFFLINE"])
    return Settings(**resolved)


SETTING_NAMES = tuple(_ENV)  # what vdna.yaml may set
