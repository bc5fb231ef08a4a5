"""The environment, read at call time, in one place: truthy flags, offline mode, the HF cache.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import; vdna reads
them here at each call, so a variable set later in the same process (tests, notebooks) and
the --offline flag both work. A leaf module: it imports nothing of vdna.
"""
from __future__ import annotations

import os
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")


def truthy(value) -> bool:
    """True for 1 / true / yes / on (any case, surrounding blanks ignored) and for True."""
    if isinstance(value, bool):
        return value
    return str(value if value is not None else "").strip().lower() in _TRUE


def flag(name: str) -> bool:
    """An environment variable read as a truthy flag (absent = False)."""
    return truthy(os.environ.get(name))


def is_offline(asked: bool | None = False) -> bool:
    """Offline if asked (--offline), or by VDNA_OFFLINE / HF_HUB_OFFLINE in the environment now."""
    return bool(asked) or flag("VDNA_OFFLINE") or flag("HF_HUB_OFFLINE")


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder now: HF_HUB_CACHE, else HF_HOME/hub, else the library's default."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(env["HF_HUB_CACHE"])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE).expanduser()
    except ImportError:  # the cache location huggingface_hub documents
        base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "huggingface" / "hub"


def hf_endpoint() -> str:
    """The Hub endpoint now (HF_ENDPOINT, else huggingface_hub's default), without a trailing slash."""
    value = os.environ.get("HF_ENDPOINT")
    if not value:
        try:
            from huggingface_hub import constants

            value = constants.ENDPOINT
        except ImportError:
            value = "https://huggingface.co"
    return value.rstrip("/")
