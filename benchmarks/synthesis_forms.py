"""Does the CPU decoder give the training form's pixels? PSNR per form, per image.

Usage::

    python -m benchmarks.synthesis_forms ../shared/data/kodak [--quality 6] [--limit N]

Each image is encoded once with the default model (latents from the exact analysis), then its
latents are decoded by the training form (:meth:`Autoencoder.synthesize`, the reference) and by
the form ``aezip`` runs on a CPU (NumPy, Winograd, :mod:`aezip.model.cpu_synthesis`).
Pixels are rounded to 8 bits as ``aezip`` writes them. Reported: mean PSNR against the original
for both, the largest per-image PSNR difference, and how many 8-bit values differ (by how much).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aezip.codec.codec import Codec, prepare_any
from aezip.codec.metrics import psnr
from aezip.model.runtime import blas_one_thread


def _pixels(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float image → uint8 (H, W, 3), rounded as aezip writes it."""
    return x[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def compare(image_dir: Path, quality: int, limit: int | None) -> list[tuple[str, float, float, int, int, int]]:
    """(name, PSNR training form, PSNR inference form, values differing, largest difference, values)."""
    torch.set_num_threads(1)
    codec = Codec(quality=quality, device="cpu")
    net = codec.model.net.eval()
    fast = codec.model.cpu_synthesis()
    rows = []
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in {".png", ".ppm", ".webp"})[:limit]
    for path in paths:
        rgb = prepare_any(Image.open(path)).rgb
        h, w = rgb.shape[:2]
        y = torch.from_numpy(codec._analyze(rgb).astype(np.float32))[None]
        with torch.inference_mode(), blas_one_thread():
            ref = _pixels(net.synthesize(y, quality - 1))[:h, :w]  # the transforms count qualities from 0
            new = _pixels(torch.from_numpy(fast(y[0].numpy(), quality - 1)).permute(2, 0, 1)[None])[:h, :w]
        diff = np.abs(ref.astype(np.int16) - new.astype(np.int16))
        rows.append(
            (path.name, psnr(rgb, ref), psnr(rgb, new), int(np.count_nonzero(diff)), int(diff.max()), diff.size)
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image_dir", type=Path)
    parser.add_argument("--quality", type=int, default=6)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    rows = compare(args.image_dir, args.quality, args.limit)
    gaps = [new - ref for _, ref, new, *_ in rows]
    differing, values = sum(r[3] for r in rows), sum(r[5] for r in rows)
    print(f"{len(rows)} images of {args.image_dir}, quality {args.quality}:\n")
    print("| form | mean PSNR dB |")
    print("|---|---:|")
    print(f"| training form (reference) | {np.mean([r[1] for r in rows]):.4f} |")
    print(f"| CPU decoder (NumPy, Winograd) | {np.mean([r[2] for r in rows]):.4f} |")
    print(
        f"\nPer-image PSNR difference (CPU decoder − training): {min(gaps):+.5f} to {max(gaps):+.5f} dB; "
        f"8-bit values that differ: {differing} of {values} ({differing / values:.2e}), "
        f"largest difference {max(r[4] for r in rows)} level(s)."
    )


if __name__ == "__main__":
    main()
