"""Open an archive or a sharded dataset (manifest or its folder) as one :class:`aezip.Archive`."""

from __future__ import annotations

import os
from pathlib import Path

from aezip.archive import Archive
from aezip.codec import Codec
from aezip.manifest import ShardedReader, is_manifest_path


class ShardedArchive(Archive):
    """Every member of every shard of a manifest, read by name as from one archive.

    ``path`` is the manifest or its folder; ``path`` (the property) stays that path. Payloads
    are read from their own shard; each shard's index is read once, on opening.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "auto",
        models: list[str | Path] | None = None,
        codec: Codec | None = None,
    ) -> None:
        reader = ShardedReader(path)
        try:
            super().__init__(reader.readers[0].path, device=device, models=models, codec=codec)
        except BaseException:
            reader.close()
            raise
        self._reader.close()
        self._reader = reader  # type: ignore[assignment]

    @property
    def shards(self) -> list[str]:
        """Paths of the shards, in manifest order."""
        return [r.path for r in self._reader.readers]  # type: ignore[attr-defined]


def open_archive(
    path: str | os.PathLike[str],
    device: str = "auto",
    models: list[str | Path] | None = None,
    codec: Codec | None = None,
) -> Archive:
    """An :class:`Archive` for an ``.aez`` file, or a :class:`ShardedArchive` for a manifest or dataset folder."""
    cls = ShardedArchive if is_manifest_path(path) else Archive
    return cls(path, device=device, models=models, codec=codec)
