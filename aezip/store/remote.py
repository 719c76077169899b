"""Archives and sharded datasets in object stores, through fsspec URLs (``s3://``, ``gs://``, ``memory://`` …).

Nothing is downloaded whole: opening an archive reads its header, footer and index with three range
requests (``cat_file`` with start and end), and each member's payload is one more. A batch of members
(``read_payloads``: dataset batches, unpack) is one request per run of payloads less than
:data:`MERGE_GAP` bytes apart, the runs sent together (``cat_ranges``: concurrently on async stores
such as s3fs). A sharded dataset's manifest is read whole (it is small), its shards lazily as above.
Credentials and other settings go in ``storage_options`` (or the store's usual environment variables).

Packing from a store: :func:`list_source` lists a tree (names, sizes, modification times) and
:func:`download_source` copies some of its files into a local folder (``aezip.store.shards`` does so per shard).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aezip.archive.container import ArchiveReader
from aezip.errors import AezipError, CorruptArchiveError

StorageOptions = dict[str, Any] | None
#: Payloads less than this many bytes apart are fetched in one request: on object stores a request's
#: latency (tens of ms) costs about as much as transferring a MiB.
MERGE_GAP = 1 << 20


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL with a protocol (``s3://bucket/x.aez``), not a local path."""
    return isinstance(path, str) and "://" in path


def filesystem(url: str, storage_options: StorageOptions = None) -> tuple[Any, str]:
    """The fsspec file system and in-store path of ``url``."""
    try:
        import fsspec
    except ImportError:
        raise AezipError("reading URLs needs fsspec: pip install 'aezip[remote]'") from None
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise AezipError(f"{url}: {exc}") from None


class _RangeFile:
    """Just enough of a binary file for ``ArchiveReader``: each read is one range request."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path, self.pos = fs, path, 0

    def seek(self, pos: int) -> int:
        self.pos = pos
        return pos

    def read(self, length: int) -> bytes:
        data = self.fs.cat_file(self.path, start=self.pos, end=self.pos + length)
        self.pos += len(data)
        return data

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """``(offset, length)`` ranges in one ``cat_ranges`` call (one request per range)."""
        starts = [offset for offset, _ in ranges]
        ends = [offset + length for offset, length in ranges]
        return self.fs.cat_ranges([self.path] * len(ranges), starts, ends, on_error="raise")

    def close(self) -> None:
        pass


class RemoteArchiveReader(ArchiveReader):
    """An ``ArchiveReader`` over an fsspec URL: the index and each payload are fetched by range requests;
    ``read_payloads`` merges payloads less than :data:`MERGE_GAP` bytes apart into one request."""

    merge_gap = MERGE_GAP

    def __init__(self, url: str, storage_options: StorageOptions = None) -> None:
        self._options = dict(storage_options or {})
        super().__init__(url)

    def _open_file(self) -> tuple[Any, int]:
        fs, path = filesystem(self._path, self._options)
        try:
            size = fs.size(path)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such archive", self._path) from None
        return _RangeFile(fs, path), int(size)

    def _read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        if len(ranges) <= 1:
            return super()._read_ranges(ranges)
        handle = self._handle()
        assert isinstance(handle, _RangeFile)
        out = handle.read_ranges(ranges)
        if any(not isinstance(d, bytes) or len(d) != n for d, (_, n) in zip(out, ranges, strict=True)):
            raise CorruptArchiveError(f"{self._path}: archive is truncated (file ended early)")
        return out


def url_is_folder(url: str, storage_options: StorageOptions = None) -> bool:
    """Whether ``url`` names a folder (prefix) of the store."""
    fs, path = filesystem(url, storage_options)
    return bool(fs.isdir(path))


def read_url(url: str, limit: int, storage_options: StorageOptions = None) -> bytes:
    """The whole object at ``url``, refused when larger than ``limit`` bytes."""
    fs, path = filesystem(url, storage_options)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "not found", url) from None
    if size > limit:
        raise AezipError(f"{url}: larger than {limit} bytes")
    return fs.cat_file(path)


def url_size(url: str, storage_options: StorageOptions = None) -> int:
    """Size of the object at ``url``."""
    fs, path = filesystem(url, storage_options)
    return int(fs.size(path))


def url_sha256(url: str, storage_options: StorageOptions = None) -> str:
    """sha256 of the object at ``url``, streamed in 8 MiB ranges."""
    fs, path = filesystem(url, storage_options)
    size, digest = int(fs.size(path)), hashlib.sha256()
    for start in range(0, size, 8 << 20):
        digest.update(fs.cat_file(path, start=start, end=min(size, start + (8 << 20))))
    return digest.hexdigest()


class FolderStore:
    """A dataset folder (local path or URL) as the pack driver uses it: small files, shard files, listing."""

    def __init__(self, where: str | os.PathLike[str], storage_options: StorageOptions = None) -> None:
        self.url = is_url(where)
        self.options = storage_options
        self.where = os.fspath(where).rstrip("/") if self.url else os.fspath(where)
        if self.url:
            self.fs, self.root = filesystem(self.where, storage_options)

    def __str__(self) -> str:
        return self.where

    def location(self, name: str) -> str:
        """Path or URL of ``name`` in the folder."""
        return f"{self.where}/{name}" if self.url else os.path.join(self.where, name)

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def is_file_elsewhere(self) -> bool:
        """Whether the folder's path is taken by something that is not a folder."""
        if self.url:
            return bool(self.fs.isfile(self.root))
        return os.path.exists(self.where) and not os.path.isdir(self.where)

    def read(self, name: str) -> bytes | None:
        """A small file's bytes, or None when it does not exist."""
        try:
            if self.url:
                return self.fs.cat_file(self._key(name))
            with open(self.location(name), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        """Write a small file whole: temporary file and rename locally, one PUT in an object store."""
        if self.url:
            self.fs.pipe_file(self._key(name), data)
            return
        write_bytes_atomically(Path(self.where) / name, data)

    def remove(self, name: str) -> None:
        """Delete a file if it exists."""
        try:
            if self.url:
                self.fs.rm_file(self._key(name))
            else:
                os.unlink(self.location(name))
        except FileNotFoundError:
            pass

    def size(self, name: str) -> int | None:
        """Size of a file, or None when it does not exist."""
        try:
            return int(self.fs.size(self._key(name))) if self.url else os.path.getsize(self.location(name))
        except FileNotFoundError:
            return None

    def sha256(self, name: str) -> str:
        """sha256 of a file."""
        if self.url:
            return url_sha256(self.location(name), self.options)
        return file_sha256(self.location(name))

    def names(self) -> list[str]:
        """File names directly in the folder."""
        if self.url:
            try:
                return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))
            except FileNotFoundError:
                return []
        return sorted(os.listdir(self.where)) if os.path.isdir(self.where) else []

    def make(self) -> None:
        """Create the folder (local only: object stores have no folders)."""
        if not self.url:
            os.makedirs(self.where, exist_ok=True)

    def upload(self, local: str | os.PathLike[str], name: str) -> None:
        """Put a finished local file into the folder under ``name`` (one object PUT in a store)."""
        self.fs.put_file(os.fspath(local), self._key(name))


@dataclass(frozen=True)
class SourceFile:
    """A file of a source tree in a store: its name under the tree's root, size and modification time."""

    name: str
    size: int
    mtime_ns: int


def _mtime_ns(info: dict[str, Any]) -> int:
    """A listing entry's modification time in ns since the epoch (0 when the store gives none)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value * 1_000_000_000)
    return 0


def list_source(url: str, storage_options: StorageOptions = None) -> list[SourceFile]:
    """The files under ``url`` (or ``url`` itself when it is one object), sorted by name.

    Object stores have no folders or links: folders are only the names' prefixes, so empty ones are not
    listed. Raises AezipError when nothing is found there.
    """
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    if fs.isfile(root):
        info = fs.info(root)
        return [SourceFile(root.rsplit("/", 1)[-1], int(info.get("size") or 0), _mtime_ns(info))]
    found = fs.find(root, detail=True)
    files = [
        SourceFile(path[len(root) :].lstrip("/"), int(info.get("size") or 0), _mtime_ns(info))
        for path, info in found.items()
        if info.get("type") == "file" and path.startswith(root + "/")
    ]
    if not files:
        raise AezipError(f"no such file or folder: {url}")
    return sorted(files, key=lambda f: f.name)


def download_source(
    url: str, files: list[SourceFile], dest: str | os.PathLike[str], storage_options: StorageOptions = None
) -> None:
    """Copy ``files`` (from :func:`list_source` of ``url``) under the local folder ``dest``, mode 644 with
    their store's modification times (or time 0): a pack of the copy does not depend on when it was made."""
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    single = len(files) == 1 and fs.isfile(root)
    for f in files:
        target = os.path.join(os.fspath(dest), *f.name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(root if single else f"{root}/{f.name}", target)
        os.chmod(target, 0o644)
        os.utime(target, ns=(f.mtime_ns, f.mtime_ns))


@contextmanager
def staged_source(url: str, storage_options: StorageOptions = None) -> Iterator[Path]:
    """The tree (or file) at ``url`` copied into a temporary local folder, removed afterwards."""
    files = list_source(url, storage_options)
    staging = Path(tempfile.mkdtemp(prefix=".aezip-src-"))
    try:
        download_source(url, files, staging, storage_options)
        yield staging / files[0].name if len(files) == 1 and url_is_file(url, storage_options) else staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def url_is_file(url: str, storage_options: StorageOptions = None) -> bool:
    """Whether ``url`` names one object (not a folder or prefix)."""
    fs, path = filesystem(url, storage_options)
    return bool(fs.isfile(path.rstrip("/")))


def write_bytes_atomically(target: Path, data: bytes) -> Path:
    """Write ``target`` through a temporary file beside it, fsync and rename."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
