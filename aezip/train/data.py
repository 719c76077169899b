"""Training images held in memory as one uint8 tensor, sampled as random flipped crops.

Decoding every image once up front removes per-step I/O and Python overhead: a step only
indexes and slices a tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from aezip.errors import AezipError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted so runs are reproducible."""
    if not folder.is_dir():
        raise AezipError(f"not a folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    """Read an image as 8-bit RGB (EXIF orientation applied), shape (H, W, 3)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


class CropSampler:
    """Random ``crop``×``crop`` patches with random flips from images decoded once into memory.

    Images smaller than the crop are skipped (they cannot give a full patch).
    """

    def __init__(self, folder: Path, crop: int, seed: int = 0, limit: int | None = None) -> None:
        self.crop = crop
        paths = list_images(folder)[:limit]
        arrays = [a for a in (load_rgb(p) for p in paths) if a.shape[0] >= crop and a.shape[1] >= crop]
        if not arrays:
            raise AezipError(f"no image of at least {crop}x{crop} pixels in {folder}")
        self.images = [torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous() for a in arrays]
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, size: int) -> torch.Tensor:
        """A (size, 3, crop, crop) float batch in [0, 1]."""
        g, c = self.generator, self.crop
        picks = torch.randint(len(self.images), (size,), generator=g).tolist()
        out = torch.empty(size, 3, c, c, dtype=torch.uint8)
        for i, k in enumerate(picks):
            img = self.images[k]
            top = int(torch.randint(img.shape[1] - c + 1, (1,), generator=g))
            left = int(torch.randint(img.shape[2] - c + 1, (1,), generator=g))
            patch = img[:, top : top + c, left : left + c]
            flips = torch.randint(2, (2,), generator=g).tolist()
            if flips[0]:
                patch = patch.flip(2)
            if flips[1]:
                patch = patch.flip(1)
            out[i] = patch
        return out.float().div_(255.0)
