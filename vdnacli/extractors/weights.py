"""Resolve and verify weight files; loading is always safe (no unpickling of objects)."""
from __future__ import annotations

import hashlib
import importlib
from functools import lru_cache
from pathlib import Path

from vdnacli.errors import ExtractorError
from vdnacli.extractors.spec import ExtractorSpec


@lru_cache(maxsize=32)
def file_sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    st = Path(path).stat()
    return file_sha256(str(path), st.st_mtime_ns, st.st_size)


def locate(spec: ExtractorSpec) -> Path | None:
    """The local weight file if present, else None (never downloads)."""
    src = spec.weights
    if src.kind == "package":
        module, _, attr = src.location.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return None
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
        path = Path(obj())
        return path if path.is_file() else None
    raise ExtractorError(f"extractor '{spec.name}': unsupported weight source {src.kind!r}")


def resolve(spec: ExtractorSpec, override: Path | None = None) -> tuple[Path, str]:
    """(path, sha256) of the weights to use, checked against the pinned hash."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise ExtractorError(f"weights file not found: {path}")
        return path, sha256_of(path)
    path = locate(spec)
    if path is None:
        raise ExtractorError(f"weights for '{spec.name}' are not installed; {spec.weights.install_hint}")
    digest = sha256_of(path)
    if spec.weights.sha256 and digest != spec.weights.sha256:
        raise ExtractorError(
            f"weights for '{spec.name}' at {path} have sha256 {digest[:12]}…, expected {spec.weights.sha256[:12]}…; "
            "reinstall the weights package"
        )
    return path, digest


def load_state_dict(path: Path) -> dict:
    """Tensors only: safetensors, or torch.load(weights_only=True)."""
    import torch

    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable or unsafe file is a user error
        raise ExtractorError(f"cannot load weights {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ExtractorError(f"{path} does not hold a state dict")
    return sd
