"""ANS coding of integer latents with the per-channel tables of :mod:`aezip.entropy.tables`.

The arithmetic is done by ``constriction`` (Rust, exact fixed point): a stack ANS coder with a
64-bit state, 32-bit words and 24-bit model precision (``constriction.stream.stack.AnsCoder``).

Exactness
---------
constriction's Python API has no constructor taking integer frequencies; ``Categorical`` takes
float weights and quantizes them. With ``perfect=False`` (the "fast" quantizer) the left
cumulative of symbol ``i`` is ``floor(S_i * (2**24 - K) / S) + i``, where ``S_i`` is the float
running sum of the weights before ``i`` and ``S`` the sum of all ``K`` weights. We pass the
integer weights ``w_i = freq[c, i] * 2**(24 - precision) - 1``: they sum to exactly
``2**24 - K``, every partial sum is an integer below ``2**24`` (exact in float64), the scale is
exactly ``1.0``, so the cumulative becomes ``sum_{j<i} freq[c, j] * 2**(24 - precision)``. The
coder's model is therefore *exactly* our integer table scaled to 24 bits: no floating-point
rounding happens anywhere, so the stream is a pure function of the integers on every machine
(the ANS coder itself is integer-only). ``tests/test_entropy_ans.py`` probes constriction's
cumulatives to pin this, and pins a golden stream. Verified with constriction 0.5.0
(pin ``constriction>=0.5,<0.6``).

Stream layout (all integers little-endian)
------------------------------------------
``u32 n_escapes`` | ``n_escapes`` varints | ANS words (``u32`` each) up to the end of the data.

- Symbols are those of ``CdfTables.symbolize``: latent ``v`` of channel ``c`` is symbol
  ``v - low[c]`` if ``low[c] <= v <= high[c]`` with ``high[c] = low[c] + K - 2``, else the escape
  ``K - 1``.
- Escape varints, one per escape symbol in C order of (c, y, x): unsigned LEB128 (7 bits per
  byte, least significant group first, high bit set on all but the last byte; at most 5 bytes;
  a multi-byte varint never ends in a zero byte) of the distance beyond the table edge,
  ``2 * (low[c] - 1 - v)`` for ``v < low[c]`` and ``2 * (v - high[c] - 1) + 1`` for
  ``v > high[c]``. Decoded values must lie in int32.
- ANS words: ``AnsCoder.get_compressed()`` after pushing channels ``C-1 .. 0`` (each with
  ``encode_reverse`` of its ``H*W`` symbols in row-major order), so decoding pops channel 0
  first. The words may be empty (no symbols, or only zero-cumulative ones); they never end in a
  zero word. After decoding all ``C*H*W`` symbols the coder must be exactly empty (ANS is a
  bijection, so a valid stream returns to the initial state), otherwise the stream is corrupt.

The stream is not self-terminating at its end: the caller (the container) stores its length.
It also must bound ``shape`` itself, since highly probable symbols can cost almost no bits.
"""

from __future__ import annotations

import constriction
import numpy as np

from aezip.entropy.tables import CdfTables
from aezip.errors import CorruptArchiveError

CODER_PRECISION = 24
MAX_VARINT_BYTES = 5
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


def checked_latents(latents: np.ndarray, channels: int, what: str) -> np.ndarray:
    """Latents (C, H, W) as they are (no copy) after checking what every coder needs: C = ``channels``,
    integers in int32. Coders widen them to int64 one channel at a time, so memory stays near the input's."""
    latents = np.asarray(latents)
    if latents.ndim != 3 or latents.shape[0] != channels:
        raise ValueError(f"latents of shape {latents.shape} do not match {channels} {what} channels")
    if not np.issubdtype(latents.dtype, np.integer):
        raise ValueError(f"latents must be integers, not {latents.dtype}")
    if latents.size and (int(latents.min()) < _INT32_MIN or int(latents.max()) > _INT32_MAX):
        raise ValueError("latents must fit in int32")
    return latents


def encode_ans(latents: np.ndarray, tables: CdfTables) -> bytes:
    """Compress integer latents (C, H, W) into the stream described in the module docstring.

    Channel by channel (last first, as the coder needs them), so the working memory is one channel's.
    """
    latents = checked_latents(latents, tables.channels, "table")
    low = tables.low.astype(np.int64)
    coder = constriction.stream.stack.AnsCoder()
    models = _channel_models(tables) if latents[0].size else []
    codes: list[np.ndarray] = []
    for c in reversed(range(tables.channels)):
        values = latents[c].ravel().astype(np.int64)
        rel = values - low[c]
        out = (rel < 0) | (rel >= tables.escape)
        codes.append(_escape_codes(values[out], np.full(int(out.sum()), c), tables))
        if models:
            coder.encode_reverse(np.where(out, tables.escape, rel).astype(np.int32), models[c])
    words = coder.get_compressed().astype("<u4")
    escape_codes = np.concatenate(codes[::-1])
    return np.uint32(escape_codes.size).astype("<u4").tobytes() + _write_varints(escape_codes) + words.tobytes()


def decode_ans(data: bytes, shape: tuple[int, int, int], tables: CdfTables) -> np.ndarray:
    """Inverse of :func:`encode_ans`; raises :class:`CorruptArchiveError` on any malformed stream."""
    if len(shape) != 3 or any(int(n) < 0 for n in shape) or int(shape[0]) != tables.channels:
        raise CorruptArchiveError(f"ANS stream: latent shape {tuple(shape)} does not fit the entropy tables")
    channels, height, width = (int(n) for n in shape)
    per_channel = height * width
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size < 4:
        raise CorruptArchiveError("ANS stream: truncated header")
    count = int(buf[:4].view("<u4")[0])
    if count > channels * per_channel or count > buf.size - 4:
        raise CorruptArchiveError("ANS stream: escape count out of range")
    codes, used = _read_varints(buf[4:], count)
    rest = buf[4 + used :]
    if rest.size % 4:
        raise CorruptArchiveError("ANS stream: compressed words are not a whole number of u32")
    words = rest.view("<u4").astype(np.uint32)

    symbols = np.empty((channels, per_channel), dtype=np.int32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        if per_channel:
            for c, model in enumerate(_channel_models(tables)):
                symbols[c] = coder.decode(model, per_channel)
        empty = coder.is_empty()
    except Exception as exc:
        raise CorruptArchiveError(f"ANS stream: {_one_line(exc)}") from None
    if not empty:
        raise CorruptArchiveError("ANS stream: data left over after the last symbol")

    escapes = np.array([np.count_nonzero(row == tables.escape) for row in symbols], dtype=np.int64)
    if int(escapes.sum()) != count:
        raise CorruptArchiveError("ANS stream: escape count differs from the escape symbols decoded")
    escaped = _escape_values(codes, np.repeat(np.arange(channels), escapes), tables)
    # Symbols become values in place, one channel at a time (as CdfTables.desymbolize, without its int64 copy).
    low, first = tables.low.astype(np.int64), 0
    for c in range(channels):
        row = symbols[c]
        mask = row == tables.escape
        values = row.astype(np.int64) + low[c]
        values[mask] = escaped[first : first + escapes[c]]
        first += int(escapes[c])
        row[:] = values.astype(np.int32)
    return symbols.reshape(channels, height, width)


def _channel_models(tables: CdfTables) -> list[constriction.stream.model.Categorical]:
    """One constriction model per channel that reproduces ``tables.freq`` exactly (see module docstring)."""
    weights = (tables.freq.astype(np.int64) << (CODER_PRECISION - tables.precision)) - 1
    return [constriction.stream.model.Categorical(row, perfect=False) for row in weights.astype(np.float64)]


def _escape_codes(values: np.ndarray, channel: np.ndarray, tables: CdfTables) -> np.ndarray:
    """Unsigned codes of escaped values: distance beyond the table edge, low bit = which edge."""
    low = tables.low.astype(np.int64)[channel]
    high = low + tables.escape - 1
    above = values > high
    distance = np.where(above, values - high - 1, low - 1 - values)
    return (2 * distance + above).astype(np.uint64)


def _escape_values(codes: np.ndarray, channel: np.ndarray, tables: CdfTables, stream: str = "ANS") -> np.ndarray:
    """Inverse of :func:`_escape_codes` (``channel``: the table row of each code), rejecting values outside int32."""
    low = tables.low.astype(np.int64)[channel]
    high = low + tables.escape - 1
    distance = (codes >> np.uint64(1)).astype(np.int64)
    values = np.where(codes & np.uint64(1), high + 1 + distance, low - 1 - distance)
    if values.size and (values.min() < _INT32_MIN or values.max() > _INT32_MAX):
        raise CorruptArchiveError(f"{stream} stream: escaped value outside int32")
    return values


def _write_varints(codes: np.ndarray) -> bytes:
    """Unsigned LEB128 encoding of ``codes`` (uint64, each below ``2**35``), vectorized."""
    if codes.size == 0:
        return b""
    lengths = np.ones(codes.size, dtype=np.int64)
    for k in range(1, MAX_VARINT_BYTES):
        lengths += codes >= np.uint64(1 << (7 * k))
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for k in range(MAX_VARINT_BYTES):
        sel = lengths > k
        group = (codes[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = np.where(lengths[sel] > k + 1, 0x80, 0)
        out[starts[sel] + k] = group.astype(np.uint8) | more
    return out.tobytes()


def _read_varints(buf: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """Parse ``count`` canonical varints from the start of ``buf``; returns codes and bytes used."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), 0
    ends = np.flatnonzero(buf[: MAX_VARINT_BYTES * count] < 0x80)[:count] + 1
    if ends.size < count:
        raise CorruptArchiveError("ANS stream: truncated escape values")
    starts = np.concatenate(([0], ends[:-1]))
    lengths = ends - starts
    if lengths.max() > MAX_VARINT_BYTES:
        raise CorruptArchiveError("ANS stream: escape value too long")
    if ((lengths > 1) & (buf[ends - 1] == 0)).any():
        raise CorruptArchiveError("ANS stream: non-canonical escape value")
    codes = np.zeros(count, dtype=np.uint64)
    for k in range(MAX_VARINT_BYTES):
        sel = lengths > k
        codes[sel] |= (buf[starts[sel] + k] & np.uint8(0x7F)).astype(np.uint64) << np.uint64(7 * k)
    return codes, int(ends[-1])


def _one_line(exc: Exception) -> str:
    """First line of an exception's message, for one-line error reports."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
