"""Bounded memory: a 64 MP image packs and unpacks in at most 1.5 GB, and the coders hold no big copies."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from aezip.codec.codec import Codec, compact_latents, latent_dtype
from aezip.entropy import METHODS, decode_latents, encode_latents
from aezip.model.side_files import context_tables

#: The README's bound for one 64 MP image at the default settings (bytes).
BOUND = 1.5e9
#: Resident bytes of Python, torch and the default model before any image (measured 0.61 GB with
#: the CUDA build of torch 2.14; CPU builds are smaller): the image may use the rest of the bound.
BASELINE = 0.65e9
ROOT = Path(__file__).parent.parent


def _probe(step: str, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "tests.memory_probe", step, str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]) if step != "image" else {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_64_mp_image_packs_and_unpacks_within_the_bound(tmp_path: Path) -> None:
    """Whole-process peak of ``aezip pack`` and ``aezip unpack`` of a 64 MP image (see tests/memory_probe.py:
    one tile runs the real transforms, the others cheap stand-ins, so every image-sized array is made)."""
    _probe("image", tmp_path)
    for step in ("pack", "unpack"):
        got = _probe(step, tmp_path)
        assert got["real_tile"], f"{step}: the real transform did not run"
        growth = got["peak"] - got["baseline"]
        assert growth <= BOUND - BASELINE, (
            f"{step} of 64 MP: peak {got['peak'] / 1e9:.2f} GB, {growth / 1e9:.2f} GB above the "
            f"{got['baseline'] / 1e9:.2f} GB baseline (allowed: {(BOUND - BASELINE) / 1e9:.2f} GB)"
        )
    assert (tmp_path / "out" / "big.jpg").is_file()


def test_latents_are_held_in_the_narrowest_type() -> None:
    assert latent_dtype(-128, 127) == np.int8
    assert latent_dtype(-129, 0) == np.int16
    assert latent_dtype(0, 40_000) == np.int32
    wide = np.array([[[-3, 100]], [[7, 0]]], dtype=np.int32)
    assert compact_latents(wide).dtype == np.int8
    assert np.array_equal(compact_latents(wide), wide)
    assert compact_latents(np.array([[[300]]], dtype=np.int64)).dtype == np.int16


def test_analysis_widens_the_latents_when_a_tile_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tile whose latents do not fit int8 widens the array; the values are those of an untiled pass."""
    import torch

    from aezip.model.inference import InferenceModel

    def analyze(self: InferenceModel, x: torch.Tensor, quality: int) -> torch.Tensor:
        cells = torch.nn.functional.avg_pool2d(x, 16) * 2000 - 500  # -500 .. 1500 where the image is bright
        return cells[:, :1].repeat(1, self.config.bottleneck, 1, 1)

    monkeypatch.setattr(InferenceModel, "analyze", analyze)
    image = np.zeros((160, 200, 3), dtype=np.uint8)
    image[:, 150:] = 255  # only the last tile column holds values outside int8
    codec = Codec(device="cpu")
    codec.tile = 10**6
    whole = codec._analyze(image)
    codec.tile = 3
    tiled = codec._analyze(image)
    assert tiled.dtype == np.int16 and whole.dtype == np.int16
    assert np.array_equal(tiled, whole) and tiled.max() == 1500 and tiled.min() == -500


@pytest.mark.parametrize("method", ["ans", "ans-ctx"])
def test_ans_coders_work_one_channel_at_a_time(method: str) -> None:
    """No whole-tensor int64 (or int32) copy while coding: the memory Python sees stays far below one."""
    codec = Codec(device="cpu")
    tables, context = codec.model.tables[5], context_tables(codec.model, 6)
    context.models  # noqa: B018 - built once per process, not part of a call's working memory
    latents = np.round(np.random.default_rng(0).laplace(0, 1.5, (320, 64, 64))).astype(np.int8)
    latents[3, 5, 7], latents[9, 1, 2] = 120, -100  # escapes
    tracemalloc.start()
    try:
        data = encode_latents(method, latents, tables, context)
        encode_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        back = decode_latents(METHODS[method], data, latents.shape, tables, context)
        decode_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert np.array_equal(back, latents) and back.dtype == np.int32
    # Besides the stream (a few copies while it is assembled), under half a byte per latent (an int64
    # copy is 8); decoding holds the int32 result and a channel's worth besides.
    assert encode_peak < 3 * len(data) + latents.size // 2
    assert decode_peak < 3 * len(data) + 4 * latents.size + latents.size // 2


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64])
def test_every_coder_gives_the_same_bytes_for_any_integer_type(dtype: type) -> None:
    codec = Codec(device="cpu")
    tables, context = codec.model.tables[5], context_tables(codec.model, 6)
    latents = np.random.default_rng(1).integers(-100, 101, (320, 5, 7)).astype(np.int32)
    for method in METHODS:
        assert encode_latents(method, latents.astype(dtype), tables, context) == encode_latents(
            method, latents, tables, context
        )
