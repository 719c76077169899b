"""Channel-conditional ANS ("ans-ctx", method 3): an adaptive model with integer-only decoding.

Channels are coded in a fixed order (one per quality, stored with the tables). Before channel
``c`` is coded, every position already knows its *activity*: the sum, over the channels coded
before ``c``, of ``min(|latent|, cap)`` at that position. Integer thresholds of channel ``c``
cut the activity into ``n`` contexts; each (channel, context) pair has its own integer table.
So the probabilities adapt to the region (busy or flat) while decoding stays vectorised: all
contexts of a channel are known before its first symbol is decoded, and the positions of one
context are decoded in a single call. Nothing at decode time is a float: activity, thresholds,
tables and the ANS coder are integers (the coder model is built exactly as in
:mod:`aezip.entropy.ans`).

Stream layout (all integers little-endian)
------------------------------------------
``8 bytes tables id`` | ``u32 n_escapes`` | ``n_escapes`` varints | ANS words (``u32`` each).

- tables id: the first 8 bytes of the sha256 of the context-tables file; a decoder refuses a
  stream whose id differs from the tables it holds for the stream's model (as corrupt).
- Symbol order: for ``i = 0 .. C-1``, channel ``c = order[i]``; its activity map ``a`` (h, w)
  is ``sum_{j < i} min(|v[order[j]]|, cap)``; context ``k[y, x]`` is the number of entries of
  ``thresholds[c]`` that are ``<= a[y, x]``; then for ``k = 0 .. n-1`` the positions of
  context ``k`` in row-major order, coded with table row ``c * n + k``.
- Symbols, escapes and varints are those of :mod:`aezip.entropy.ans`, with the table row of
  each position in place of its channel; escape varints follow the symbol order above.
- ANS words: pushed in reverse symbol order, so the decoder pops them in symbol order; after
  the last symbol the coder must be exactly empty.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import constriction
import numpy as np

from aezip.entropy.ans import _escape_codes, _escape_values, _one_line, _read_varints, _write_varints, checked_latents
from aezip.entropy.safetensors_io import read_safetensors
from aezip.entropy.tables import CdfTables
from aezip.errors import CorruptArchiveError, ModelError

FORMAT_TAG = "aezip-ctx/1"
SIDE_SUFFIX = ".ctx.safetensors"
ID_BYTES = 8
CODER_PRECISION = 24
MAX_CONTEXTS = 64


@dataclass(frozen=True)
class ContextTables:
    """The adaptive model of one quality: channel order, activity thresholds and tables."""

    order: np.ndarray  # int32 (C,): a permutation of the channels
    thresholds: np.ndarray  # int32 (C, n - 1), non-decreasing rows
    tables: CdfTables  # C * n rows: row c * n + k is channel c in context k
    cap: int  # activity counts min(|latent|, cap)
    ident: bytes = bytes(ID_BYTES)  # first bytes of the sha256 of the file holding them

    def __post_init__(self) -> None:
        order, th = self.order, self.thresholds
        channels = order.shape[0] if order.ndim == 1 else -1
        if channels < 1 or not np.array_equal(np.sort(order), np.arange(channels)):
            raise ModelError("context tables: channel order is not a permutation")
        if th.ndim != 2 or th.shape[0] != channels or not 1 <= th.shape[1] + 1 <= MAX_CONTEXTS:
            raise ModelError("context tables: thresholds have the wrong shape")
        if th.shape[1] and (np.diff(th.astype(np.int64), axis=1) < 0).any():
            raise ModelError("context tables: thresholds must be non-decreasing")
        if self.tables.channels != channels * (th.shape[1] + 1):
            raise ModelError("context tables: one table per channel and context expected")
        if not 1 <= self.cap <= 1 << 16 or len(self.ident) != ID_BYTES:
            raise ModelError("context tables: bad activity cap or id")

    @property
    def channels(self) -> int:
        return int(self.order.shape[0])

    @property
    def contexts(self) -> int:
        return int(self.thresholds.shape[1]) + 1

    @functools.cached_property
    def models(self) -> list[constriction.stream.model.Categorical]:
        """One exact constriction model per table row (see :mod:`aezip.entropy.ans`)."""
        t = self.tables
        weights = ((t.freq.astype(np.int64) << (CODER_PRECISION - t.precision)) - 1).astype(np.float64)
        return [constriction.stream.model.Categorical(row, perfect=False) for row in weights]

    def context_map(self, latents: np.ndarray) -> np.ndarray:
        """Context of every latent (C, H, W), as the decoder will know it (encoder side)."""
        act = np.minimum(np.abs(latents.astype(np.int64)[self.order]), self.cap)
        before = np.cumsum(act, axis=0) - act  # activity of the channels coded earlier
        out = np.empty(latents.shape, dtype=np.int64)
        for i, c in enumerate(self.order):
            out[c] = np.searchsorted(self.thresholds[c], before[i], side="right")
        return out

    def rows_of(self, latents: np.ndarray) -> np.ndarray:
        """Table row of every latent (C, H, W)."""
        channel = np.arange(self.channels, dtype=np.int64).reshape(-1, 1, 1)
        return channel * self.contexts + self.context_map(latents)

    def ideal_bits(self, latents: np.ndarray) -> float:
        """Code length in bits of latents (C, H, W), escapes counted at 32 bits each."""
        rows = self.rows_of(latents).ravel()
        values = latents.astype(np.int64).ravel()
        symbols, escapes = _symbolize(values, rows, self.tables)
        f = self.tables.freq[rows, symbols].astype(np.float64)
        return float(self.tables.precision * f.size - np.log2(f).sum() + 32 * escapes.size)


def _symbolize(values: np.ndarray, rows: np.ndarray, tables: CdfTables) -> tuple[np.ndarray, np.ndarray]:
    """Symbols of ``values`` under table ``rows`` (1-D each) and the escaped values."""
    rel = values - tables.low.astype(np.int64)[rows]
    out = (rel < 0) | (rel >= tables.escape)
    return np.where(out, tables.escape, rel), values[out]


def encode_ctx(latents: np.ndarray, ctx: ContextTables) -> bytes:
    """Compress integer latents (C, H, W) into the stream described in the module docstring.

    The coder takes symbols last first, so channels are visited in reverse ``order``; the activity
    before each one is the total activity minus that of the channels from it on (exact integers),
    which keeps the working memory to one channel's.
    """
    values = checked_latents(latents, ctx.channels, "context")
    n, tables = ctx.contexts, ctx.tables
    per_channel = values.shape[1] * values.shape[2]
    activity = np.zeros(per_channel, dtype=np.int64)
    for c in ctx.order.tolist():
        activity += np.minimum(np.abs(values[c].ravel().astype(np.int64)), ctx.cap)
    coder = constriction.stream.stack.AnsCoder()
    models = ctx.models if per_channel else []
    codes: list[np.ndarray] = []
    for c in reversed(ctx.order.tolist()):
        v = values[c].ravel().astype(np.int64)
        activity -= np.minimum(np.abs(v), ctx.cap)  # now the activity of the channels coded before c
        context = np.searchsorted(ctx.thresholds[c], activity, side="right")
        # Symbol order inside a channel: by context (stable: row-major inside a context).
        sort = np.argsort(context, kind="stable")
        rows = c * n + context[sort]
        symbols, escaped = _symbolize(v[sort], rows, tables)
        codes.append(_escape_codes(escaped, rows[symbols == tables.escape], tables))
        if per_channel:
            symbols = symbols.astype(np.int32)
            bounds = np.flatnonzero(np.diff(rows)) + 1
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [rows.size]))
            for s, e in zip(starts[::-1], ends[::-1], strict=True):
                coder.encode_reverse(symbols[s:e], models[int(rows[s])])
    words = coder.get_compressed().astype("<u4")
    escape_codes = np.concatenate(codes[::-1])
    header = ctx.ident + np.uint32(escape_codes.size).astype("<u4").tobytes()
    return header + _write_varints(escape_codes) + words.tobytes()


def decode_ctx(data: bytes, shape: tuple[int, int, int], ctx: ContextTables) -> np.ndarray:
    """Inverse of :func:`encode_ctx`; raises :class:`CorruptArchiveError` on any malformed stream."""
    if len(shape) != 3 or any(int(v) < 0 for v in shape) or int(shape[0]) != ctx.channels:
        raise CorruptArchiveError(f"ans-ctx stream: latent shape {tuple(shape)} does not fit the context tables")
    channels, height, width = (int(v) for v in shape)
    per_channel = height * width
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size < ID_BYTES + 4:
        raise CorruptArchiveError("ans-ctx stream: truncated header")
    if buf[:ID_BYTES].tobytes() != ctx.ident:
        raise CorruptArchiveError(
            f"ans-ctx stream names context tables {buf[:ID_BYTES].tobytes().hex()}, not the loaded "
            f"{ctx.ident.hex()} (damaged, or coded with other tables)"
        )
    count = int(buf[ID_BYTES : ID_BYTES + 4].view("<u4")[0])
    if count > channels * per_channel or count > buf.size - ID_BYTES - 4:
        raise CorruptArchiveError("ans-ctx stream: escape count out of range")
    codes, used = _read_varints(buf[ID_BYTES + 4 :], count)
    rest = buf[ID_BYTES + 4 + used :]
    if rest.size % 4:
        raise CorruptArchiveError("ans-ctx stream: compressed words are not a whole number of u32")
    words = rest.view("<u4").astype(np.uint32)

    tables, n = ctx.tables, ctx.contexts
    low = tables.low.astype(np.int64)
    out = np.empty((channels, per_channel), dtype=np.int32)
    activity = np.zeros(per_channel, dtype=np.int64)
    next_code = 0
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        models = ctx.models if per_channel else []
        for c in ctx.order.tolist() if per_channel else []:
            context = np.searchsorted(ctx.thresholds[c], activity, side="right")
            sort = np.argsort(context, kind="stable")
            counts = np.bincount(context, minlength=n)
            parts = [coder.decode(models[c * n + k], int(m)) for k, m in enumerate(counts.tolist()) if m]
            symbols = np.concatenate(parts).astype(np.int64)
            rows = c * n + context[sort]
            values = symbols + low[rows]
            esc = np.flatnonzero(symbols == tables.escape)
            if esc.size:
                if next_code + esc.size > count:
                    raise CorruptArchiveError("ans-ctx stream: more escape symbols than escape values")
                values[esc] = _escape_values(codes[next_code : next_code + esc.size], rows[esc], tables, "ans-ctx")
                next_code += esc.size
            out[c, sort] = values  # values outside int32 wrap, as a cast of the int64 values would
            activity[sort] += np.minimum(np.abs(values), ctx.cap)
        empty = coder.is_empty()
    except CorruptArchiveError:
        raise
    except Exception as exc:
        raise CorruptArchiveError(f"ans-ctx stream: {_one_line(exc)}") from None
    if not empty:
        raise CorruptArchiveError("ans-ctx stream: data left over after the last symbol")
    if next_code != count:
        raise CorruptArchiveError("ans-ctx stream: escape count differs from the escape symbols decoded")
    return out.reshape(channels, height, width)


@dataclass(frozen=True)
class ContextModel:
    """All qualities' context tables of one model, as stored in its side file."""

    qualities: list[ContextTables]
    model_sha256: str
    sha256: str


def context_to_bytes(qualities: list[ContextTables], model_sha256: str, extra: dict[str, str] | None = None) -> bytes:
    """Serialise context tables (safetensors, int32 tensors, little-endian).

    Tables are stored ragged (most rows are narrow): per row the run ``start .. start + length``
    of symbols whose frequency is not 1, and the escape's frequency; the other symbols have
    frequency 1. Loading rebuilds the rectangular ``CdfTables`` exactly.
    """
    import torch
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    for q, t in enumerate(qualities):
        freq = t.tables.freq[:, :-1]
        other = freq != 1
        any_other = other.any(axis=1)
        start = np.where(any_other, np.argmax(other, axis=1), 0)
        stop = np.where(any_other, freq.shape[1] - np.argmax(other[:, ::-1], axis=1), 0)
        values = np.concatenate([row[a:b] for row, a, b in zip(freq, start, stop, strict=False)])
        parts = {
            "order": t.order,
            "thresholds": t.thresholds,
            "cap": np.array([t.cap]),
            "low": t.tables.low,
            "symbols": np.array([t.tables.symbols]),
            "precision": np.array([t.tables.precision]),
            "start": start,
            "length": stop - start,
            "values": values,
            "escape": t.tables.freq[:, -1],
        }
        for name, value in parts.items():
            tensors[f"ctx.{q}.{name}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.int32))
    metadata = {"format": FORMAT_TAG, "model_sha256": model_sha256, "qualities": str(len(qualities))}
    metadata.update(extra or {})
    return st_save(tensors, metadata=metadata)


def _unpack_tables(part: dict[str, np.ndarray], rows: int, source: str) -> CdfTables:
    """Rebuild rectangular tables from the ragged layout of :func:`context_to_bytes`."""
    low, start, length, escape = part["low"], part["start"], part["length"], part["escape"]
    symbols, precision = int(part["symbols"][0]), int(part["precision"][0])
    if any(a.shape != (rows,) for a in (low, start, length, escape)) or not 2 <= symbols <= 1024:
        raise ModelError(f"{source}: table rows do not match channels x contexts")
    if (start < 0).any() or (length < 0).any() or (start + length > symbols - 1).any():
        raise ModelError(f"{source}: table runs out of range")
    if part["values"].shape != (int(length.sum()),):
        raise ModelError(f"{source}: table values do not match their runs")
    freq = np.ones((rows, symbols), dtype=np.int32)
    freq[:, -1] = escape
    offsets = np.concatenate(([0], np.cumsum(length)))
    for r in range(rows):
        freq[r, start[r] : start[r] + length[r]] = part["values"][offsets[r] : offsets[r + 1]]
    return CdfTables(low=low.astype(np.int32), freq=freq, precision=precision)


def context_from_bytes(data: bytes, model_sha256: str, channels: int, qualities: int, source: str) -> ContextModel:
    """Parse and validate a side file for the model with this sha256; :class:`ModelError` if unfit."""
    sha = hashlib.sha256(data).hexdigest()
    tensors, metadata = read_safetensors(data, source)
    if metadata.get("format") != FORMAT_TAG:
        raise ModelError(f"{source}: not aezip context tables (format tag {metadata.get('format')!r})")
    if metadata.get("model_sha256") != model_sha256:
        raise ModelError(f"{source}: context tables belong to another model")
    sha_id = bytes.fromhex(sha)[:ID_BYTES]
    out = []
    names = ("order", "thresholds", "cap", "low", "symbols", "precision", "start", "length", "values", "escape")
    for q in range(qualities):
        try:
            part = {n: tensors[f"ctx.{q}.{n}"].astype(np.int64) for n in names}
        except KeyError as exc:
            raise ModelError(f"{source}: missing {exc}") from None
        if part["order"].shape != (channels,) or part["thresholds"].ndim != 2 or part["cap"].size != 1:
            raise ModelError(f"{source}: shapes differ from the model's")
        tables = _unpack_tables(part, channels * (part["thresholds"].shape[1] + 1), source)
        th = part["thresholds"].astype(np.int32)
        out.append(ContextTables(part["order"].astype(np.int32), th, tables, int(part["cap"][0]), sha_id))
    return ContextModel(qualities=out, model_sha256=model_sha256, sha256=sha)
