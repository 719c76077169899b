"""One exception hierarchy for everything aezip refuses to do.

Every error carries a one-line message meant for a person; the CLI prints it and exits 1.
"""

from __future__ import annotations


class AezipError(Exception):
    """Base class of all aezip errors."""


class FormatError(AezipError):
    """The file is not an .aez archive, or uses a feature this reader does not know."""


class UnsupportedVersionError(FormatError):
    """The archive was written by a newer, incompatible format version."""


class CorruptArchiveError(FormatError):
    """The archive is truncated, damaged or fails a checksum."""


class ModelError(AezipError):
    """A model's weights or configuration are missing, damaged or inconsistent."""


class ModelMismatchError(ModelError):
    """An image was encoded with a model that is not available to decode it."""


class UnsupportedImageError(AezipError):
    """An image cannot be read or cannot be coded."""


class UnsafePathError(AezipError):
    """A member name would escape the destination folder or is otherwise unusable as a path."""
