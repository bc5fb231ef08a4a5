"""One error hierarchy; the CLI maps each to a one-line message and the exit code of its class.

Exit codes by class (docs/cli.md keeps the table users read):

  0    success
  1    error         any other user error: a bad value, a source with no images, a name taken
  2    usage         the command line itself: unknown command or option, missing argument
  3    not-found     no such entry, mask, layer, extractor, registry, path or reference row/column
  4    incompatible  DNAs (or a DNA and a mask) that cannot be compared or merged as asked
  5    integrity     a damaged, forged or malformed file: entry, DNA pair, weights, image (--strict)
  6    network       offline, a download or the Hub failed or refused
  130  interrupted   Ctrl-C (SIGINT)

Each class carries its `code` and `kind`; `classify` also maps the storage layer's errors
(registry.RegistryError, which knows nothing of the CLI). Verdict commands (drift, verify)
exit at least 2 on an error, since their 1 is an answer.
"""
from __future__ import annotations

import difflib
from typing import Iterable

USAGE, NOT_FOUND, INCOMPATIBLE, INTEGRITY, NETWORK, INTERRUPTED = 2, 3, 4, 5, 6, 130


class VdnaError(Exception):
    """Base of every error a user can cause."""

    code = 1
    kind = "error"


class NotFoundError(VdnaError):
    """A name or path that matches nothing (its message names the closest ones)."""

    code = NOT_FOUND
    kind = "not-found"


class NetworkError(VdnaError):
    """Offline, or a download / remote service failed or refused."""

    code = NETWORK
    kind = "network"


class IntegrityError(VdnaError):
    """Damaged, forged or malformed data."""

    code = INTEGRITY
    kind = "integrity"


class SourceError(VdnaError):
    """A source that is empty of images, unreadable or of an unsupported kind."""


class SourceNotFoundError(SourceError, NotFoundError):
    """A path that does not exist, a glob or shard pattern that matches nothing."""


class ImageDecodeError(IntegrityError):
    """An image that cannot be decoded (raised only with --strict)."""


class IncompatibleDNAError(VdnaError):
    """Two DNAs that cannot be compared or merged."""

    code = INCOMPATIBLE
    kind = "incompatible"


class ExtractorError(VdnaError):
    """Unknown extractor, missing or mismatching weights."""


class UnknownExtractorError(ExtractorError, NotFoundError):
    """An extractor name that no registered extractor (or timm model) has."""


class WeightsUnavailableError(ExtractorError, NetworkError):
    """Weights not cached and not downloadable (offline, or the download failed)."""


class FormatError(IntegrityError):
    """A malformed DNA, ranges or reference file."""


class ConfigError(VdnaError):
    """A bad setting in vdna.yaml, the environment or an option."""


class MissingExtraError(VdnaError):
    """A command whose optional dependencies are not installed (see vdnacli/extras.py)."""


class Interrupted(VdnaError):
    """Ctrl-C: never raised by the library; the CLI's kind and code for an interrupt."""

    code = INTERRUPTED
    kind = "interrupted"


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The names among `choices` closest to `name` (difflib ratio, best first)."""
    choices = [str(c) for c in choices]
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    if not found:  # a different case or a prefix is still a likely typo
        low = name.lower()
        found = [c for c in choices if c.lower() == low or (len(low) >= 3 and c.lower().startswith(low))][:n]
    return found


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" / " (did you mean 'x' or 'y'?)" or "" when nothing is close."""
    found = closest(name, choices)
    if not found:
        return ""
    quoted = [f"'{c}'" for c in found]
    return f" (did you mean {quoted[0] if len(quoted) == 1 else ', '.join(quoted[:-1]) + ' or ' + quoted[-1]}?)"


def not_found(what: str, name: str, choices: Iterable[str], see: str | None = None, limit: int = 8) -> NotFoundError:
    """The one error of every lookup by name: "no WHAT 'NAME' (did you mean ...?); SEE".

    With no close name, the message lists the choices instead when there are at most `limit`
    (or says there are none)."""
    choices = list(choices)
    hint = did_you_mean(name, choices)
    if not hint:
        if not choices:
            hint = f" (there are none{'; ' + see if see else ''})"
            see = None
        elif len(choices) <= limit:
            hint = f" (choose from {', '.join(choices)})"
    return NotFoundError(f"no {what} '{name}'{hint}" + (f"; {see}" if see else ""))


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, kind) of an error that reaches the CLI's edge."""
    if isinstance(exc, VdnaError):
        return exc.code, exc.kind
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    try:
        from registry import errors as reg
    except ImportError:  # pragma: no cover - the registry ships with vdnacli
        return 1, "error"
    if isinstance(exc, (reg.EntryNotFoundError, reg.RegistryNotFoundError)):
        return NOT_FOUND, "not-found"
    if isinstance(exc, reg.CorruptEntryError):
        return INTEGRITY, "integrity"
    return 1, "error"


class OutputError(VdnaError):
    """A file vdna was asked to write outside the registry (an export) that the disk refused."""
