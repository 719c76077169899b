"""Distortion and rate metrics: PSNR, MS-SSIM and the Bjøntegaard delta rate.

PSNR is taken over all 8-bit RGB values of one image (peak 255); callers average it over
images. MS-SSIM is pytorch-msssim's 5-scale version on 0..255 data. BD-rate uses the
``bjontegaard`` package on log10(rate) against PSNR, integrated over the PSNR range both
curves cover.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from aezip.codec.metrics import psnr as psnr  # one PSNR definition for the package and the benchmarks

MSSSIM_WINDOW = 11
MSSSIM_SCALES = 5
BD_METHOD = "akima"


def msssim_window(height: int, width: int) -> int | None:
    """Gaussian window for MS-SSIM at this size: 11, or the largest odd size the 4 downsamplings allow.

    pytorch-msssim needs the smaller side to exceed ``(window - 1) * 16``; images under 161 px
    get a smaller window (their MS-SSIM is then not comparable with published numbers), and
    images of 32 px or less get none.
    """
    side = min(height, width)
    window = MSSSIM_WINDOW
    while window >= 3 and side <= (window - 1) * 2 ** (MSSSIM_SCALES - 1):
        window -= 2
    return window if window >= 3 else None


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float | None:
    """MS-SSIM (0..1) between two uint8 RGB images; None when the image is too small for it.

    Runs on one thread: these small convolutions gain nothing from more, and on a busy machine
    torch's thread pool can make them a hundred times slower.
    """
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    window = msssim_window(*reference.shape[:2])
    if window is None:
        return None
    x = torch.from_numpy(np.array(reference, dtype=np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.array(test, dtype=np.float32)).permute(2, 0, 1)[None]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return float(_ms_ssim(x, y, data_range=255, win_size=window))
    finally:
        torch.set_num_threads(threads)


def monotone_curve(rates: list[float], dists: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by rate, keeping only those whose distortion metric beats every cheaper point.

    BD interpolation needs the metric strictly increasing with rate; a point that costs more
    and is no better is dominated, so dropping it leaves the codec's usable curve.
    """
    order = np.argsort(np.asarray(rates, dtype=np.float64), kind="stable")
    keep_r: list[float] = []
    keep_d: list[float] = []
    for i in order:
        r, d = float(rates[i]), float(dists[i])
        if r > 0 and math.isfinite(d) and (not keep_d or d > keep_d[-1]):
            if keep_r and r == keep_r[-1]:
                keep_d[-1] = d
                continue
            keep_r.append(r)
            keep_d.append(d)
    return np.asarray(keep_r), np.asarray(keep_d)


@dataclass(frozen=True)
class BDRate:
    """BD-rate of a test curve against an anchor: negative percent = fewer bits for the same PSNR."""

    percent: float
    psnr_low: float
    psnr_high: float
    overlap: float
    anchor_points: int
    test_points: int


def bd_rate(
    anchor_rates: list[float],
    anchor_psnr: list[float],
    test_rates: list[float],
    test_psnr: list[float],
    method: str = BD_METHOD,
) -> BDRate | None:
    """Average rate difference (percent) at equal PSNR over the common PSNR range, or None.

    None when either curve has fewer than two usable points or the PSNR ranges do not meet.
    ``overlap`` is the common range as a fraction of the union of both ranges.
    """
    import bjontegaard

    ra, da = monotone_curve(anchor_rates, anchor_psnr)
    rt, dt = monotone_curve(test_rates, test_psnr)
    if len(ra) < 2 or len(rt) < 2:
        return None
    low, high = max(da[0], dt[0]), min(da[-1], dt[-1])
    if high <= low:
        return None
    overlap = (high - low) / (max(da[-1], dt[-1]) - min(da[0], dt[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(ra, da, rt, dt, method=method, require_matching_points=False, min_overlap=0)
    value = float(value)
    if not math.isfinite(value):
        return None
    return BDRate(value, float(low), float(high), float(overlap), len(ra), len(rt))
