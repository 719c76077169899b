"""Quality metrics shared by training, validation, tests and benchmarks: one PSNR definition.

PSNR is taken over all 8-bit RGB values of one image (peak 255); callers average it over images.
"""

from __future__ import annotations

import math

import numpy as np

_SLICE = 1 << 20


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error on a scale whose peak value is ``peak``; ``inf`` at 0."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of equal shape; ``inf`` when they are identical."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    if not (np.issubdtype(reference.dtype, np.integer) and np.issubdtype(test.dtype, np.integer)):
        mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
        return psnr_from_mse(mse, 255.0)
    # Integers: the squared errors are summed exactly, a slice at a time (no float64 copies of the
    # image); float64 sums them exactly too, so the result is the same as np.mean's.
    a, b = reference.reshape(-1), test.reshape(-1)
    total = 0
    for start in range(0, a.size, _SLICE):
        d = a[start : start + _SLICE].astype(np.int64) - b[start : start + _SLICE]
        total += int(np.dot(d, d))
    return psnr_from_mse(total / a.size if a.size else math.nan, 255.0)
