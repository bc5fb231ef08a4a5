"""One error hierarchy; the CLI maps each to a one-line message and exit code 1."""


class VdnaError(Exception):
    """Base of every error a user can cause."""


class SourceError(VdnaError):
    """A path that is missing, empty of images, or unreadable."""


class ImageDecodeError(VdnaError):
    """An image that cannot be decoded (raised only with --strict)."""


class IncompatibleDNAError(VdnaError):
    """Two DNAs that cannot be compared or merged."""


class ExtractorError(VdnaError):
    """Unknown extractor, missing or mismatching weights."""


class FormatError(VdnaError):
    """A malformed DNA, ranges or reference file."""


class ConfigError(VdnaError):
    """A bad setting in vdna.yaml, the environment or an option."""


class MissingExtraError(VdnaError):
    """A command whose optional dependencies are not installed (see vdnacli/extras.py)."""


class OutputError(VdnaError):
    """A file vdna was asked to write outside the registry (an export) that the disk refused."""
