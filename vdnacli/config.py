"""Settings, resolved in one place: flag > environment > ./vdna.yaml > user config > default.

The user config is `config.yaml` in platformdirs' user config folder (~/.config/vdna/ on Linux,
honouring XDG_CONFIG_HOME; ~/Library/Application Support/vdna/ on macOS; %LOCALAPPDATA%\\vdna\\
on Windows), or the file VDNA_CONFIG names. Both files take the same keys (vdna.yaml.example);
a relative registry path is relative to the folder of the file that sets it. `explain` says
where each setting came from (`vdna config`).
"""
from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from vdnacli.env import truthy
from vdnacli.errors import ConfigError

CONFIG_FILE = "vdna.yaml"  # the project file, in the current folder
USER_CONFIG_FILE = "config.yaml"  # the user file, in the user config folder
CONFIG_ENV = "VDNA_CONFIG"  # a path: the user file to read instead


def user_config_path() -> Path:
    """The user config file: $VDNA_CONFIG, else config.yaml in platformdirs' user config folder
    (it need not exist)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.path.expandvars(os.environ[CONFIG_ENV])).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("vdna", appauthor=False)) / USER_CONFIG_FILE


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
    # where the registry setting came from: "flag", "env", the path of the file that set it
    # (./vdna.yaml or the user config), or "default"
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


@dataclass(frozen=True)
class Origin:
    """Where a setting's value came from."""

    kind: str  # "flag", "env", "project" (./vdna.yaml), "user" (the user config) or "default"
    detail: str | None = None  # the environment variable, or the file's path

    def __str__(self) -> str:
        if self.kind == "env":
            return f"env {self.detail}"
        if self.kind == "project":
            return f"./{CONFIG_FILE}" if Path(self.detail).parent == Path.cwd() else str(self.detail)
        if self.kind == "user":
            return f"user config {self.detail}"
        return self.kind


def _user_values() -> tuple[Path, dict]:
    path = user_config_path()
    if os.environ.get(CONFIG_ENV) and not path.is_file():
        raise ConfigError(f"{CONFIG_ENV} names {path}, which is not a file")
    return path, _read_yaml(path)


def explain(cwd: Path | None = None, **flags: Any) -> dict[str, tuple[Any, Origin]]:
    """Each setting's value and where it came from, by precedence: flag > environment >
    ./vdna.yaml > user config > default. `flags` holds command-line values (None = not given)."""
    cwd = cwd or Path.cwd()
    project = cwd / CONFIG_FILE
    project_values = _read_yaml(project)
    user, user_values = _user_values()
    out: dict[str, tuple[Any, Origin]] = {}
    for f in fields(Settings):
        if f.name not in _ENV:
            continue
        if flags.get(f.name) is not None:
            value, origin = flags[f.name], Origin("flag")
        elif os.environ.get(_ENV[f.name]):
            value, origin = os.environ[_ENV[f.name]], Origin("env", _ENV[f.name])
        elif f.name == "offline" and "HF_HUB_OFFLINE" in os.environ and f.name not in project_values \
                and f.name not in user_values:
            value, origin = os.environ["HF_HUB_OFFLINE"], Origin("env", "HF_HUB_OFFLINE")
        elif f.name in project_values or f.name in user_values:
            path, values, kind = (project, project_values, "project") if f.name in project_values \
                else (user, user_values, "user")
            value, origin = values[f.name], Origin(kind, str(path))
            if f.name == "registry" and value is not None and not Path(str(value)).expanduser().is_absolute():
                value = path.parent / str(value)
        elif f.name == "registry":
            value, origin = default_registry_path(), Origin("default")
        else:
            value = f.default if f.default_factory is MISSING else f.default_factory()  # type: ignore[misc]
            out[f.name] = (value, Origin("default"))
            continue
        out[f.name] = (_coerce(f.name, value), origin)
    return out


def load_settings(cwd: Path | None = None, **flags: Any) -> Settings:
    """Resolve every setting; `flags` holds command-line values (None = not given)."""
    resolved = explain(cwd, **flags)
    values = {name: value for name, (value, _) in resolved.items()}
    origin = resolved["registry"][1]
    registry_from = origin.detail if origin.kind in ("project", "user") else origin.kind
    return Settings(**values, registry_from=registry_from)


SETTING_NAMES = tuple(_ENV)  # what vdna.yaml may set
