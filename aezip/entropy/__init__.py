"""Entropy coding of integer latents, behind one switch.

Methods have stable numeric ids written into every image stream (never reused):
``1`` = zstd (the baseline packer, no model needed), ``2`` = ANS over the model's integer
tables (``aezip.entropy.ans``).
"""

from __future__ import annotations

import numpy as np

from aezip.entropy.tables import CdfTables
from aezip.errors import CorruptArchiveError

METHODS: dict[str, int] = {"zstd": 1, "ans": 2}
NAMES: dict[int, str] = {v: k for k, v in METHODS.items()}


def encode_latents(method: str, latents: np.ndarray, tables: CdfTables) -> bytes:
    """Integer latents (C, H, W) → bytes with the named method."""
    if method == "zstd":
        from aezip.entropy.zstd_packer import encode_zstd

        return encode_zstd(latents)
    if method == "ans":
        from aezip.entropy.ans import encode_ans

        return encode_ans(latents, tables)
    raise ValueError(f"unknown entropy method {method!r}")


def decode_latents(method_id: int, data: bytes, shape: tuple[int, int, int], tables: CdfTables) -> np.ndarray:
    """Inverse of :func:`encode_latents`, by the method id stored in the stream."""
    if method_id == 1:
        from aezip.entropy.zstd_packer import decode_zstd

        return decode_zstd(data, shape)
    if method_id == 2:
        from aezip.entropy.ans import decode_ans

        return decode_ans(data, shape, tables)
    raise CorruptArchiveError(f"unknown entropy method id {method_id}")
