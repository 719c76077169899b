"""Rate–distortion sweeps: every codec at every setting over every image, then BD-rates.

aezip's rate is the size of a real one-image ``.aez`` archive written by ``aezip.archive.pack.pack``
(container header, index entry with the member name and metadata, footer: all included), and
its pixels come from reading that archive back (``Archive.payload`` + ``Codec.decode_many``).
Baselines' rate is the size of the complete file Pillow writes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aezip.archive.pack import pack
from aezip.archive.reader import Archive
from aezip.codec.codec import Codec
from benchmarks.baselines import Baseline
from benchmarks.images import BenchImage
from benchmarks.metrics import bd_rate, ms_ssim, psnr

# One image through one codec setting: (stored bytes, decoded RGB, encode s, decode s, extra fields).
Coder = Callable[[BenchImage], tuple[int, np.ndarray, float, float, dict]]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_point(images: list[BenchImage], coder: Coder, setting: dict) -> dict:
    """Run one codec setting over all images: per-image rate and distortion, and their summary."""
    rows = []
    for img in images:
        stored, decoded, enc_s, dec_s, extra = coder(img)
        if decoded.shape != img.rgb.shape:
            raise RuntimeError(f"{img.name}: decoded shape {decoded.shape} != {img.rgb.shape}")
        rows.append(
            {
                "name": img.name,
                "bytes": stored,
                "bpp": 8.0 * stored / img.pixels,
                "psnr": psnr(img.rgb, decoded),
                "ms_ssim": ms_ssim(img.rgb, decoded),
                "encode_s": enc_s,
                "decode_s": dec_s,
                **extra,
            }
        )
    return {**setting, **summarize(images, rows), "per_image": rows}


def summarize(images: list[BenchImage], rows: list[dict]) -> dict:
    """Averages over images (bpp, PSNR, MS-SSIM) and dataset-level ratios and speeds."""
    stored = sum(r["bytes"] for r in rows)
    pixels = sum(i.pixels for i in images)
    finite = [r["psnr"] for r in rows if np.isfinite(r["psnr"])]
    ssims = [r["ms_ssim"] for r in rows if r["ms_ssim"] is not None]
    enc = sum(r["encode_s"] for r in rows)
    dec = sum(r["decode_s"] for r in rows)
    out = {
        "bpp": float(np.mean([r["bpp"] for r in rows])),
        "psnr": float(np.mean(finite)) if finite else float("inf"),
        "psnr_lossless_images": len(rows) - len(finite),
        "ms_ssim": float(np.mean(ssims)) if ssims else None,
        "bytes": stored,
        "ratio_raw": sum(i.raw_bytes for i in images) / stored,
        "ratio_files": sum(i.file_bytes for i in images) / stored,
        "encode_mp_s": pixels / enc / 1e6 if enc else None,
        "decode_mp_s": pixels / dec / 1e6 if dec else None,
    }
    if all("stream_bytes" in r for r in rows):
        out["stream_bytes"] = sum(r["stream_bytes"] for r in rows)
        out["container_bytes"] = stored - out["stream_bytes"]
    return out


def aezip_coder(codec: Codec, workdir: Path) -> Coder:
    """Pack each image alone into ``workdir/one.aez`` with ``codec``, then decode it from that archive."""
    archive = workdir / "one.aez"

    def run(img: BenchImage) -> tuple[int, np.ndarray, float, float, dict]:
        start = time.perf_counter()
        summary = pack(img.aezip_path, archive, codec)
        enc_s = time.perf_counter() - start
        start = time.perf_counter()
        with Archive(archive) as arc:
            (name,) = arc.names
            decoded = codec.decode_many([arc.payload(name)])[0].rgb
        dec_s = time.perf_counter() - start
        size = archive.stat().st_size
        archive.unlink()
        return size, decoded, enc_s, dec_s, {"stream_bytes": summary.members[0].stored_size}

    return run


def baseline_coder(baseline: Baseline, quality: int, threads: int) -> Coder:
    """Encode to a file in memory with Pillow and decode it back."""

    def run(img: BenchImage) -> tuple[int, np.ndarray, float, float, dict]:
        start = time.perf_counter()
        data = baseline.encode(img.rgb, quality, threads)
        enc_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = baseline.decode(data)
        dec_s = time.perf_counter() - start
        return len(data), decoded, enc_s, dec_s, {}

    return run


def aezip_curves(
    images: list[BenchImage], qualities: list[int], entropies: list[str], device: str, workdir: Path
) -> dict[str, dict]:
    """One curve per entropy method, one point per quality."""
    curves = {}
    for entropy in entropies:
        points = []
        for q in qualities:
            codec = Codec(quality=q, device=device, entropy=entropy)
            point = measure_point(images, aezip_coder(codec, workdir), {"quality": q})
            _log(f"aezip {entropy} q{q}: {point['bpp']:.3f} bpp, {point['psnr']:.2f} dB")
            points.append(point)
        curves[f"aezip-{entropy}"] = {
            "codec": "aezip",
            "label": f"aezip ({entropy})",
            "settings": {"entropy": entropy, "device": str(codec.device)},
            "setting_name": "quality",
            "points": points,
        }
    return curves


def baseline_curves(images: list[BenchImage], baselines: list[Baseline], quick: bool, threads: int) -> dict[str, dict]:
    """One curve per baseline codec over its quality sweep."""
    curves = {}
    for b in baselines:
        points = []
        for q in b.qualities(quick):
            point = measure_point(images, baseline_coder(b, q, threads), {"quality": q})
            _log(f"{b.key} q{q}: {point['bpp']:.3f} bpp, {point['psnr']:.2f} dB")
            points.append(point)
        curves[b.key] = {
            "codec": b.key,
            "label": b.label,
            "settings": {"format": b.fmt, **b.save_options(0, threads), "quality": "swept"},
            "setting_name": "quality",
            "points": points,
        }
    return curves


def bd_rates(curves: dict[str, dict], anchor: str = "jpeg") -> dict[str, dict | None]:
    """BD-rate (PSNR, mean bpp) of every curve against ``anchor``; None where it cannot be computed."""
    if anchor not in curves:
        return {}
    base = curves[anchor]["points"]
    out: dict[str, dict | None] = {}
    for key, curve in curves.items():
        if key == anchor:
            continue
        pts = curve["points"]
        result = bd_rate(
            [p["bpp"] for p in base], [p["psnr"] for p in base], [p["bpp"] for p in pts], [p["psnr"] for p in pts]
        )
        out[key] = (
            None
            if result is None
            else {
                "bd_rate_percent": result.percent,
                "psnr_range_db": [result.psnr_low, result.psnr_high],
                "overlap": result.overlap,
                "anchor_points": result.anchor_points,
                "test_points": result.test_points,
            }
        )
    return out
