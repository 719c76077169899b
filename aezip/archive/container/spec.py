"""Constants, byte layouts and name rules of the .aez container: the code twin of docs/FORMAT.md.

Everything that fixes a byte on disk lives here, so the writer, the reader and the spec cannot drift apart.
All integers are little-endian with explicit widths.
"""

from __future__ import annotations

import enum
import re
import struct
import unicodedata
import zlib
from dataclasses import dataclass

from aezip.errors import UnsafePathError

MAGIC = b"\x89AEZ\r\n\x1a\n"
FOOTER_MAGIC = b"\x89AEZIDX\n"
#: The version a writer writes when it uses no feature of a later minor version (RAW and IMAGE members only).
FORMAT_VERSION = (1, 0)
#: The newest version this code writes and fully understands.
LATEST_VERSION = (1, 3)

# Header: magic, major u8, minor u8, flags u32, crc32 of the preceding 14 bytes u32.
HEADER_BODY = struct.Struct("<8sBBI")
HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = HEADER_BODY.size + HEADER_CRC.size

# Archive flags: the low 16 bits must be understood by a reader, the high 16 bits may be ignored.
ARCHIVE_MUST_UNDERSTAND = 0x0000FFFF
ARCHIVE_KNOWN_FLAGS = 0

# Index entry: u16 name length, name, then the fixed fields below, then u32 metadata length, metadata.
ENTRY_NAME_LEN = struct.Struct("<H")
ENTRY_FIXED = struct.Struct("<BHQQIQIq")  # kind, flags, offset, length, crc32, original_size, mode, mtime_ns
ENTRY_META_LEN = struct.Struct("<I")
MIN_ENTRY_SIZE = ENTRY_NAME_LEN.size + ENTRY_FIXED.size + ENTRY_META_LEN.size

# Member flags: the low 8 bits must be understood by a reader, the high 8 bits may be ignored.
MEMBER_MUST_UNDERSTAND = 0x00FF
MEMBER_KNOWN_FLAGS = 0

# Footer: index offset u64, index length u64, index crc32 u32, member count u32, footer magic.
FOOTER = struct.Struct("<QQII8s")
FOOTER_SIZE = FOOTER.size

MAX_NAME_BYTES = 4096
#: Longest single path component, in UTF-8 bytes (NAME_MAX of common file systems).
MAX_COMPONENT_BYTES = 255
MAX_INDEX_SIZE = 1 << 30
MAX_MEMBERS = 1 << 24
MODE_MASK = 0o7777
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


class MemberKind(enum.IntEnum):
    """What a member's payload holds. Ids are stable and never reused."""

    RAW = 1
    IMAGE = 2
    LINK = 3  #: a symbolic link; the payload is its target (UTF-8), see validate_link_target. Since 1.1.
    DIR = 4  #: a folder (written for empty folders); empty payload. Since 1.1.
    #: a model file (safetensors) that coded images of this archive and that aezip does not ship;
    #: the name is the file's sha256 in lowercase hex, not a path: it is never unpacked. Since 1.2.
    MODEL = 5
    #: the context tables (``ans-ctx`` side file, safetensors) of an embedded MODEL member; named by
    #: the file's sha256 like a MODEL member, never unpacked. Since 1.3.
    CONTEXT = 6


#: The minor version (of major 1) that introduced each kind; a writer declares the highest it uses.
KIND_MINOR = {
    MemberKind.RAW: 0,
    MemberKind.IMAGE: 0,
    MemberKind.LINK: 1,
    MemberKind.DIR: 1,
    MemberKind.MODEL: 2,
    MemberKind.CONTEXT: 3,
}
#: Kinds that hold what decoding needs rather than a file: named by their payload's sha256, never unpacked or listed.
HIDDEN_KINDS = frozenset({MemberKind.MODEL, MemberKind.CONTEXT})
_MODEL_NAME = re.compile(r"[0-9a-f]{64}")


def validate_model_member(name: str) -> str:
    """A MODEL or CONTEXT member's name must be 64 lowercase hex digits (the sha256 of its payload)."""
    if not _MODEL_NAME.fullmatch(name):
        raise UnsafePathError(f"embedded model member {_short(name)} is not named by a sha256")
    return name


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One index entry: where a member's payload lies and what the caller recorded about it."""

    name: str
    kind: MemberKind
    offset: int
    length: int
    crc32: int
    original_size: int
    mode: int
    mtime_ns: int
    metadata: bytes


_DRIVE = re.compile(r"^[A-Za-z]:")


def validate_member_name(name: str) -> str:
    """Return ``name`` if it is a safe relative POSIX path, else raise UnsafePathError.

    The same rules guard the writer and the reader, so no archive can name a file outside the extraction folder.
    """
    if not isinstance(name, str):
        raise UnsafePathError(f"member name must be a str, not {type(name).__name__}")
    if not name:
        raise UnsafePathError("member name is empty")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"member name {name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise UnsafePathError(f"member name is {len(encoded)} bytes long, the limit is {MAX_NAME_BYTES}")
    _check_characters(name)
    if name.startswith("/"):
        raise UnsafePathError(f"member name {name!r} is an absolute path")
    if _DRIVE.match(name):
        raise UnsafePathError(f"member name {name!r} starts with a drive letter")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePathError(f"member name {name!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise UnsafePathError(f"member name {_short(name)} has a component longer than {MAX_COMPONENT_BYTES} bytes")
    return name


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of a name, cut to ``limit`` characters for messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def validate_link_target(name: str, target: str) -> str:
    """Return ``target`` if the link ``name`` may point there, else raise UnsafePathError.

    A target is relative: zero or more leading ``..`` components, at most as many as the folders
    that hold the link, then an ordinary path (the member name rules, no ``.``/``..``/empty parts).
    Such a link, created in a real folder, can only resolve inside the extraction folder, whatever
    other links the archive holds.
    """
    if not isinstance(target, str) or not target:
        raise UnsafePathError(f"link {_short(name)} has an empty target")
    if len(target.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise UnsafePathError(f"link {_short(name)} has a target longer than {MAX_NAME_BYTES} bytes")
    parts = target.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ups > name.count("/"):
        raise UnsafePathError(f"link {_short(name)} points outside the archive ({_short(target)})")
    rest = "/".join(parts[ups:])
    if ups < len(parts) and not rest:
        raise UnsafePathError(f"link {_short(name)} has an unsafe target {_short(target)}")
    if rest:
        try:
            validate_member_name(rest)
        except UnsafePathError:
            raise UnsafePathError(f"link {_short(name)} has an unsafe target {_short(target)}") from None
    return target


def check_tree(members: list[tuple[str, MemberKind]]) -> None:
    """Refuse a file, link or image whose name is also a folder of another member (``a`` and ``a/b``).

    Only DIR members may have members under them; the same rule guards writer and reader.
    """
    leaves = {name for name, kind in members if kind != MemberKind.DIR}
    for name, _ in members:
        start = name.find("/")
        while start != -1:
            if name[:start] in leaves:
                raise UnsafePathError(f"member {_short(name)} lies under {_short(name[:start])}, which is not a folder")
            start = name.find("/", start + 1)


def _check_characters(name: str) -> None:
    """Reject backslashes and control characters, which mean different paths on different systems."""
    if "\\" in name:
        raise UnsafePathError(f"member name {name!r} contains a backslash")
    for char in name:
        if unicodedata.category(char) == "Cc":
            raise UnsafePathError(f"member name {name!r} contains control character U+{ord(char):04X}")


def pack_header(flags: int = 0, version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    """Encode the fixed header, its crc32 included."""
    body = HEADER_BODY.pack(MAGIC, version[0], version[1], flags)
    return body + HEADER_CRC.pack(zlib.crc32(body))


def pack_entry(info: MemberInfo, flags: int = 0) -> bytes:
    """Encode one index entry; the caller has already validated every field."""
    name = info.name.encode("utf-8")
    fixed = ENTRY_FIXED.pack(
        int(info.kind), flags, info.offset, info.length, info.crc32, info.original_size, info.mode, info.mtime_ns
    )
    return b"".join(
        (ENTRY_NAME_LEN.pack(len(name)), name, fixed, ENTRY_META_LEN.pack(len(info.metadata)), info.metadata)
    )


def pack_footer(index_offset: int, index: bytes, member_count: int) -> bytes:
    """Encode the footer that points at ``index``."""
    return FOOTER.pack(index_offset, len(index), zlib.crc32(index), member_count, FOOTER_MAGIC)
