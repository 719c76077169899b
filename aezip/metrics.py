"""Quality metrics shared by training, validation, tests and benchmarks: one PSNR definition.

PSNR is taken over all 8-bit RGB values of one image (peak 255); callers average it over images.
"""

from __future__ import annotations

import math

import numpy as np


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error on a scale whose peak value is ``peak``; ``inf`` at 0."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of equal shape; ``inf`` when they are identical."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return psnr_from_mse(mse, 255.0)
