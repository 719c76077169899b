"""Baseline latent packer: integer latents → one zstd frame, no learned model needed.

Layout, chosen because zstd compresses it well: latents in channel-major (C, H, W) order as
int8, so each channel's similar statistics sit together; values outside -127..127 are written
as the escape byte -128 and their true values follow as int32 little-endian, in C order::

    u32 LE escape count N | zstd frame of ( int8[C·H·W] ‖ int32 LE[N] )
"""

from __future__ import annotations

import io
import struct

import numpy as np
import zstandard

from aezip.errors import CorruptArchiveError

ESCAPE = -128
LEVEL = 19

_compressor = zstandard.ZstdCompressor(level=LEVEL)
_decompressor = zstandard.ZstdDecompressor()


def encode_zstd(latents: np.ndarray) -> bytes:
    """Pack integer latents (C, H, W) into bytes."""
    values = np.ascontiguousarray(latents, dtype=np.int64)
    out_of_range = (values < -127) | (values > 127)
    plane = np.where(out_of_range, ESCAPE, values).astype(np.int8)
    escaped = values[out_of_range].astype("<i4")
    body = plane.tobytes() + escaped.tobytes()
    return struct.pack("<I", escaped.size) + _compressor.compress(body)


def decode_zstd(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`encode_zstd`; the output size is fixed by ``shape``, never by the stream."""
    if len(data) < 4:
        raise CorruptArchiveError("latent stream truncated")
    (count,) = struct.unpack_from("<I", data)
    n = shape[0] * shape[1] * shape[2]
    if count > n:
        raise CorruptArchiveError("latent stream declares more escapes than values")
    expected = n + 4 * count
    body = decompress_exact(data[4:], expected, "latent stream")
    plane = np.frombuffer(body, dtype=np.int8, count=n).astype(np.int32).reshape(shape)
    mask = plane == ESCAPE
    if int(mask.sum()) != count:
        raise CorruptArchiveError("latent stream escape count mismatch")
    plane[mask] = np.frombuffer(body, dtype="<i4", offset=n, count=count)
    return plane


def decompress_exact(data: bytes, size: int, what: str) -> bytes:
    """Decompress a zstd frame that must expand to exactly ``size`` bytes.

    Reads at most ``size + 1`` bytes, so a frame that declares (or expands to) more cannot
    exhaust memory: ``ZstdDecompressor.decompress`` trusts the frame's own content size.
    """
    try:
        chunks: list[bytes] = []
        got = 0
        with _decompressor.stream_reader(io.BytesIO(data)) as reader:
            while got <= size:
                chunk = reader.read(min(size + 1 - got, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        out = b"".join(chunks)
    except zstandard.ZstdError as exc:
        raise CorruptArchiveError(f"{what} does not decompress ({exc})") from None
    if len(out) != size:
        raise CorruptArchiveError(f"{what} has the wrong length")
    return out
