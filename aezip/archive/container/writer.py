"""Write .aez archives atomically: payloads stream to a temporary file that replaces the target only on success."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from aezip.archive.container import spec
from aezip.archive.container.spec import MemberInfo, MemberKind, validate_member_name
from aezip.errors import AezipError, UnsafePathError


class ArchiveWriter:
    """Build one archive; members are written in the order they are added.

    Payloads go to disk as they are added, only the index stays in memory. Output is deterministic: the same
    adds in the same order give the same bytes. Use as a context manager; an exception inside the ``with``
    block (or ``abort()``) deletes the temporary file and leaves any existing file at ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = True) -> None:
        self._path = Path(path)
        self._overwrite = overwrite
        if not overwrite and os.path.lexists(self._path):
            raise FileExistsError(errno.EEXIST, "already exists", str(self._path))
        self._entries: list[MemberInfo] = []
        self._names: set[str] = set()
        self._leaves: set[str] = set()  # names of members that are not folders
        self._folders: set[str] = set()  # every folder some member lies in
        self._closed = False
        with _user_path(self._path):
            self._tmp_path, self._fh = _create_temp(self._path)
            self._finalizer = weakref.finalize(self, _discard, self._fh, self._tmp_path)
            try:
                self._fh.write(spec.pack_header())
            except BaseException:
                self.abort()
                raise
        self._offset = spec.HEADER_SIZE

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def path(self) -> Path:
        """The final path of the archive."""
        return self._path

    def add(
        self,
        name: str,
        kind: MemberKind | int,
        payload: bytes,
        *,
        original_size: int,
        mode: int = 0o644,
        mtime_ns: int = 0,
        metadata: bytes = b"",
    ) -> None:
        """Append one member and write its payload to disk now.

        ``mode`` keeps only permission bits (file-type bits of ``st_mode`` are dropped). Bad or duplicate names
        raise UnsafePathError; out-of-range numbers and unknown kinds are caller bugs and raise ValueError.
        """
        self._check_open()
        validate_member_name(name)
        if name in self._names:
            raise UnsafePathError(f"duplicate member name {name!r}")
        info = self._make_info(name, kind, payload, original_size, mode, mtime_ns, metadata)
        folders = [name[:i] for i, char in enumerate(name) if char == "/"]
        clash = next((f for f in folders if f in self._leaves), None)
        if clash is not None or (info.kind != MemberKind.DIR and name in self._folders):
            other = repr(clash) if clash is not None else "the members under it"
            raise UnsafePathError(f"member {name!r} clashes with {other}: a file is not a folder")
        if info.kind == MemberKind.LINK:
            spec.validate_link_target(name, bytes(payload).decode("utf-8", "surrogateescape"))
        elif info.kind == MemberKind.DIR and info.length:
            raise ValueError("a DIR member has an empty payload")
        elif info.kind in spec.HIDDEN_KINDS and hashlib.sha256(payload).hexdigest() != spec.validate_model_member(name):
            raise ValueError(f"a {info.kind.name} member is named by the sha256 of its payload")
        try:
            with _user_path(self._path):
                self._fh.write(payload)
        except BaseException:
            self.abort()
            raise
        self._offset += info.length
        self._names.add(name)
        if info.kind != MemberKind.DIR:
            self._leaves.add(name)
        self._folders.update(folders)
        self._entries.append(info)

    def _make_info(
        self,
        name: str,
        kind: MemberKind | int,
        payload: bytes,
        original_size: int,
        mode: int,
        mtime_ns: int,
        metadata: bytes,
    ) -> MemberInfo:
        """Check the caller's numbers and build the index entry for a payload about to be written."""
        try:
            member_kind = MemberKind(kind)
        except ValueError:
            raise ValueError(f"unknown member kind {kind!r}") from None
        _check_range("original_size", original_size, 0, spec.U64_MAX)
        _check_range("mode", mode, 0, spec.U32_MAX)
        _check_range("mtime_ns", mtime_ns, spec.I64_MIN, spec.I64_MAX)
        metadata = bytes(metadata)
        if len(metadata) > spec.U32_MAX:
            raise ValueError("metadata is larger than 4 GiB")
        if len(self._entries) >= spec.MAX_MEMBERS:
            raise AezipError(f"an archive holds at most {spec.MAX_MEMBERS} members")
        length = memoryview(payload).nbytes
        return MemberInfo(
            name=name,
            kind=member_kind,
            offset=self._offset,
            length=length,
            crc32=zlib.crc32(payload),
            original_size=original_size,
            mode=mode & spec.MODE_MASK,
            mtime_ns=mtime_ns,
            metadata=metadata,
        )

    def close(self) -> None:
        """Write index and footer, flush to disk and move the archive into place. Idempotent."""
        if self._closed:
            return
        try:
            index = b"".join(spec.pack_entry(info) for info in self._entries)
            if len(index) > spec.MAX_INDEX_SIZE:
                raise AezipError("archive index would exceed 1 GiB; split the input into several archives")
            with _user_path(self._path):
                self._fh.write(index)
                self._fh.write(spec.pack_footer(self._offset, index, len(self._entries)))
                if self.version != spec.FORMAT_VERSION:
                    self._fh.seek(0)
                    self._fh.write(spec.pack_header(version=self.version))
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                _move_into_place(self._tmp_path, self._path, self._overwrite)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()

    @property
    def version(self) -> tuple[int, int]:
        """The format version this archive declares: the lowest that has every member kind it holds."""
        minor = max((spec.KIND_MINOR[info.kind] for info in self._entries), default=spec.FORMAT_VERSION[1])
        return (spec.FORMAT_VERSION[0], max(minor, spec.FORMAT_VERSION[1]))

    def abort(self) -> None:
        """Discard everything written so far; the target path is left as it was. Idempotent."""
        self._closed = True
        self._finalizer()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("archive writer is closed")


@contextmanager
def _user_path(path: Path) -> Iterator[None]:
    """Report OS errors on the temporary file under the archive's own path, the one the user gave."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished temporary file to ``path``; without ``overwrite``, never replace an existing file."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic: fails if path appeared meanwhile
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists", str(path)) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "already exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _create_temp(path: Path) -> tuple[Path, BinaryIO]:
    """Create a fresh temporary file next to ``path`` so the final rename stays on one file system.

    ``os.open`` with mode 0o666 lets the umask decide permissions, as for any ordinary new file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")


def _discard(fh: BinaryIO, tmp_path: Path) -> None:
    """Close and delete a temporary file that never became an archive."""
    fh.close()
    tmp_path.unlink(missing_ok=True)


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{field} must be an int in [{low}, {high}], got {value!r}")
