"""Entropy coding of integer latents, behind one switch.

Methods have stable numeric ids written into every image stream (never reused):
``1`` = zstd (the baseline packer, no model needed), ``2`` = ANS over the model's integer
tables (``aezip.entropy.ans``), ``3`` = ANS with channel-conditional context tables kept in a side
file beside the model (``aezip.entropy.context``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from aezip.entropy.tables import CdfTables
from aezip.errors import CorruptArchiveError, ModelError

if TYPE_CHECKING:
    from aezip.entropy.context import ContextTables

METHODS: dict[str, int] = {"zstd": 1, "ans": 2, "ans-ctx": 3}
NAMES: dict[int, str] = {v: k for k, v in METHODS.items()}


def _context(context: ContextTables | Callable[[], ContextTables | None] | None) -> ContextTables:
    """Resolve a context source; ``ans-ctx`` cannot work without tables."""
    resolved = context() if callable(context) else context
    if resolved is None:
        raise ModelError("this model has no context tables for ans-ctx (fit them: python -m aezip.train.fit_entropy)")
    return resolved


def encode_latents(
    method: str,
    latents: np.ndarray,
    tables: CdfTables,
    context: ContextTables | Callable[[], ContextTables | None] | None = None,
) -> bytes:
    """Integer latents (C, H, W) → bytes with the named method (``context`` only for ``ans-ctx``)."""
    if method == "zstd":
        from aezip.entropy.zstd_packer import encode_zstd

        return encode_zstd(latents)
    if method == "ans":
        from aezip.entropy.ans import encode_ans

        return encode_ans(latents, tables)
    if method == "ans-ctx":
        from aezip.entropy.context import encode_ctx

        return encode_ctx(latents, _context(context))
    raise ValueError(f"unknown entropy method {method!r}")


def decode_latents(
    method_id: int,
    data: bytes,
    shape: tuple[int, int, int],
    tables: CdfTables,
    context: ContextTables | Callable[[], ContextTables | None] | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode_latents`, by the method id stored in the stream."""
    if method_id == 1:
        from aezip.entropy.zstd_packer import decode_zstd

        return decode_zstd(data, shape)
    if method_id == 2:
        from aezip.entropy.ans import decode_ans

        return decode_ans(data, shape, tables)
    if method_id == 3:
        from aezip.entropy.context import decode_ctx

        return decode_ctx(data, shape, _context(context))
    raise CorruptArchiveError(f"unknown entropy method id {method_id}")
