"""Tests of the ANS latent coder: golden bytes, exact model reproduction, round trips, corruption."""

from __future__ import annotations

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aezip.entropy.ans import CODER_PRECISION, _channel_models, decode_ans, encode_ans
from aezip.entropy.tables import CdfTables
from aezip.errors import CorruptArchiveError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

GOLDEN_HEX = (
    "0b000000f9ffffff0ffaffffff0ff7ffffff07feffffff07000901000100010000"
    "a0dce2a5f4dbff2ed71429852ec1b8d5385fe3f0fd30e3886405"
)


def golden_case() -> tuple[np.ndarray, CdfTables]:
    """A fixed (3, 4, 5) latent tensor with escapes at both edges and at the int32 extremes."""
    tables = CdfTables(
        low=np.array([-2, 0, -5], dtype=np.int32),
        freq=np.array(
            [
                [4000, 16000, 30000, 12000, 3000, 536],
                [40000, 20000, 4000, 1000, 500, 36],
                [8192, 8192, 16384, 16384, 8192, 8192],
            ],
            dtype=np.int32,
        ),
    )
    latents = (np.arange(60, dtype=np.int64).reshape(3, 4, 5) * 7) % 5 - 2
    latents[1] = (np.arange(20).reshape(4, 5) * 3) % 4
    latents[2] = (np.arange(20).reshape(4, 5) * 5) % 7 - 6
    latents[0, 0, 0] = INT32_MAX
    latents[0, 3, 4] = INT32_MIN
    latents[1, 1, 1] = 2**30
    latents[1, 2, 2] = -(2**30)
    latents[2, 0, 3] = 4
    return latents.astype(np.int32), tables


def random_tables(rng: np.random.Generator, channels: int, symbols: int, precision: int) -> CdfTables:
    """Valid random tables: per channel, ``symbols`` frequencies >= 1 summing to ``2**precision``."""
    total = 1 << precision
    freq = np.empty((channels, symbols), dtype=np.int32)
    for c in range(channels):
        cuts = np.sort(rng.choice(total - 1, size=symbols - 1, replace=False)) + 1
        freq[c] = np.diff(np.concatenate(([0], cuts, [total])))
    low = rng.integers(-50, 50, size=channels).astype(np.int32)
    return CdfTables(low=low, freq=freq, precision=precision)


def sample_latents(rng: np.random.Generator, tables: CdfTables, shape: tuple[int, int]) -> np.ndarray:
    """Latents drawn from the tables' own distribution (escapes become values just past the range)."""
    size = shape[0] * shape[1]
    out = np.empty((tables.channels, size), dtype=np.int64)
    for c in range(tables.channels):
        p = tables.freq[c] / float(1 << tables.precision)
        sym = rng.choice(tables.symbols, size=size, p=p)
        out[c] = np.where(sym == tables.escape, int(tables.low[c]) + tables.escape + 3, int(tables.low[c]) + sym)
    return out.reshape(tables.channels, *shape).astype(np.int32)


def left_cumulatives(model: constriction.stream.model.Categorical, symbols: int) -> list[int]:
    """constriction's 24-bit left cumulative of each symbol: pushing one symbol onto an empty
    ANS coder (state 0) leaves exactly that cumulative as the state."""
    out = []
    for s in range(symbols):
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.array([s], dtype=np.int32), model)
        words = coder.get_compressed()
        out.append(int(words[0]) if words.size else 0)
    return out


def test_golden_stream() -> None:
    latents, tables = golden_case()
    data = encode_ans(latents, tables)
    assert data.hex() == GOLDEN_HEX
    assert np.array_equal(decode_ans(bytes.fromhex(GOLDEN_HEX), latents.shape, tables), latents)


@pytest.mark.parametrize(("precision", "symbols"), [(8, 9), (16, 9), (16, 1024), (24, 9)])
def test_constriction_model_is_exactly_our_table(precision: int, symbols: int) -> None:
    tables = random_tables(np.random.default_rng(precision), channels=3, symbols=symbols, precision=precision)
    extreme = CdfTables(low=np.zeros(1, np.int32), freq=np.array([[1, 1, 2**24 - 3, 1]], np.int32), precision=24)
    for t in (tables, extreme):
        for c, model in enumerate(_channel_models(t)):
            cum = np.concatenate(([0], np.cumsum(t.freq[c].astype(np.int64))[:-1]))
            assert left_cumulatives(model, t.symbols) == list(cum << (CODER_PRECISION - t.precision))


def test_empty_latents() -> None:
    tables = golden_case()[1]
    for shape in ((3, 0, 5), (3, 4, 0)):
        data = encode_ans(np.zeros(shape, np.int32), tables)
        assert data == bytes(4)
        assert decode_ans(data, shape, tables).shape == shape


@st.composite
def tables_and_latents(draw: st.DrawFn) -> tuple[CdfTables, np.ndarray]:
    channels = draw(st.integers(1, 4))
    symbols = draw(st.integers(2, 24))
    precision = draw(st.integers(8, 24))
    tables = random_tables(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), channels, symbols, precision)
    lo, hi = int(tables.low.min()) - 3, int(tables.low.max()) + symbols + 2
    elements = st.one_of(
        st.integers(lo, hi),
        st.sampled_from([INT32_MIN, INT32_MAX, -(2**30), 2**30]),
        st.integers(INT32_MIN, INT32_MAX),
    )
    shape = (channels, draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    return tables, draw(hnp.arrays(np.int32, shape, elements=elements))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables_and_latents())
def test_round_trip(case: tuple[CdfTables, np.ndarray]) -> None:
    tables, latents = case
    out = decode_ans(encode_ans(latents, tables), latents.shape, tables)
    assert out.dtype == np.int32
    assert np.array_equal(out, latents)


def test_round_trip_accepts_any_integer_dtype() -> None:
    latents, tables = golden_case()
    data = encode_ans(latents.astype(np.int64), tables)
    assert data == encode_ans(latents, tables)


def test_size_close_to_ideal() -> None:
    rng = np.random.default_rng(7)
    x = np.arange(-30, 31)
    scales = rng.uniform(0.5, 5.0, size=16)
    tables = CdfTables.from_pmf(np.exp(-np.abs(x[None] / scales[:, None])), offset=-30)
    latents = sample_latents(rng, tables, (24, 32))
    size = len(encode_ans(latents, tables))
    ideal = tables.ideal_bits(latents) / 8
    escapes = int((tables.symbolize(latents)[0] == tables.escape).sum())
    assert ideal - 8 <= size <= 1.005 * ideal + 16 + 5 * escapes


def valid_stream() -> tuple[bytes, tuple[int, int, int], CdfTables]:
    latents, tables = golden_case()
    return encode_ans(latents, tables), latents.shape, tables


def test_truncations_raise() -> None:
    data, shape, tables = valid_stream()
    for n in range(len(data)):
        with pytest.raises(CorruptArchiveError):
            decode_ans(data[:n], shape, tables)


def test_trailing_bytes_raise() -> None:
    data, shape, tables = valid_stream()
    for extra in (b"\x00", b"\x01\x00\x00\x00", b"\x00\x00\x00\x00", b"\xff" * 8):
        with pytest.raises(CorruptArchiveError):
            decode_ans(data + extra, shape, tables)


def test_bad_escape_count_raises() -> None:
    data, shape, tables = valid_stream()
    count = int.from_bytes(data[:4], "little")
    for bad in (count - 1, count + 1, 2**32 - 1):
        with pytest.raises(CorruptArchiveError):
            decode_ans(bad.to_bytes(4, "little") + data[4:], shape, tables)


def test_bad_varints_raise() -> None:
    tables = golden_case()[1]
    shape = (3, 1, 1)
    for section in (b"\x80\x00", b"\xff\xff\xff\xff\xff\x01", b"\xff\xff\xff\xff\x7f"):
        with pytest.raises(CorruptArchiveError):
            decode_ans(b"\x01\x00\x00\x00" + section, shape, tables)


def test_bad_shape_raises() -> None:
    data, _, tables = valid_stream()
    for shape in ((2, 4, 5), (3, -4, 5)):
        with pytest.raises(CorruptArchiveError):
            decode_ans(data, shape, tables)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64), st.integers(0, 5), st.integers(0, 5))
def test_random_bytes_raise_only_corrupt(data: bytes, height: int, width: int) -> None:
    tables = golden_case()[1]
    try:
        out = decode_ans(data, (3, height, width), tables)
    except CorruptArchiveError as exc:
        assert "\n" not in str(exc)
    else:
        assert out.shape == (3, height, width) and out.dtype == np.int32


def test_bit_flips_raise_only_corrupt() -> None:
    data, shape, tables = valid_stream()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            out = decode_ans(bytes(flipped), shape, tables)
        except CorruptArchiveError:
            continue
        assert out.shape == shape and out.dtype == np.int32


def test_encode_rejects_bad_latents() -> None:
    latents, tables = golden_case()
    for bad in (latents[:2], latents.astype(np.float32), latents.astype(np.int64) + 2**31):
        with pytest.raises(ValueError):
            encode_ans(bad, tables)
