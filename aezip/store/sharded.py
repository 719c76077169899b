"""Open an archive or a sharded dataset (manifest or its folder), local or at a URL, as one :class:`aezip.Archive`."""

from __future__ import annotations

import os
from pathlib import Path

from aezip.archive.reader import Archive
from aezip.codec.codec import Codec
from aezip.store.manifest import ShardedReader, is_manifest_path
from aezip.store.remote import RemoteArchiveReader, StorageOptions, is_url


class _StorageArchive(Archive):
    """An archive whose reader needs fsspec storage options (credentials, endpoints) to open."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "auto",
        models: list[str | Path] | None = None,
        codec: Codec | None = None,
        storage_options: StorageOptions = None,
    ) -> None:
        self._storage_options = storage_options
        super().__init__(path, device=device, models=models, codec=codec)


class ShardedArchive(_StorageArchive):
    """Every member of every shard of a manifest, read by name as from one archive.

    ``path`` is the manifest or its folder (local, or an fsspec URL); ``path`` (the property) stays
    that path. Payloads are read from their own shard; each shard's index is read once, on opening.
    """

    def _open_reader(self, path: str | os.PathLike[str]) -> ShardedReader:  # type: ignore[override]
        return ShardedReader(path, self._storage_options)

    @property
    def shards(self) -> list[str]:
        """Paths (or URLs) of the shards, in manifest order."""
        return [r.path for r in self._reader.readers]  # type: ignore[attr-defined]


class RemoteArchive(_StorageArchive):
    """An archive at an fsspec URL: the index and each member are fetched by range requests."""

    def _open_reader(self, path: str | os.PathLike[str]) -> RemoteArchiveReader:
        return RemoteArchiveReader(os.fspath(path), self._storage_options)


def open_archive(
    path: str | os.PathLike[str],
    device: str = "auto",
    models: list[str | Path] | None = None,
    codec: Codec | None = None,
    storage_options: StorageOptions = None,
) -> Archive:
    """An :class:`Archive` for an ``.aez`` file, a :class:`ShardedArchive` for a manifest or dataset folder,
    a :class:`RemoteArchive` for an archive URL (``s3://…``, ``memory://…``)."""
    if is_manifest_path(path, storage_options):
        return ShardedArchive(path, device, models, codec, storage_options)
    if is_url(path):
        return RemoteArchive(os.fspath(path), device, models, codec, storage_options)
    return Archive(path, device=device, models=models, codec=codec)
