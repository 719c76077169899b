"""Shared fixtures: synthetic images, hypothesis profiles, a CLI runner."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured RGB image (uint8) standing in for a natural photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for c in range(3):
        fx, fy, phase = rng.uniform(0.02, 0.12, 2).tolist() + [rng.uniform(0, 6.28)]
        base = 128 + 60 * np.sin(fx * xx + phase) * np.cos(fy * yy) + 30 * (xx / max(width, 1) - 0.5) * (c - 1)
        channels.append(base)
    img = np.stack(channels, axis=-1) + rng.normal(0, 2, (height, width, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
