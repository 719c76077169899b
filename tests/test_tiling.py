"""Inference form of the transforms, tiling, and --jobs: same latents, same pixels, same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import aezip
from aezip.cli.app import main
from aezip.codec.codec import HALO_LATENTS, TILE_LATENTS, Codec, tiles
from aezip.model.cpu_synthesis import CpuSynthesis
from aezip.model.inference import InferenceModel, one_thread
from aezip.model.registry import load_shipped, shipped_models
from tests.conftest import photo_like, psnr


@pytest.fixture(scope="module")
def small_model() -> aezip.Codec:
    """The 64/96-channel v1 model: the same code paths as the default, four times cheaper."""
    entry = next(m for m in shipped_models() if m.name == "v1-cpu-64x96")
    return Codec(quality=4, device="cpu", model=load_shipped(entry))


def test_inference_analysis_is_bit_identical(small_model: Codec) -> None:
    net = small_model.model.net
    x = torch.from_numpy(np.stack([photo_like(80, 112, 1)])).permute(0, 3, 1, 2).float().div_(255)
    with torch.inference_mode(), one_thread():
        assert torch.equal(InferenceModel(net).analyze(x, 3), net.analyze(x, 3))
        y = torch.round(net.analyze(x, 3))
        assert (InferenceModel(net).synthesize(y, 3) - net.synthesize(y, 3)).abs().max() < 1e-4


def test_tiles_cover_the_grid_once() -> None:
    for h, w, t in [(1, 1, 64), (48, 32, 64), (65, 200, 64), (30, 31, 7)]:
        grid = np.zeros((h, w), int)
        parts = tiles(h, w, t)
        for top, bottom, left, right in parts:
            assert 0 < bottom - top <= t and 0 < right - left <= t
            grid[top:bottom, left:right] += 1
        assert (grid == 1).all()
    assert tiles(32, 48) == [(0, 32, 0, 48)]  # a Kodak image is one tile
    assert tiles(64, 64) == [(0, 64, 0, 64)]  # so is 1024 × 1024 px
    assert len(tiles(65, 64)) == 4 and len(tiles(433, 578)) == 11 * 15  # larger: at most 40 a side


def test_tiled_latents_are_bit_identical_and_pixels_seam_free(small_model: Codec) -> None:
    """A 'large' image in many small tiles (5 latents, halo 2) gives exactly the untiled latents."""
    image = photo_like(300, 410, 5)  # not a multiple of 16: the edge tiles are padded
    codec = small_model
    codec.tile = 10**6
    whole = codec.encode(image)
    codec.tile = 5
    try:
        assert len(tiles(-(-300 // 16), -(-410 // 16), codec.tile)) > 20
        tiled = codec.encode(image)
        assert tiled == whole  # same latents, hence the same bytes
        pieces = np.asarray(codec.decode(whole))
    finally:
        codec.tile = 10**6
    full = np.asarray(codec.decode(whole))
    assert np.abs(pieces.astype(int) - full.astype(int)).max() <= 1  # float rounding only, no seams
    assert psnr(pieces, full) > 60


def test_default_tiles_are_seam_free(small_model: Codec) -> None:
    """An image larger than one tile, cut by the default rule: the latents of the untiled pass, and
    pixels that differ from it by float rounding only, at the tile borders as anywhere else."""
    image = photo_like(1100, 1300, 7)  # 69 × 82 latents: more than TILE_LATENTS, so 2 × 3 tiles
    codec = small_model
    lh, lw = -(-1100 // 16), -(-1300 // 16)
    assert len(tiles(lh, lw)) == 6
    codec.tile = 10**6
    whole = codec.encode(image)
    untiled = np.asarray(codec.decode(whole)).astype(int)
    codec.tile = TILE_LATENTS
    try:
        assert codec.encode(image) == whole
        tiled = np.asarray(codec.decode(whole)).astype(int)
    finally:
        codec.tile = 10**6
    assert np.abs(tiled - untiled).max() <= 1
    borders = sorted({16 * c for part in tiles(lh, lw) for c in part[:2]} - {0, 16 * lh})
    band = np.concatenate([np.arange(b - 8, b + 8) for b in borders])
    assert np.abs(tiled[band] - untiled[band]).max() <= 1
    assert psnr(tiled, untiled) > 60


def test_tile_passes_are_bounded(small_model: Codec, monkeypatch: pytest.MonkeyPatch) -> None:
    """No forward pass sees more than one tile plus its halo, whatever the image size."""
    sides: dict[str, int] = {"analyze": 0, "synthesize": 0}
    for cls, name, key in ((InferenceModel, "analyze", "analyze"), (CpuSynthesis, "__call__", "synthesize")):
        original = getattr(cls, name)

        def record(self: object, x: torch.Tensor | np.ndarray, q: int, _f=original, _n=key) -> object:  # noqa: ANN001
            sides[_n] = max(sides[_n], *x.shape[-2:])
            return _f(self, x, q)

        monkeypatch.setattr(cls, name, record)
    codec = small_model
    codec.tile = 6
    try:
        codec.decode(codec.encode(photo_like(200, 300, 2)))
    finally:
        codec.tile = 10**6
    side = 6 + 2 * HALO_LATENTS
    assert 0 < sides["analyze"] <= side * 16 and 0 < sides["synthesize"] <= side


def test_pack_bytes_do_not_depend_on_jobs(tmp_path: Path) -> None:
    src = Path(__file__).parent.parent / "examples" / "photos"
    runner = CliRunner()
    outs = []
    for jobs in (1, 3):
        out = tmp_path / f"j{jobs}.aez"
        result = runner.invoke(main, ["pack", str(src), str(out), "-q", "2", "--jobs", str(jobs)])
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    restored = []
    for jobs in (1, 2):
        dest = tmp_path / f"u{jobs}"
        assert runner.invoke(main, ["unpack", str(tmp_path / "j1.aez"), str(dest), "-j", str(jobs)]).exit_code == 0
        files = [p for p in sorted(dest.rglob("*")) if p.is_file()]
        restored.append({p.relative_to(dest).as_posix(): p.read_bytes() for p in files})
    assert restored[0] == restored[1]
    assert runner.invoke(main, ["verify", str(tmp_path / "j1.aez"), "--jobs", "2"]).exit_code == 0
