"""Reference codecs through Pillow: JPEG, WebP, AVIF and JPEG XL (pillow-jxl-plugin).

Each codec turns an RGB uint8 array into the bytes of a complete file and back, at one point
of its quality sweep. Settings are each library's defaults apart from the quality (and JPEG's
optimised Huffman tables), so the curves are what a user of Pillow gets; they are recorded in
the results.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, features

FULL_SWEEP = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
QUICK_SWEEP = (20, 50, 80)


@dataclass(frozen=True)
class Baseline:
    """A Pillow codec: its file format, fixed save options and quality sweeps."""

    key: str
    label: str
    fmt: str
    options: dict = field(default_factory=dict)
    thread_option: str | None = None
    sweep: tuple[int, ...] = FULL_SWEEP
    quick_sweep: tuple[int, ...] = QUICK_SWEEP
    speed_quality: int = 75
    available: Callable[[], str | None] = lambda: None

    def qualities(self, quick: bool) -> tuple[int, ...]:
        """The quality settings to sweep."""
        return self.quick_sweep if quick else self.sweep

    def save_options(self, quality: int, threads: int) -> dict:
        """Keyword arguments for ``Image.save`` at one quality, with the thread count where the codec takes one."""
        opts = {**self.options, "quality": quality}
        if self.thread_option:
            opts[self.thread_option] = threads
        return opts

    def encode(self, rgb: np.ndarray, quality: int, threads: int = 1) -> bytes:
        """The complete file for an (H, W, 3) uint8 image."""
        out = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(out, format=self.fmt, **self.save_options(quality, threads))
        return out.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """Pixels (H, W, 3) uint8 of a file made by :meth:`encode`."""
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


def _avif_missing() -> str | None:
    return None if features.check("avif") else "Pillow was built without AVIF"


def _jxl_missing() -> str | None:
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        return "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)"
    return None


BASELINES: tuple[Baseline, ...] = (
    Baseline("jpeg", "JPEG", "JPEG", {"optimize": True}),
    Baseline("webp", "WebP", "WEBP"),
    Baseline(
        "avif",
        "AVIF",
        "AVIF",
        thread_option="max_threads",
        sweep=(10, 20, 30, 40, 50, 60, 70, 80, 90),
        quick_sweep=(30, 60, 85),
        speed_quality=60,
        available=_avif_missing,
    ),
    Baseline(
        "jxl",
        "JPEG XL",
        "JXL",
        thread_option="num_threads",
        sweep=(10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
        quick_sweep=(30, 60, 90),
        available=_jxl_missing,
    ),
)


def set_decode_threads(threads: int) -> None:
    """Give the AVIF and JPEG XL decoders ``threads`` threads (module globals in both plugins)."""
    if features.check("avif"):
        from PIL import AvifImagePlugin

        AvifImagePlugin.DEFAULT_MAX_THREADS = threads
    try:
        from pillow_jxl import JpegXLImagePlugin
    except ImportError:
        return
    JpegXLImagePlugin.DECODE_THREADS = threads


def selected(keys: list[str] | None = None) -> tuple[list[Baseline], dict[str, str]]:
    """Baselines to run (all by default) and, for those that cannot run here, why."""
    chosen, skipped = [], {}
    for b in BASELINES:
        if keys is not None and b.key not in keys:
            continue
        reason = b.available()
        if reason:
            skipped[b.key] = reason
        else:
            chosen.append(b)
    return chosen, skipped
