"""Feeding training from archives: the torch datasets, the distributed loader and its sampler,
interop with other data libraries, and export to tar shards.

::

    archive(s) ─► dataset.ImageArchiveDataset ─► archive_loader.ArchiveLoader (sampling order) ─► batches

``dataset``, ``archive_loader``, ``sampling``, ``interop`` (Hugging Face), ``export`` (tar /
WebDataset). May import: ``store``, ``archive``, ``codec``, ``model``, ``entropy``, ``errors``.
``aezip.loader.ArchiveLoader`` (and every public name of ``archive_loader``) loads on first use,
so importing a module of this package does not import torch by itself.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from aezip.loader import archive_loader

    try:
        return getattr(archive_loader, name)
    except AttributeError:
        raise AttributeError(f"module 'aezip.loader' has no attribute {name!r}") from None
