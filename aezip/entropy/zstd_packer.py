"""Baseline latent packer: integer latents → one zstd frame, no learned model needed.

Layout, chosen because zstd compresses it well: latents in channel-major (C, H, W) order as
int8, so each channel's similar statistics sit together; values outside -127..127 are written
as the escape byte -128 and their true values follow as int32 little-endian, in C order::

    u32 LE escape count N | zstd frame of ( int8[C·H·W] ‖ int32 LE[N] )
"""

from __future__ import annotations

import io
import struct
import threading

import numpy as np
import zstandard

from aezip.errors import CorruptArchiveError

ESCAPE = -128
LEVEL = 19

#: Latents converted to int64 at a time while packing (8 MiB of int64).
CHUNK = 1 << 20

#: Level of the quick size estimate ``aezip --entropy auto`` makes before paying for :data:`LEVEL`.
PROBE_LEVEL = 3

_local = threading.local()


def compressor(level: int = LEVEL) -> zstandard.ZstdCompressor:
    """This thread's compressor at ``level`` (a zstd context must not be shared by two threads)."""
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor (shared by every zstd frame aezip reads)."""
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


def encode_zstd(latents: np.ndarray, level: int = LEVEL) -> bytes:
    """Pack integer latents (C, H, W) into bytes (zstd at ``level``; every level decodes alike).

    The body is built in one buffer, :data:`CHUNK` values at a time, and compressed in one call:
    no whole-tensor int64 copy is made (the bytes are those of compressing the body in one piece).
    """
    flat = np.asarray(latents).reshape(-1)
    spans = range(0, flat.size, CHUNK)

    def values(start: int) -> np.ndarray:
        return np.ascontiguousarray(flat[start : start + CHUNK], dtype=np.int64)

    count = sum(int(np.count_nonzero((v < -127) | (v > 127))) for v in map(values, spans))
    body = np.empty(flat.size + 4 * count, dtype=np.uint8)
    plane, escaped = body[: flat.size].view(np.int8), body[flat.size :]
    done = 0
    for start in spans:
        v = values(start)
        out_of_range = (v < -127) | (v > 127)
        plane[start : start + v.size] = np.where(out_of_range, ESCAPE, v)
        wide = v[out_of_range].astype("<i4").view(np.uint8)
        escaped[done : done + wide.size] = wide
        done += wide.size
    return struct.pack("<I", count) + compressor(level).compress(body)


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


def decompress_exact(data: bytes, size: int, what: str) -> np.ndarray:
    """Decompress a zstd frame that must expand to exactly ``size`` bytes (returned as uint8).

    Reads at most ``size + 1`` bytes, into one buffer whose pages are only touched as they are
    filled, so a frame that declares (or expands to) more cannot exhaust memory:
    ``ZstdDecompressor.decompress`` trusts the frame's own content size.
    """
    out = np.empty(size + 1, dtype=np.uint8)
    got = 0
    try:
        with decompressor().stream_reader(io.BytesIO(data)) as reader:
            while got <= size:
                n = reader.readinto(memoryview(out[got : got + min(size + 1 - got, 1 << 20)]))
                if not n:
                    break
                got += n
    except zstandard.ZstdError as exc:
        raise CorruptArchiveError(f"{what} does not decompress ({exc})") from None
    if got != size:
        raise CorruptArchiveError(f"{what} has the wrong length")
    return out[:size]
