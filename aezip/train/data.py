"""Training images held in memory, sampled as random augmented crops.

Decoding every image once up front removes per-step I/O: a step only indexes tensors. The
images can live on the training device (``to``), so on a GPU the crops, flips and rescaling of a
batch are a handful of kernels rather than a Python loop over images.

Augmentation, per crop: a random position, a random element of the dihedral group (horizontal
and vertical flips, transposition: the 8 flips and 90° rotations), and, for a random share of
batches, a mild antialiased downscale of the source images before cropping (more scales of the
same textures from the same photos).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.nn import functional as F

from aezip.codec.imagefile import IMAGE_SUFFIXES
from aezip.errors import AezipError


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
    """Random augmented ``crop``×``crop`` patches from images decoded once into memory.

    Images smaller than the crop are skipped (they cannot give a full patch). ``rescale`` is the
    share of batches whose sources are first downscaled by a random factor in
    ``[min_scale, 1)``, as long as the result still holds a crop.
    """

    def __init__(
        self,
        folder: Path,
        crop: int,
        seed: int = 0,
        limit: int | None = None,
        rescale: float = 0.0,
        min_scale: float = 0.75,
    ) -> None:
        self.crop = crop
        self.rescale = rescale
        self.min_scale = min_scale
        paths = list_images(folder)[:limit]
        arrays = [a for a in (load_rgb(p) for p in paths) if a.shape[0] >= crop and a.shape[1] >= crop]
        if not arrays:
            raise AezipError(f"no image of at least {crop}x{crop} pixels in {folder}")
        self.images = [torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous() for a in arrays]
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # per-batch choices, on the CPU
        self.tensor_generator = self.generator  # per-crop draws, on the device of the images
        self.device = torch.device("cpu")
        self._stack: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device) -> CropSampler:
        """Keep the source images on ``device`` (one stacked tensor when they share a size).

        With a stack, per-crop random draws happen on the device too, so a step never waits
        for a host-to-device copy.
        """
        self.device = device
        shapes = {tuple(img.shape) for img in self.images}
        if len(shapes) == 1:
            self._stack = torch.stack(self.images).to(device)
            if device.type != "cpu":
                self.tensor_generator = torch.Generator(device).manual_seed(self.seed)
        else:
            self.images = [img.to(device) for img in self.images]
        return self

    def _rand(self, high: int, size: int) -> torch.Tensor:
        """Uniform integers in ``[0, high)``, on the CPU."""
        return torch.randint(high, (size,), generator=self.generator)

    def _rand_device(self, high: int, size: int) -> torch.Tensor:
        """Uniform integers in ``[0, high)``, on the device of the tensor generator."""
        gen = self.tensor_generator
        return torch.randint(high, (size,), generator=gen, device=gen.device)

    def batch(self, size: int) -> torch.Tensor:
        """A (size, 3, crop, crop) float batch in [0, 1] on the sampler's device."""
        scale = 1.0
        if self.rescale > 0 and float(torch.rand((), generator=self.generator)) < self.rescale:
            scale = self.min_scale + (1 - self.min_scale) * float(torch.rand((), generator=self.generator))
        if self._stack is not None:
            src = self._stack[self._rand_device(len(self.images), size).to(self.device)]
            out = self._crop_stack(src.float(), scale)
        else:
            picks = self._rand(len(self.images), size).tolist()
            out = torch.stack([self._crop_one(self.images[k].float(), scale) for k in picks])
        out = self._dihedral(out)
        return out.clamp_(0, 255).div_(255.0)

    def _resized(self, img: torch.Tensor, scale: float) -> torch.Tensor:
        h, w = img.shape[-2:]
        nh, nw = math.floor(h * scale), math.floor(w * scale)
        if scale >= 1.0 or min(nh, nw) < self.crop:
            return img
        batched = img if img.ndim == 4 else img.unsqueeze(0)
        out = F.interpolate(batched, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        return out if img.ndim == 4 else out[0]

    def _crop_one(self, img: torch.Tensor, scale: float) -> torch.Tensor:
        img = self._resized(img, scale)
        c = self.crop
        top = int(self._rand(img.shape[1] - c + 1, 1))
        left = int(self._rand(img.shape[2] - c + 1, 1))
        return img[:, top : top + c, left : left + c]

    def _crop_stack(self, src: torch.Tensor, scale: float) -> torch.Tensor:
        src = self._resized(src, scale)
        b, c = src.shape[0], self.crop
        top = self._rand_device(src.shape[2] - c + 1, b).to(self.device)
        left = self._rand_device(src.shape[3] - c + 1, b).to(self.device)
        span = torch.arange(c, device=self.device)
        rows = (top[:, None] + span)[:, None, :, None]
        cols = (left[:, None] + span)[:, None, None, :]
        batch = torch.arange(b, device=self.device)[:, None, None, None]
        channel = torch.arange(src.shape[1], device=self.device)[None, :, None, None]
        return src[batch, channel, rows, cols]

    def _dihedral(self, x: torch.Tensor) -> torch.Tensor:
        """Each crop flipped and/or transposed at random (all 8 symmetries of the square)."""
        gen = self.tensor_generator
        flags = torch.randint(2, (3, x.shape[0]), generator=gen, device=gen.device).bool().to(x.device)
        pick = [f.view(-1, 1, 1, 1) for f in flags]
        x = torch.where(pick[0], x.flip(3), x)
        x = torch.where(pick[1], x.flip(2), x)
        return torch.where(pick[2], x.transpose(2, 3), x)
