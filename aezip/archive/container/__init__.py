"""The .aez archive container: opaque member payloads, an index at the end, checksums throughout.

See docs/FORMAT.md for the byte layout; ``aezip.archive.container.spec`` is its code twin.
"""

from __future__ import annotations

from aezip.archive.container.reader import ArchiveReader
from aezip.archive.container.spec import FORMAT_VERSION, MAGIC, MemberInfo, MemberKind, validate_member_name
from aezip.archive.container.writer import ArchiveWriter

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "ArchiveReader",
    "ArchiveWriter",
    "MemberInfo",
    "MemberKind",
    "validate_member_name",
]
