"""aezip: learned compression for image datasets.

Public API::

    codec = aezip.Codec(quality=6)          # one image ⇄ bytes
    data = codec.encode(pil_image)
    image = codec.decode(data)

    with aezip.open("photos.aez") as archive:   # random access to an archive's members
        image = archive.image("cats/001.jpg")

    dataset = aezip.ImageArchiveDataset("photos.aez")   # torch Dataset over the images

Heavy modules (torch) load on first use of these names, so ``import aezip`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aezip.errors import (
    AezipError,
    CorruptArchiveError,
    FormatError,
    ModelError,
    ModelMismatchError,
    UnsafePathError,
    UnsupportedImageError,
    UnsupportedVersionError,
)

__version__ = "0.3.0"

__all__ = [
    "AezipError",
    "Archive",
    "Codec",
    "CorruptArchiveError",
    "FormatError",
    "ImageArchiveDataset",
    "ModelError",
    "ModelMismatchError",
    "UnsafePathError",
    "UnsupportedImageError",
    "UnsupportedVersionError",
    "__version__",
    "open",
]

if TYPE_CHECKING:
    from aezip.archive.reader import Archive
    from aezip.codec.codec import Codec
    from aezip.loader.dataset import ImageArchiveDataset

_LAZY = {"Codec": "aezip.codec.codec", "Archive": "aezip.archive.reader", "ImageArchiveDataset": "aezip.loader.dataset"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aezip' has no attribute {name!r}")


def open(  # noqa: A001
    path: str, device: str = "auto", models: list[str] | None = None, storage_options: dict | None = None
) -> Archive:
    """Open an ``.aez`` archive, or a sharded dataset (its ``manifest.json`` or folder), for random
    access by member name (see :class:`aezip.Archive`). ``path`` may be an fsspec URL (``s3://…``):
    members are then read by range requests, with ``storage_options`` for the store."""
    from aezip.store.sharded import open_archive

    return open_archive(path, device=device, models=models, storage_options=storage_options)
