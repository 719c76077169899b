"""Rate–distortion loss: ``λ·255²·D + bpp``.

``D`` is the mean squared error of pixels in [0, 1] (so ``255²·D`` is the MSE on the 8-bit
scale), or binary cross-entropy for binary images. ``bpp`` is the prior's estimate of the bits
per pixel of the noisy latents.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

LOSSES = ("mse", "bce")


def distortion(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean distortion between reconstruction and target, both nominally in [0, 1]."""
    x_hat = x_hat.float()
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "bce":
        return F.binary_cross_entropy(x_hat.clamp(1e-4, 1 - 1e-4), x)
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def rd_loss(x_hat: torch.Tensor, x: torch.Tensor, bpp: torch.Tensor, lam: float, kind: str = "mse") -> torch.Tensor:
    """The training objective for one batch at rate–distortion trade-off ``lam``."""
    return lam * 255.0**2 * distortion(x_hat, x, kind) + bpp


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of pixels in [0, 1]."""
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))
