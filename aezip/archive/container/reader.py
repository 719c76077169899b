"""Read .aez archives, treating every file as hostile.

Opening an archive reads only the header, the footer and the index; each payload is read on demand, so any one
member can be read without touching the others. Every declared size is checked against the real file size
before anything is allocated for it.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from aezip.archive.container import spec
from aezip.archive.container.spec import MemberInfo, MemberKind, validate_member_name
from aezip.errors import CorruptArchiveError, FormatError, UnsafePathError, UnsupportedVersionError

_CHUNK = 1 << 20


def merge_ranges(ranges: Sequence[tuple[int, int]], max_gap: int, max_length: int) -> list[tuple[int, int, list[int]]]:
    """Group ``(offset, length)`` ranges into reads: ``(start, end, positions in ranges)``, sorted by start.

    Ranges whose gap to the previous read is at most ``max_gap`` bytes (overlaps included) join it,
    unless the read would grow past ``max_length`` bytes; a longer range alone is still one read.
    """
    reads: list[tuple[int, int, list[int]]] = []
    for k in sorted(range(len(ranges)), key=lambda k: ranges[k]):
        offset, length = ranges[k]
        end = offset + length
        if reads:
            start, last, which = reads[-1]
            if offset - last <= max_gap and max(end, last) - start <= max_length:
                reads[-1] = (start, max(end, last), [*which, k])
                continue
        reads.append((offset, end, [k]))
    return reads


class MemberSequence:
    """The read-only member sequence both archive readers share: ``members``, ``len`` and iteration,
    in archive order, over ``self._members`` (set by the reader)."""

    _members: list[MemberInfo]

    @property
    def members(self) -> list[MemberInfo]:
        """All members in archive order."""
        return list(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[MemberInfo]:
        return iter(self._members)


class ArchiveReader(MemberSequence):
    """Random access to the members of one archive.

    Picklable for PyTorch DataLoader workers: the index travels with the pickle, the file handle does not; each
    process (forked or unpickled) opens its own handle on its first payload read.

    :meth:`read_payloads` reads several members with one read per run of nearby payloads: runs join
    across gaps of at most ``merge_gap`` bytes and stop at ``merge_limit`` bytes (``aezip.store.remote``
    allows a wider gap, where a request costs more than the bytes).
    """

    #: Largest gap (bytes not asked for) a merged read spans between two payloads.
    merge_gap = 0
    #: Largest merged read in bytes (one payload larger than this is still read whole).
    merge_limit = 16 << 20

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock: threading.Lock | None = threading.Lock()
        fh, self._size = self._open_file()
        try:
            self._version = _check_header(_read_exact(fh, 0, min(self._size, spec.HEADER_SIZE)), self._size)
            self._footer = _read_exact(fh, self._size - spec.FOOTER_SIZE, spec.FOOTER_SIZE)
            self._members = _read_index(fh, self._footer, self._size)
        except FormatError as exc:
            fh.close()
            raise naming_file(exc, self._path) from None
        except BaseException:
            fh.close()
            raise
        self._fh: BinaryIO | None = fh
        self._pid = os.getpid()
        self._by_name = {info.name: info for info in self._members}
        self._closed = False

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file handle; later payload reads raise ValueError. Idempotent."""
        self._closed = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)

    @property
    def path(self) -> str:
        """The path the archive was opened from."""
        return self._path

    @property
    def size(self) -> int:
        """Bytes of the archive file, as found when it was opened."""
        return self._size

    @property
    def version(self) -> tuple[int, int]:
        """The (major, minor) format version the archive declares."""
        return self._version

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __getitem__(self, name: str) -> MemberInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no member named {name!r} in {self._path}") from None

    def __repr__(self) -> str:
        return f"ArchiveReader({self._path!r}, members={len(self._members)})"

    def read_payload(self, member: str | MemberInfo) -> bytes:
        """Read one member's stored payload and check its crc32; raises CorruptArchiveError on mismatch."""
        info = self._lookup(member)
        data = self._read(info.offset, info.length)
        if zlib.crc32(data) != info.crc32:
            raise CorruptArchiveError(f"{self._path}: member {info.name!r} fails its crc32 check")
        return data

    def read_payloads(self, members: Sequence[str | MemberInfo]) -> list[bytes]:
        """Several members' payloads in the order given, crc32 checked; one read per run of nearby payloads."""
        infos = [self._lookup(m) for m in members]
        runs = merge_ranges([(i.offset, i.length) for i in infos], self.merge_gap, self.merge_limit)
        out = [b""] * len(infos)
        for (start, _end, which), data in zip(runs, self._read_ranges([(s, e - s) for s, e, _ in runs]), strict=True):
            view = memoryview(data)
            for k in which:
                info = infos[k]
                whole = len(which) == 1 and len(data) == info.length
                piece = data if whole else bytes(view[info.offset - start : info.offset - start + info.length])
                if zlib.crc32(piece) != info.crc32:
                    raise CorruptArchiveError(f"{self._path}: member {info.name!r} fails its crc32 check")
                out[k] = piece
        return out

    def read_link(self, member: str | MemberInfo) -> str:
        """The target of a LINK member, checked (see ``spec.validate_link_target``)."""
        info = self._lookup(member)
        if info.kind != MemberKind.LINK:
            raise ValueError(f"member {info.name!r} is not a link")
        data = self.read_payload(info)
        if len(data) != info.original_size:
            raise CorruptArchiveError(f"link {info.name!r} has the wrong length")
        try:
            target = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafePathError(f"link {info.name!r} has a target that is not UTF-8") from None
        return spec.validate_link_target(info.name, target)

    def verify(self) -> None:
        """Check the crc32 of every payload, in bounded memory; raises CorruptArchiveError on the first mismatch."""
        for info in self._members:
            crc = 0
            for start in range(info.offset, info.offset + info.length, _CHUNK):
                crc = zlib.crc32(self._read(start, min(_CHUNK, info.offset + info.length - start)), crc)
            if crc != info.crc32:
                raise CorruptArchiveError(f"{self._path}: member {info.name!r} fails its crc32 check")

    def _lookup(self, member: str | MemberInfo) -> MemberInfo:
        """Resolve a name, or accept a MemberInfo only if it is exactly this archive's entry."""
        if isinstance(member, MemberInfo):
            if self._by_name.get(member.name) != member:
                raise KeyError(f"{member.name!r} is not a member of {self._path}")
            return member
        return self[member]

    def _read(self, offset: int, length: int) -> bytes:
        if self._lock is None or self._pid != os.getpid():
            self._lock = threading.Lock()
        with self._lock:
            try:
                return _read_exact(self._handle(), offset, length)
            except FormatError as exc:
                raise naming_file(exc, self._path) from None

    def _read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """``(offset, length)`` ranges, each read exactly (``aezip.store.remote`` fetches them in one call)."""
        return [self._read(offset, length) for offset, length in ranges]

    def _handle(self) -> BinaryIO:
        """The open file of this process, opened lazily after unpickling or forking."""
        if self._closed:
            raise ValueError("archive reader is closed")
        if self._fh is None or self._pid != os.getpid():
            self._fh = self._reopen()
            self._pid = os.getpid()
        return self._fh

    def _open_file(self) -> tuple[BinaryIO, int]:
        """Open the archive for reading: (handle, size). ``aezip.store.remote`` reads object stores instead."""
        fh = open(self._path, "rb")
        return fh, os.fstat(fh.fileno()).st_size

    def _reopen(self) -> BinaryIO:
        """Open the archive again and make sure it is still the file whose index we hold."""
        fh, size = self._open_file()
        try:
            if size != self._size or _read_exact(fh, size - spec.FOOTER_SIZE, spec.FOOTER_SIZE) != self._footer:
                raise CorruptArchiveError(f"archive {self._path} changed since it was opened")
        except BaseException:
            fh.close()
            raise
        return fh


def naming_file(exc: FormatError, path: str) -> FormatError:
    """The same error, its message starting with the archive's path (unless it names it already)."""
    if path in str(exc):
        return exc
    return type(exc)(f"{path}: {exc}")


def _read_exact(fh: BinaryIO, offset: int, length: int) -> bytes:
    """Read exactly ``length`` bytes at ``offset``; a short read means the file is truncated."""
    fh.seek(offset)
    data = fh.read(length)
    if len(data) != length:
        raise CorruptArchiveError("archive is truncated (file ended early)")
    return data


def _check_header(header: bytes, size: int) -> tuple[int, int]:
    """Check magic, version, header crc32 and must-understand flags; return (major, minor)."""
    if size == 0:
        raise FormatError("not an aezip archive (empty file)")
    if header[: len(spec.MAGIC)] != spec.MAGIC[: len(header)]:
        raise FormatError("not an aezip archive (bad magic)")
    if size < len(spec.MAGIC) + 2:
        raise CorruptArchiveError(f"archive is truncated ({size} bytes)")
    major, minor = header[len(spec.MAGIC)], header[len(spec.MAGIC) + 1]
    _check_version(major, minor)
    if size < spec.HEADER_SIZE + spec.FOOTER_SIZE:
        raise CorruptArchiveError(f"archive is truncated ({size} bytes)")
    _, _, _, flags = spec.HEADER_BODY.unpack_from(header)
    (crc,) = spec.HEADER_CRC.unpack_from(header, spec.HEADER_BODY.size)
    if zlib.crc32(header[: spec.HEADER_BODY.size]) != crc:
        raise CorruptArchiveError("archive header fails its crc32 check")
    unknown = flags & spec.ARCHIVE_MUST_UNDERSTAND & ~spec.ARCHIVE_KNOWN_FLAGS
    if unknown:
        raise FormatError(f"archive uses features this aezip does not support (flags 0x{unknown:08x})")
    return major, minor


def _check_version(major: int, minor: int) -> None:
    ours = spec.LATEST_VERSION
    if major > ours[0]:
        raise UnsupportedVersionError(
            f"archive format version {major}.{minor} is newer than this reader's {ours[0]}.{ours[1]}; upgrade aezip"
        )
    if major < ours[0]:
        raise FormatError(f"archive format version {major}.{minor} is not supported")


def _read_index(fh: BinaryIO, footer: bytes, size: int) -> list[MemberInfo]:
    """Check the footer against the file size, read the index, check its crc32, then parse it."""
    index_offset, index_length, index_crc, count, magic = spec.FOOTER.unpack(footer)
    if magic != spec.FOOTER_MAGIC:
        raise CorruptArchiveError("archive is truncated or has trailing bytes (no footer at end of file)")
    data_end = size - spec.FOOTER_SIZE
    if index_length > spec.MAX_INDEX_SIZE:
        raise CorruptArchiveError(f"archive index claims {index_length} bytes, more than the 1 GiB limit")
    if index_offset < spec.HEADER_SIZE or index_offset > data_end or index_length != data_end - index_offset:
        raise CorruptArchiveError("archive footer does not point at an index that ends at the footer")
    if count > spec.MAX_MEMBERS or count * spec.MIN_ENTRY_SIZE > index_length:
        raise CorruptArchiveError(f"archive footer claims {count} members, more than its index can hold")
    index = _read_exact(fh, index_offset, index_length)
    if zlib.crc32(index) != index_crc:
        raise CorruptArchiveError("archive index fails its crc32 check")
    return _parse_index(index, count, index_offset)


def _parse_index(index: bytes, count: int, data_end: int) -> list[MemberInfo]:
    """Decode ``count`` entries whose payloads must tile the data area exactly, in order."""
    view = memoryview(index)
    members: list[MemberInfo] = []
    names: set[str] = set()
    pos = 0
    expected = spec.HEADER_SIZE
    for number in range(count):
        info, pos = _parse_entry(view, pos, number)
        if info.offset != expected:
            raise CorruptArchiveError(f"member {info.name!r} starts at {info.offset}, expected {expected}")
        if info.length > data_end - expected:
            raise CorruptArchiveError(f"member {info.name!r} claims {info.length} bytes, past the data area")
        if info.name in names:
            raise CorruptArchiveError(f"duplicate member name {info.name!r}")
        expected += info.length
        names.add(info.name)
        members.append(info)
    if pos != len(index):
        raise CorruptArchiveError(f"archive index has {len(index) - pos} bytes after its last entry")
    if expected != data_end:
        raise CorruptArchiveError(f"archive data area has {data_end - expected} bytes that belong to no member")
    spec.check_tree([(info.name, info.kind) for info in members])
    return members


def _parse_entry(view: memoryview, pos: int, number: int) -> tuple[MemberInfo, int]:
    """Decode the entry at ``pos``; return it and the position after it."""
    (name_len,) = spec.ENTRY_NAME_LEN.unpack_from(_take(view, pos, spec.ENTRY_NAME_LEN.size, number))
    pos += spec.ENTRY_NAME_LEN.size
    name = _decode_name(_take(view, pos, name_len, number))
    pos += name_len
    kind, flags, offset, length, crc, original_size, mode, mtime_ns = spec.ENTRY_FIXED.unpack_from(
        _take(view, pos, spec.ENTRY_FIXED.size, number)
    )
    pos += spec.ENTRY_FIXED.size
    (meta_len,) = spec.ENTRY_META_LEN.unpack_from(_take(view, pos, spec.ENTRY_META_LEN.size, number))
    pos += spec.ENTRY_META_LEN.size
    metadata = bytes(_take(view, pos, meta_len, number))
    pos += meta_len
    member_kind = _check_entry_fields(name, kind, flags, mode)
    info = MemberInfo(name, member_kind, offset, length, crc, original_size, mode, mtime_ns, metadata)
    _check_dir(info)
    if info.kind in spec.HIDDEN_KINDS:
        spec.validate_model_member(info.name)
    return info, pos


def _take(view: memoryview, pos: int, length: int, number: int) -> memoryview:
    if length > len(view) - pos:
        raise CorruptArchiveError(f"archive index entry {number} runs past the end of the index")
    return view[pos : pos + length]


def _decode_name(raw: memoryview) -> str:
    try:
        name = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePathError(f"member name {bytes(raw)[:64]!r} is not valid UTF-8") from None
    return validate_member_name(name)


def _check_entry_fields(name: str, kind: int, flags: int, mode: int) -> MemberKind:
    """Reject kinds and must-understand flags this reader does not know, and non-permission mode bits."""
    try:
        member_kind = MemberKind(kind)
    except ValueError:
        raise FormatError(f"member {name!r} has unknown kind {kind} (written by a newer aezip?)") from None
    unknown = flags & spec.MEMBER_MUST_UNDERSTAND & ~spec.MEMBER_KNOWN_FLAGS
    if unknown:
        raise FormatError(f"member {name!r} uses features this aezip does not support (flags 0x{unknown:04x})")
    if mode & ~spec.MODE_MASK:
        raise CorruptArchiveError(f"member {name!r} has mode 0o{mode:o}, which is more than permission bits")
    return member_kind


def _check_dir(info: MemberInfo) -> None:
    if info.kind == MemberKind.DIR and (info.length or info.original_size):
        raise CorruptArchiveError(f"folder {info.name!r} has a payload")
