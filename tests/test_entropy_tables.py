"""Integer tables and the zstd latent packer: invariants and exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aezip.entropy import decode_latents, encode_latents
from aezip.entropy.tables import CdfTables, quantize
from aezip.entropy.zstd_packer import decode_zstd, encode_zstd
from aezip.errors import CorruptArchiveError, ModelError


@given(st.lists(st.floats(0, 1), min_size=2, max_size=300), st.integers(10, 16))
def test_quantize_sums_exactly_and_keeps_every_symbol(weights: list[float], precision: int) -> None:
    freq = quantize(np.array([weights]), precision)
    assert freq.sum() == 1 << precision and freq.min() >= 1


def test_tables_from_a_gaussian_cover_the_bulk() -> None:
    x = np.arange(-50, 51)
    pmf = np.exp(-0.5 * (x / 3.0) ** 2)[None].repeat(4, 0)
    t = CdfTables.from_pmf(pmf, -50)
    assert t.channels == 4 and t.symbols < 60
    assert (t.low <= -10).all() and (t.low + t.symbols - 2 >= 10).all()


def test_counts_give_smoothed_tables() -> None:
    counts = np.zeros((2, 21))
    counts[:, 10] = 1000
    t = CdfTables.from_counts(counts, -10)
    assert t.ideal_bits(np.zeros((2, 4, 4), np.int32)) < 32 * 0.01 + 1


def test_invalid_tables_are_rejected() -> None:
    with pytest.raises(ModelError):
        CdfTables(low=np.zeros(2, np.int32), freq=np.ones((2, 4), np.int32))


@given(
    arrays(
        np.int32,
        st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
        elements=st.integers(-(2**31), 2**31 - 1),
    )
)
def test_zstd_round_trip_is_exact(latents: np.ndarray) -> None:
    assert np.array_equal(decode_zstd(encode_zstd(latents), latents.shape), latents)


def test_zstd_refuses_bad_streams() -> None:
    data = encode_zstd(np.arange(24, dtype=np.int32).reshape(2, 3, 4) * 50)
    for bad in (b"", data[:3], data[:-1], b"\x00\x00\x00\x00garbage", data[:4] + b"\x28\xb5\x2f\xfd" + bytes(8)):
        with pytest.raises(CorruptArchiveError):
            decode_zstd(bad, (2, 3, 4))
    with pytest.raises(CorruptArchiveError):
        decode_zstd(data, (2, 3, 5))


def test_a_zstd_bomb_cannot_exhaust_memory() -> None:
    import struct

    import zstandard

    bomb = struct.pack("<I", 0) + zstandard.ZstdCompressor().compress(bytes(50_000_000))
    with pytest.raises(CorruptArchiveError, match="wrong length"):
        decode_zstd(bomb, (1, 2, 2))


def test_both_methods_round_trip_through_the_switch() -> None:
    rng = np.random.default_rng(0)
    latents = rng.integers(-5, 6, (3, 4, 5)).astype(np.int32)
    x = np.arange(-20, 21)
    tables = CdfTables.from_pmf(np.exp(-np.abs(x) / 2.0)[None].repeat(3, 0), -20)
    for method, mid in (("zstd", 1), ("ans", 2)):
        data = encode_latents(method, latents, tables)
        assert np.array_equal(decode_latents(mid, data, latents.shape, tables), latents)
    with pytest.raises(CorruptArchiveError):
        decode_latents(7, b"", latents.shape, tables)
