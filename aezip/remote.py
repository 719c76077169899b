"""Archives and sharded datasets in object stores, through fsspec URLs (``s3://``, ``gs://``, ``memory://`` …).

Nothing is downloaded whole: opening an archive reads its header, footer and index with three range
requests (``cat_file`` with start and end), and each member's payload is one more. A sharded dataset's
manifest is read whole (it is small), its shards lazily as above. Credentials and other settings go in
``storage_options`` (or the store's usual environment variables).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from aezip.container import ArchiveReader
from aezip.errors import AezipError

StorageOptions = dict[str, Any] | None


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

    def close(self) -> None:
        pass


class RemoteArchiveReader(ArchiveReader):
    """An ``ArchiveReader`` over an fsspec URL: the index and each payload are fetched by range requests."""

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
    import hashlib

    fs, path = filesystem(url, storage_options)
    size, digest = int(fs.size(path)), hashlib.sha256()
    for start in range(0, size, 8 << 20):
        digest.update(fs.cat_file(path, start=start, end=min(size, start + (8 << 20))))
    return digest.hexdigest()
