"""Reading safetensors bytes (model files, entropy side files) with one-line errors.

Nothing is unpickled: safetensors parses a JSON header and raw little-endian buffers; the
``__metadata__`` strings come back as a dict.
"""

from __future__ import annotations

import json

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from aezip.errors import ModelError


def read_safetensors(data: bytes, source: str, what: str = "file") -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and ``__metadata__`` of safetensors bytes; :class:`ModelError` naming ``source`` if they are not."""
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{source}: not a safetensors {what} ({exc})") from None
    return tensors, metadata
