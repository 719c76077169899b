"""Folder tree ⇄ archive: what ``aezip pack``, ``unpack`` and ``verify`` do.

Both directions are all-or-nothing. ``pack`` writes the archive through a temporary file that
replaces the destination only when complete. ``unpack`` restores into a hidden staging folder
beside the destination and moves files into place only after every member has decoded and
passed its checks, so a corrupt archive never leaves a partial tree behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aezip.archive import Archive, MemberPlan, add_file, iter_raw, output_name, render
from aezip.codec import Codec
from aezip.container import ArchiveWriter, MemberInfo, MemberKind, validate_member_name
from aezip.errors import AezipError, UnsafePathError

Progress = Callable[[str], None]
DECODE_BATCH = 16


@dataclass
class Summary:
    """Counts and byte totals of a pack or unpack."""

    files: int = 0
    images: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    members: list[MemberPlan] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0


def collect(src: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """(member name, path) of every regular file under ``src`` (or ``src`` itself), sorted by name.

    Symbolic links to files are stored as the file they point to; linked folders are not
    followed (no loops). ``exclude`` (the archive being written) is skipped.
    """
    if src.is_file():
        return [(validate_member_name(src.name), src)]
    if not src.is_dir():
        raise AezipError(f"no such file or folder: {src}")
    skip = exclude.resolve() if exclude else None
    found = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for fname in files:
            path = Path(root) / fname
            if not path.is_file() or (skip and path.resolve() == skip):
                continue
            if skip and fname.startswith(f".{skip.name}.") and fname.endswith(".tmp"):
                continue
            name = path.relative_to(src).as_posix()
            found.append((validate_member_name(name), path))
    return sorted(found)


def pack(
    src: Path,
    out: Path,
    codec: Codec,
    progress: Progress | None = None,
    files: list[tuple[str, Path]] | None = None,
) -> Summary:
    """Pack a folder (or one file) into ``out``; all or nothing.

    ``files`` is :func:`collect`'s result when the caller already has it (e.g. to size a
    progress bar), so the tree is walked once.
    """
    files = collect(src, exclude=out) if files is None else files
    if not files:
        raise AezipError(f"nothing to pack in {src}")
    summary = Summary()
    with ArchiveWriter(out) as writer:
        for name, path in files:
            try:
                data = path.read_bytes()
                st = path.stat()
            except OSError as exc:
                raise AezipError(f"cannot read {path}: {exc.strerror or exc}") from None
            plan = add_file(writer, name, data, codec, mode=st.st_mode & 0o777, mtime_ns=st.st_mtime_ns)
            summary.members.append(plan)
            summary.files += 1
            summary.images += plan.kind == MemberKind.IMAGE
            if progress:
                progress(name)
    summary.bytes_in = sum(p.original_size for p in summary.members)
    summary.bytes_out = out.stat().st_size
    return summary


def _target(root: Path, relative: str) -> Path:
    """Path under ``root`` for a member, refusing anything that would land outside it."""
    validate_member_name(relative)
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{relative}: would be written outside the destination")
    return target


def _decoded_files(archive: Archive, fmt: str) -> Iterator[tuple[MemberInfo, Iterator[bytes] | bytes]]:
    """Each member with its restored bytes (RAW members as a chunk stream), images in batches."""
    members = archive.members
    for start in range(0, len(members), DECODE_BATCH):
        chunk = members[start : start + DECODE_BATCH]
        images = [m for m in chunk if m.kind == MemberKind.IMAGE]
        decoded = dict(zip((m.name for m in images), archive.decode([m.name for m in images]), strict=True))
        for m in chunk:
            if m.kind == MemberKind.IMAGE:
                yield m, render(m, decoded[m.name], fmt)
            else:
                yield m, iter_raw(archive.payload(m.name), m.original_size, m.name)


def unpack(archive: Archive, dest: Path, fmt: str = "original", progress: Progress | None = None) -> Summary:
    """Restore every member under ``dest``; all or nothing (see module docstring)."""
    names = [output_name(m, fmt) for m in archive.members]
    if len(set(names)) != len(names):
        raise AezipError("two members would be restored to the same file name; use --format original")
    dest_parent = dest.resolve().parent
    dest_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".aezip-tmp", dir=dest_parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    summary = Summary()
    try:
        for info, content in _decoded_files(archive, fmt):
            target = _target(staging, output_name(info, fmt))
            with open(target, "wb") as fh:
                if isinstance(content, bytes):
                    fh.write(content)
                    written = len(content)
                else:
                    written = 0
                    for piece in content:
                        fh.write(piece)
                        written += len(piece)
            os.chmod(target, info.mode & 0o777 or 0o644)
            if info.mtime_ns:
                os.utime(target, ns=(info.mtime_ns, info.mtime_ns))
            summary.files += 1
            summary.images += info.kind == MemberKind.IMAGE
            summary.bytes_out += written
            if progress:
                progress(info.name)
        _commit(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.bytes_in = os.path.getsize(archive.path)
    return summary


def _commit(staging: Path, dest: Path) -> None:
    """Move the staged tree into ``dest`` (a rename when ``dest`` does not exist yet)."""
    if not dest.exists():
        os.rename(staging, dest)
        return
    if not dest.is_dir():
        raise AezipError(f"destination exists and is not a folder: {dest}")
    for root, _, files in os.walk(staging):
        for fname in files:
            src = Path(root) / fname
            rel = src.relative_to(staging).as_posix()
            os.replace(src, _target(dest, rel))


def verify(archive: Archive, progress: Progress | None = None) -> Summary:
    """Check every checksum and that every member decodes; raises on the first failure.

    Each payload's crc32 is checked as it is read (``ArchiveReader.read_payload``)."""
    summary = Summary()
    for info, content in _decoded_files(archive, "original"):
        size = len(content) if isinstance(content, bytes) else sum(len(c) for c in content)
        summary.files += 1
        summary.images += info.kind == MemberKind.IMAGE
        summary.bytes_out += size
        if progress:
            progress(info.name)
    return summary
