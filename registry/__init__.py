"""HDF5-backed, file-based storage of named entries (metadata + arrays).

Storage only: this package knows nothing about neural networks or DNAs and must
never import torch. The DNA layer (`vdnacli`) decides what the arrays mean.
"""
from registry.errors import (
    EntryChangedError,
    EntryExistsError,
    EntryNotFoundError,
    InvalidNameError,
    RegistryError,
    RegistryNotFoundError,
    CorruptEntryError,
)
from registry import names
from registry.layout import Caps
from registry.store import Registry, validate_name

__all__ = [
    "Registry",
    "validate_name",
    "RegistryError",
    "RegistryNotFoundError",
    "Caps",
    "names",
    "EntryExistsError",
    "EntryNotFoundError",
    "InvalidNameError",
    "CorruptEntryError",
    "EntryChangedError",
]
