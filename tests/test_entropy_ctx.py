"""Tests of ``ans-ctx`` (method 3): golden bytes, exactness, round trips, corruption, side files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from aezip import Codec
from aezip.codec.codec import parse_header
from aezip.entropy import METHODS, decode_latents, encode_latents
from aezip.entropy.context import (
    ID_BYTES,
    ContextTables,
    context_from_bytes,
    context_to_bytes,
    decode_ctx,
    encode_ctx,
)
from aezip.entropy.tables import CdfTables
from aezip.errors import CorruptArchiveError, ModelError
from aezip.model.autoencoder import Autoencoder
from aezip.model.config import ModelConfig
from aezip.model.registry import ModelStore, default_model, load_shipped, shipped_models
from aezip.model.side_files import context_tables, load_context, side_file_path
from aezip.model.weights import model_to_bytes
from aezip.train.fit_entropy import fit_quality
from aezip.train.fit_entropy import main as fit_main
from tests.conftest import photo_like
from tests.test_entropy_ans import INT32_MAX, INT32_MIN, random_tables

GOLDEN_HEX = (
    "01020304050607080c0000000000000b00f7ffffff0f000000fcffffff0f000000"
    "503f4ef50e07ef5f76fec87fb5ea961674e69f31eefd95a896c401"
)
#: sha256 of the shipped tables' stream of ``shipped_latents()`` at quality 3.
# sha256 of the stream each shipped side file gives for ``shipped_latents`` at quality 3.
SHIPPED_GOLDEN_SHA256 = {
    "v2-gpu-128x320": "0539deaa6e69506f9b7c26e44a9f7cbd3a733139d5eedb76023cb063a5f0ffb0",
    "v3-ft-128x320": "afa05f31c52293bae4973aafc33a61ad5416e3cc34e6ba8d478495c28e17dc01",
}


def golden_case() -> tuple[np.ndarray, ContextTables]:
    """Fixed (3, 4, 5) latents and 2-context tables, with escapes at both edges and int32 extremes."""
    freq = np.array(
        [
            [30000, 20000, 10000, 5000, 536],
            [8000, 40000, 12000, 5000, 536],
            [50000, 10000, 4000, 1000, 536],
            [10000, 10000, 20000, 25000, 536],
            [16384, 16384, 16384, 16000, 384],
            [40000, 16000, 6000, 3000, 536],
        ],
        dtype=np.int32,
    )
    tables = CdfTables(low=np.array([0, -1, 0, -2, -1, 0], dtype=np.int32), freq=freq)
    ctx = ContextTables(
        order=np.array([1, 0, 2], dtype=np.int32),
        thresholds=np.array([[2], [1], [3]], dtype=np.int32),
        tables=tables,
        cap=2,
        ident=bytes(range(1, ID_BYTES + 1)),
    )
    latents = (np.arange(60, dtype=np.int64).reshape(3, 4, 5) * 7) % 4 - 1
    latents[0, 0, 0] = INT32_MAX
    latents[2, 3, 4] = INT32_MIN
    latents[1, 2, 2] = 9
    return latents.astype(np.int32), ctx


def random_context(
    rng: np.random.Generator, channels: int, contexts: int, symbols: int, precision: int
) -> ContextTables:
    """Valid random context tables."""
    tables = random_tables(rng, channels * contexts, symbols, precision)
    thresholds = np.sort(rng.integers(0, 12, size=(channels, contexts - 1)), axis=1).astype(np.int32)
    order = rng.permutation(channels).astype(np.int32)
    return ContextTables(
        order, thresholds, tables, int(rng.integers(1, 6)), rng.integers(0, 256, ID_BYTES).astype(np.uint8).tobytes()
    )


def test_golden_stream() -> None:
    latents, ctx = golden_case()
    data = encode_ctx(latents, ctx)
    assert data.hex() == GOLDEN_HEX
    assert np.array_equal(decode_ctx(bytes.fromhex(GOLDEN_HEX), latents.shape, ctx), latents)


def shipped_latents() -> np.ndarray:
    """Deterministic latents shaped like a 64 x 80 image of the shipped model (320, 4, 5)."""
    rng = np.random.default_rng(17)
    scale = np.linspace(4.0, 0.1, 320).reshape(-1, 1, 1)
    return np.round(rng.laplace(size=(320, 4, 5)) * scale).astype(np.int32)


@pytest.mark.parametrize("name", sorted(SHIPPED_GOLDEN_SHA256))
def test_shipped_tables_golden_stream(name: str) -> None:
    """A stream coded with each shipped side file: pinned bytes (hash), exact decode."""
    entry = next(m for m in shipped_models() if m.name == name)
    model = load_shipped(entry)
    ctx = context_tables(model, 3)
    assert ctx is not None
    data = encode_latents("ans-ctx", shipped_latents(), model.tables[2], ctx)
    assert hashlib.sha256(data).hexdigest() == SHIPPED_GOLDEN_SHA256[name]
    assert np.array_equal(decode_latents(3, data, (320, 4, 5), model.tables[2], ctx), shipped_latents())


def _decode_symbols(dtype: torch.dtype, threads: int) -> bytes:
    before = (torch.get_default_dtype(), torch.get_num_threads())
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
    try:
        latents, ctx = golden_case()
        model = ModelStore().default()
        shipped = context_tables(model, 5)
        a = decode_ctx(bytes.fromhex(GOLDEN_HEX), latents.shape, ctx)
        data = encode_ctx(shipped_latents(), shipped)
        b = decode_ctx(data, (320, 4, 5), shipped)
        return a.tobytes() + b.tobytes() + data
    finally:
        torch.set_default_dtype(before[0])
        torch.set_num_threads(before[1])


def test_decode_is_identical_in_float32_float64_and_any_thread_count() -> None:
    results = {(d, t): _decode_symbols(d, t) for d in (torch.float32, torch.float64) for t in (1, 2)}
    assert len(set(results.values())) == 1


def test_decode_path_uses_no_floats() -> None:
    """The decoder's context and value arithmetic is integer: activity, thresholds, tables."""
    latents, ctx = golden_case()
    assert ctx.thresholds.dtype == np.int32 and ctx.tables.freq.dtype == np.int32
    out = decode_ctx(encode_ctx(latents, ctx), latents.shape, ctx)
    assert out.dtype == np.int32


def test_empty_latents() -> None:
    ctx = golden_case()[1]
    for shape in ((3, 0, 5), (3, 4, 0)):
        data = encode_ctx(np.zeros(shape, np.int32), ctx)
        assert data == ctx.ident + bytes(4)
        assert decode_ctx(data, shape, ctx).shape == shape


@st.composite
def context_and_latents(draw: st.DrawFn) -> tuple[ContextTables, np.ndarray]:
    channels = draw(st.integers(1, 4))
    contexts = draw(st.integers(1, 4))
    symbols = draw(st.integers(2, 16))
    precision = draw(st.integers(8, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ctx = random_context(rng, channels, contexts, symbols, precision)
    lo, hi = int(ctx.tables.low.min()) - 3, int(ctx.tables.low.max()) + symbols + 2
    elements = st.one_of(
        st.integers(lo, hi), st.sampled_from([INT32_MIN, INT32_MAX]), st.integers(INT32_MIN, INT32_MAX)
    )
    shape = (channels, draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    return ctx, draw(hnp.arrays(np.int32, shape, elements=elements))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(context_and_latents())
def test_round_trip(case: tuple[ContextTables, np.ndarray]) -> None:
    ctx, latents = case
    out = decode_ctx(encode_ctx(latents, ctx), latents.shape, ctx)
    assert out.dtype == np.int32
    assert np.array_equal(out, latents)


def test_size_close_to_ideal() -> None:
    latents = shipped_latents()
    ctx = context_tables(ModelStore().default(), 4)
    size = len(encode_ctx(latents, ctx))
    ideal = ctx.ideal_bits(latents) / 8
    assert ideal * 0.99 - 8 <= size <= 1.01 * ideal + 32


def valid_stream() -> tuple[bytes, tuple[int, int, int], ContextTables]:
    latents, ctx = golden_case()
    return encode_ctx(latents, ctx), latents.shape, ctx


def test_truncations_raise() -> None:
    data, shape, ctx = valid_stream()
    for n in range(len(data)):
        with pytest.raises(CorruptArchiveError):
            decode_ctx(data[:n], shape, ctx)


def test_trailing_bytes_raise() -> None:
    data, shape, ctx = valid_stream()
    for extra in (b"\x00", b"\x01\x00\x00\x00", b"\x00\x00\x00\x00", b"\xff" * 8):
        with pytest.raises(CorruptArchiveError):
            decode_ctx(data + extra, shape, ctx)


def test_bad_escape_count_and_tables_id_raise() -> None:
    data, shape, ctx = valid_stream()
    count = int.from_bytes(data[ID_BYTES : ID_BYTES + 4], "little")
    for bad in (count - 1, count + 1, 2**32 - 1):
        with pytest.raises(CorruptArchiveError):
            decode_ctx(data[:ID_BYTES] + bad.to_bytes(4, "little") + data[ID_BYTES + 4 :], shape, ctx)
    with pytest.raises(CorruptArchiveError, match="context tables"):
        decode_ctx(bytes(ID_BYTES) + data[ID_BYTES:], shape, ctx)


def test_bad_shape_raises() -> None:
    data, _, ctx = valid_stream()
    for shape in ((2, 4, 5), (3, -4, 5)):
        with pytest.raises(CorruptArchiveError):
            decode_ctx(data, shape, ctx)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64), st.integers(0, 5), st.integers(0, 5))
def test_random_bytes_raise_only_corrupt(data: bytes, height: int, width: int) -> None:
    ctx = golden_case()[1]
    try:
        out = decode_ctx(ctx.ident + data, (3, height, width), ctx)
    except CorruptArchiveError as exc:
        assert "\n" not in str(exc)
    else:
        assert out.shape == (3, height, width) and out.dtype == np.int32


def test_bit_flips_raise_only_corrupt() -> None:
    data, shape, ctx = valid_stream()
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            out = decode_ctx(bytes(flipped), shape, ctx)
        except CorruptArchiveError:
            continue
        assert out.shape == shape and out.dtype == np.int32


def test_encode_rejects_bad_latents() -> None:
    latents, ctx = golden_case()
    for bad in (latents[:2], latents.astype(np.float32), latents.astype(np.int64) + 2**31):
        with pytest.raises(ValueError):
            encode_ctx(bad, ctx)


def test_side_file_round_trip_and_checks() -> None:
    rng = np.random.default_rng(3)
    fitted = [random_context(rng, 4, 3, 9, 16) for _ in range(2)]
    data = context_to_bytes(fitted, "ab" * 32)
    loaded = context_from_bytes(data, "ab" * 32, 4, 2, "mem")
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    for a, b in zip(fitted, loaded.qualities, strict=True):
        assert np.array_equal(a.tables.freq, b.tables.freq) and np.array_equal(a.tables.low, b.tables.low)
        assert np.array_equal(a.order, b.order) and np.array_equal(a.thresholds, b.thresholds) and a.cap == b.cap
        assert b.ident == bytes.fromhex(loaded.sha256)[:ID_BYTES]
    with pytest.raises(ModelError, match="another model"):
        context_from_bytes(data, "cd" * 32, 4, 2, "mem")
    with pytest.raises(ModelError):
        context_from_bytes(data, "ab" * 32, 5, 2, "mem")
    with pytest.raises(ModelError):
        context_from_bytes(b"not safetensors", "ab" * 32, 4, 2, "mem")


def test_invalid_context_tables_are_rejected() -> None:
    _, ctx = golden_case()
    with pytest.raises(ModelError):
        ContextTables(np.array([0, 0, 2], np.int32), ctx.thresholds, ctx.tables, 2)
    with pytest.raises(ModelError):
        ContextTables(ctx.order, np.array([[2, 1], [1, 1], [3, 3]], np.int32), ctx.tables, 2)


def test_shipped_side_file_matches_the_catalog_and_loads_lazily() -> None:
    entry = default_model()
    catalog = json.loads((entry.path.parent / "catalog.json").read_text())
    side = next(m for m in catalog["models"] if m["name"] == entry.name)["context_tables"]
    path = entry.path.parent / side["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == side["sha256"]
    model = ModelStore().default()
    model.context = None
    codec = Codec(quality=2, entropy="ans", device="cpu")
    codec.model.context = None
    codec.encode(photo_like(32, 32))
    assert codec.model.context is None  # plain ANS never reads the side file
    assert load_context(codec.model) is not None
    assert [m.name for m in shipped_models()][0] == "v1-cpu-64x96"


def test_auto_picks_the_shortest_of_all_methods() -> None:
    img = photo_like(64, 48, seed=7)
    sizes = {m: len(Codec(quality=3, entropy=m, device="cpu").encode(img)) for m in ("ans", "zstd", "ans-ctx", "auto")}
    assert sizes["auto"] == min(sizes["ans"], sizes["zstd"], sizes["ans-ctx"])


def test_ans_ctx_stream_decodes_to_the_same_pixels_as_ans() -> None:
    img = photo_like(48, 80, seed=2)
    ctx, ans = Codec(quality=6, entropy="ans-ctx", device="cpu"), Codec(quality=6, entropy="ans", device="cpu")
    a, b = ctx.encode(img), ans.encode(img)
    assert parse_header(a)[0].entropy == METHODS["ans-ctx"]
    assert np.array_equal(np.asarray(ans.decode(a)), np.asarray(ctx.decode(b)))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model file and a folder of training images."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = Autoencoder(ModelConfig(levels=2, channels=8, bottleneck=6, lambdas=(0.01, 0.05)))
    with torch.no_grad():
        net.log_gain.add_(2.0)
        tables = [CdfTables.from_pmf(net.priors[q].pmf(-64, 64).numpy(), -64) for q in range(2)]
    path = root / "tiny.safetensors"
    path.write_bytes(model_to_bytes(net, tables))
    (root / "train").mkdir()
    for i in range(3):
        Image.fromarray(photo_like(32, 40, seed=i)).save(root / "train" / f"{i}.png")
    return path


def test_user_model_gets_tables_with_the_fit_step(tiny_model: Path) -> None:
    with pytest.raises(ModelError, match="no context tables"):
        Codec(model=tiny_model, entropy="ans-ctx", quality=1, device="cpu").encode(photo_like(24, 24))
    assert Codec(model=tiny_model, entropy="auto", quality=1, device="cpu").encode(photo_like(24, 24))  # auto skips it
    out = fit_main([str(tiny_model), str(tiny_model.parent / "train")])
    assert out == side_file_path(tiny_model) and out.name == "tiny.ctx.safetensors"
    img = photo_like(40, 24, seed=9)
    codec = Codec(model=tiny_model, entropy="ans-ctx", quality=2, device="cpu")
    data = codec.encode(img)
    assert parse_header(data)[0].entropy == METHODS["ans-ctx"]
    plain = Codec(model=tiny_model, entropy="ans", quality=2, device="cpu")
    assert np.array_equal(np.asarray(plain.decode(data)), np.asarray(plain.decode(plain.encode(img))))


def test_fit_command_line_runs(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "side.ctx.safetensors"
    args = [sys.executable, "-m", "aezip.train.fit_entropy", str(tiny_model), str(tiny_model.parent / "train")]
    subprocess.run([*args, "--out", str(out), "--limit", "2"], check=True, capture_output=True)
    assert out.stat().st_size > 0


def test_fit_quality_orders_channels_and_builds_valid_tables() -> None:
    rng = np.random.default_rng(0)
    scale = np.array([0.2, 3.0, 1.0]).reshape(-1, 1, 1)
    latents = [np.round(rng.laplace(size=(3, 8, 8)) * scale).astype(np.int32) for _ in range(4)]
    fitted = fit_quality(latents, contexts=4, cap=4)
    assert list(fitted.order) == [1, 2, 0] and fitted.contexts == 4
    for lat in latents:
        assert np.array_equal(decode_ctx(encode_ctx(lat, fitted), lat.shape, fitted), lat)


def test_format_doc_shows_the_golden_stream() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    block = doc.split("<!-- golden-ans-ctx -->", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    hexed = "".join(line.split("|")[1].replace(" ", "") for line in block.strip().splitlines())
    assert hexed == GOLDEN_HEX


def test_damaged_shipped_side_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aezip.model import side_files as context_module

    entry = default_model()
    damaged = tmp_path / "damaged.ctx.safetensors"
    data = bytearray((entry.path.parent / "v2-gpu-128x320.ctx.safetensors").read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    sha = hashlib.sha256((entry.path.parent / "v2-gpu-128x320.ctx.safetensors").read_bytes()).hexdigest()
    monkeypatch.setattr(context_module, "_shipped_side_files", lambda: {entry.sha256: (damaged, sha)})
    model = ModelStore().default()
    saved, model.context = model.context, None
    try:
        with pytest.raises(ModelError, match="damaged"):
            load_context(model)
    finally:
        model.context = saved
