"""Per-image quality floors and caps, recorded stats, and the reconstruction report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

import aezip
from aezip.archive.pack import pack
from aezip.archive.report import summarize, to_text
from aezip.cli.app import main
from aezip.codec.codec import Codec
from aezip.codec.imagefile import prepare
from aezip.codec.quality import QualityTarget, encode_to_target
from aezip.errors import AezipError

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


def _crop(path: Path, size: int = 96) -> Image.Image:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    return im.crop((w // 2 - size // 2, h // 2 - size // 2, w // 2 + size // 2, h // 2 + size // 2))


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(quality=6, device="cpu")


@pytest.fixture(scope="module")
def monarch() -> Image.Image:
    return _crop(PHOTOS / "monarch.png")


def _psnr_at(codec: Codec, image: Image.Image, quality: int) -> tuple[float, float]:
    stats = encode_to_target(Codec(quality=quality, device="cpu"), prepare(image), QualityTarget())[1]
    return stats.psnr, stats.bpp


def test_floor_picks_the_lowest_quality_that_reaches_it(codec: Codec, monarch: Image.Image) -> None:
    _, stats = encode_to_target(codec, prepare(monarch), QualityTarget(min_psnr=32))
    assert stats.psnr >= 32 and not stats.below_floor and stats.trials <= 4
    if stats.quality > 1:
        assert _psnr_at(codec, monarch, stats.quality - 1)[0] < 32


def test_cap_picks_the_highest_quality_under_it(codec: Codec, monarch: Image.Image) -> None:
    _, stats = encode_to_target(codec, prepare(monarch), QualityTarget(max_bpp=1.0))
    assert stats.bpp <= 1.0 and not stats.over_cap
    if stats.quality < 8:
        assert _psnr_at(codec, monarch, stats.quality + 1)[1] > 1.0


def test_codec_encode_accepts_a_floor(codec: Codec, monarch: Image.Image) -> None:
    data = codec.encode(monarch, min_psnr=30)
    restored = np.asarray(codec.decode(data), dtype=float)
    mse = np.mean((restored - np.asarray(monarch, dtype=float)) ** 2)
    assert 10 * np.log10(255**2 / mse) >= 30


def test_unreachable_floor_follows_the_policy(codec: Codec, monarch: Image.Image, tmp_path: Path) -> None:
    _, stats = encode_to_target(codec, prepare(monarch), QualityTarget(min_psnr=80))
    assert stats.below_floor and stats.quality == 8
    src = tmp_path / "src"
    src.mkdir()
    monarch.save(src / "m.png")
    lossless = pack(src, tmp_path / "l.aez", codec, target=QualityTarget(min_psnr=80, below_floor="lossless"))
    assert lossless.below_floor == [("m.png", "stored losslessly")]
    with aezip.open(tmp_path / "l.aez") as archive:
        assert not archive.is_image("m.png")
        assert archive.read_bytes("m.png") == (src / "m.png").read_bytes()
    with pytest.raises(AezipError, match="floor"):
        pack(src, tmp_path / "f.aez", codec, target=QualityTarget(min_psnr=80, below_floor="fail"))
    assert not (tmp_path / "f.aez").exists()


@pytest.mark.parametrize("bad", [{"min_psnr": -1.0}, {"max_bpp": 0.0}, {"below_floor": "maybe"}])
def test_bad_targets_are_refused(bad: dict) -> None:
    with pytest.raises(AezipError):
        QualityTarget(**bad)


def _outliers(folder: Path) -> None:
    """Natural photo crops plus planted outliers: noise, flat colour with text, a screenshot-like image."""
    for path in (PHOTOS / "monarch.png", PHOTOS / "peppers.jpg", PHOTOS / "boats" / "sail.webp"):
        _crop(path, 128).save(folder / f"photo-{path.stem}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(folder / "noise.png")
    flat = Image.new("RGB", (128, 128), (200, 120, 40))
    draw = ImageDraw.Draw(flat)
    for y in range(10, 120, 14):
        draw.text((6, y), "Lorem ipsum 0123", fill=(20, 20, 20))
    flat.save(folder / "flat-text.png")
    shot = Image.new("RGB", (128, 128), (240, 240, 240))
    draw = ImageDraw.Draw(shot)
    draw.rectangle((0, 0, 127, 14), fill=(40, 90, 200))
    draw.text((4, 3), "File Edit View", fill=(255, 255, 255))
    for i in range(6):
        draw.rectangle((8, 22 + 16 * i, 119, 34 + 16 * i), outline=(120, 120, 120))
        draw.text((12, 24 + 16 * i), f"item {i}: value", fill=(0, 0, 0))
    shot.save(folder / "screenshot.png")


def test_report_lists_planted_outliers_first(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _outliers(src)
    out = tmp_path / "set.aez"
    runner = CliRunner()
    result = runner.invoke(main, ["pack", str(src), str(out), "--measure", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    with aezip.open(out) as archive:
        report = summarize(archive, worst=3)
        assert archive.stats("noise.png").psnr < 20
    assert {w["name"] for w in report["worst"]} == {"noise.png", "flat-text.png", "screenshot.png"}
    assert report["images"] == 6 and report["unmeasured"] == 0
    assert "worst reconstructed" in to_text(report)
    as_json = runner.invoke(main, ["report", str(out), "--json", "--worst", "3"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["worst"][0]["name"] == "noise.png"
    listing = json.loads(runner.invoke(main, ["list", str(out), "--json"]).output)
    assert all("psnr" in row and "bpp" in row for row in listing)
    plot = runner.invoke(main, ["report", str(out), "--plot", str(tmp_path / "h.png")])
    assert plot.exit_code == 0 and (tmp_path / "h.png").stat().st_size > 1000


def test_report_without_stats_says_how_to_get_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _crop(PHOTOS / "monarch.png", 64).save(src / "m.png")
    out = tmp_path / "plain.aez"
    assert CliRunner().invoke(main, ["pack", str(src), str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 1 and "--measure" in result.output
