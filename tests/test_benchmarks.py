"""Tests of benchmarks/: the metrics against hand computations, and a quick run on tiny images."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")
pytest.importorskip("bjontegaard")
pytest.importorskip("pytorch_msssim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
metrics = importlib.import_module("benchmarks.metrics")
suite = importlib.import_module("benchmarks.suite")
baselines = importlib.import_module("benchmarks.baselines")

BASELINE_KEYS = {"jpeg", "webp", "avif", "jxl"}


def test_psnr_matches_hand_computation() -> None:
    ref = np.zeros((4, 4, 3), np.uint8)
    test = ref.copy()
    test[0, 0, 0] = 10
    # one error of 10 among 48 values: MSE = 100 / 48
    assert metrics.psnr(ref, test) == pytest.approx(10 * math.log10(255**2 * 48 / 100))
    assert metrics.psnr(ref, ref) == math.inf
    with pytest.raises(ValueError):
        metrics.psnr(ref, ref[:2])


def test_bd_rate_of_jpeg_with_rates_scaled() -> None:
    rates = [0.25, 0.5, 1.0, 2.0, 3.0]
    psnrs = [26.0, 29.5, 33.0, 36.0, 38.0]
    down = metrics.bd_rate(rates, psnrs, [r * 0.8 for r in rates], psnrs)
    assert down is not None
    assert down.percent == pytest.approx(-20.0, abs=1e-9)
    assert (down.psnr_low, down.psnr_high, down.overlap) == (26.0, 38.0, 1.0)
    up = metrics.bd_rate(rates, psnrs, [r * 1.25 for r in rates], psnrs)
    assert up is not None and up.percent == pytest.approx(25.0, abs=1e-9)


def test_bd_rate_uses_common_range_and_refuses_disjoint_curves() -> None:
    # rate doubles every 3 dB; the test curve is the same line shifted by ×0.8 but starts 3 dB higher
    rates, psnrs = [0.5, 1.0, 2.0, 4.0], [30.0, 33.0, 36.0, 39.0]
    partial = metrics.bd_rate(rates, psnrs, [0.8, 1.6, 3.2, 6.4], [33.0, 36.0, 39.0, 42.0])
    assert partial is not None
    assert partial.percent == pytest.approx(-20.0, abs=1e-9)
    assert (partial.psnr_low, partial.psnr_high, partial.overlap) == (33.0, 39.0, 0.5)
    assert metrics.bd_rate(rates, psnrs, [0.1, 0.2], [10.0, 12.0]) is None
    assert metrics.bd_rate(rates, psnrs, [0.1], [31.0]) is None


def test_monotone_curve_drops_dominated_points() -> None:
    r, d = metrics.monotone_curve([2.0, 0.5, 1.0, 1.5], [30.0, 25.0, 28.0, 27.0])
    assert r.tolist() == [0.5, 1.0, 2.0]
    assert d.tolist() == [25.0, 28.0, 30.0]


def test_ms_ssim_window_and_values() -> None:
    assert metrics.msssim_window(512, 768) == 11
    assert metrics.msssim_window(161, 400) == 11
    assert metrics.msssim_window(160, 400) == 9
    assert metrics.msssim_window(48, 64) == 3
    assert metrics.msssim_window(32, 64) is None
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert metrics.ms_ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img.astype(int) + 40, 0, 255).astype(np.uint8)
    assert 0 < metrics.ms_ssim(img, noisy) < 1
    assert metrics.ms_ssim(img[:32], img[:32]) is None


def test_parse_qualities() -> None:
    assert suite.parse_qualities("1-8") == list(range(1, 9))
    assert suite.parse_qualities("8,1,4") == [1, 4, 8]
    assert suite.parse_qualities("2-3,7") == [2, 3, 7]
    for bad in ("", "0", "5-3", "x"):
        with pytest.raises(Exception, match="qualit"):
            suite.parse_qualities(bad)


def _tiny_images(folder: Path) -> None:
    """Three 64×48 images: two RGB PNGs and a grayscale one (packed through the RGB-PNG path)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float64)
    for k in range(3):
        planes = [128 + 70 * np.sin((0.08 + 0.03 * c + 0.02 * k) * xx) * np.cos(0.06 * (c + 1) * yy) for c in range(3)]
        rgb = np.clip(np.stack(planes, -1) + rng.normal(0, 4, (48, 64, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(rgb, "RGB")
        (im.convert("L") if k == 2 else im).save(folder / f"img{k}.png")
    (folder / "notes.txt").write_text("not an image\n")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("bench")
    _tiny_images(base / "images")
    out = base / "out"
    assert suite.main([str(base / "images"), "--out", str(out), "--quick", "--threads", "1", "--device", "cpu"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_every_file(quick_run: tuple[Path, dict]) -> None:
    out, _ = quick_run
    for name in ("results.json", "results.md", "rd_psnr_bpp.png", "rd_psnr_ratio.png", "rd_msssim_bpp.png"):
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    for heading in ("## Rate–distortion", "## BD-rate against JPEG", "## Speed", "## Whole folder"):
        assert heading in md


def test_quick_run_json_structure(quick_run: tuple[Path, dict]) -> None:
    _, res = quick_run
    assert res["schema"] == "aezip-bench/1"
    assert res["settings"]["n_images"] == 3
    assert res["settings"]["qualities"] == [1, 4, 8]
    env = res["environment"]
    assert len(env["model"]["sha256"]) == 64
    assert env["machine"]["torch_threads"] == 1
    assert env["versions"]["aezip"] and env["versions"]["torch"] and env["versions"]["pillow"]
    assert [i["aezip_input"] for i in res["images"]] == ["original", "original", "rgb_png"]
    assert {"ans", "zstd"} <= set(res["settings"]["entropies"])
    aezip_keys = {f"aezip-{e}" for e in res["settings"]["entropies"]}
    expected = (aezip_keys | BASELINE_KEYS) - set(res["settings"]["skipped_codecs"])
    assert set(res["rd"]) == expected
    assert set(res["bd_rate_vs_jpeg"]) == expected - {"jpeg"}
    for bd in res["bd_rate_vs_jpeg"].values():
        assert bd is None or math.isfinite(bd["bd_rate_percent"])


def test_quick_run_numbers_are_sane(quick_run: tuple[Path, dict]) -> None:
    _, res = quick_run
    raw_bytes = 3 * 64 * 48 * 3
    for key, curve in res["rd"].items():
        assert len(curve["points"]) == 3
        for p in curve["points"]:
            assert 0 < p["bpp"] < 24, (key, p["bpp"])
            assert 5 < p["psnr"] < 80, (key, p["psnr"])
            assert p["ratio_raw"] == pytest.approx(raw_bytes / p["bytes"])
            assert p["ms_ssim"] is None or 0 <= p["ms_ssim"] <= 1
            assert len(p["per_image"]) == 3
            assert p["bpp"] == pytest.approx(np.mean([r["bpp"] for r in p["per_image"]]))
            if key.startswith("aezip"):
                assert p["container_bytes"] > 0
                assert p["bytes"] == p["stream_bytes"] + p["container_bytes"]
    jpeg = res["rd"]["jpeg"]["points"]
    assert [p["quality"] for p in jpeg] == list(baselines.QUICK_SWEEP)
    assert jpeg[0]["bpp"] < jpeg[-1]["bpp"] and jpeg[0]["psnr"] < jpeg[-1]["psnr"]
    assert jpeg[-1]["psnr"] > 25


def test_quick_run_speed_and_folder_figures(quick_run: tuple[Path, dict]) -> None:
    _, res = quick_run
    speed = res["speed"]
    assert speed["images"] == 2
    assert {"aezip-cpu", "jpeg"} <= set(speed["entries"])
    for e in speed["entries"].values():
        assert e["decode_mp_s"] > 0
    assert speed["ratios"]["aezip-cpu/jpeg"]["decode"] > 0
    ds = res["dataset"]
    for tool in ("aezip", "tar_zstd"):
        row = ds[tool]
        assert (row["files"], row["images"]) == (4, 3)
        assert row["bytes_in"] == sum(p.stat().st_size for p in Path(ds["folder"]).iterdir())
        assert row["bytes_stored"] > 0 and row["bytes_restored"] > 0
        assert row["pack_s"] > 0 and row["unpack_s"] > 0
    assert ds["tar_zstd"]["bytes_restored"] == ds["tar_zstd"]["bytes_in"]


def test_script_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"], capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout
