"""Rate–distortion loss: ``λ·255²·D + bpp``.

``D`` is the mean squared error of pixels in [0, 1] (so ``255²·D`` is the MSE on the 8-bit
scale), or binary cross-entropy for binary images. ``bpp`` is the prior's estimate of the bits
per pixel of the noisy latents.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

LOSSES = ("mse", "bce")


def distortion(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean distortion between reconstruction and target, both nominally in [0, 1]."""
    return per_image_distortion(x_hat, x, kind).mean()


def per_image_distortion(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Distortion of each image of a batch, shape (B,)."""
    x_hat = x_hat.float()
    if kind == "mse":
        err = F.mse_loss(x_hat, x, reduction="none")
    elif kind == "bce":
        err = F.binary_cross_entropy(x_hat.clamp(1e-4, 1 - 1e-4), x, reduction="none")
    else:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    return err.flatten(1).mean(dim=1)


def rd_loss(
    x_hat: torch.Tensor, x: torch.Tensor, bpp: torch.Tensor, lam: float | torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """The training objective, averaged over the batch.

    ``bpp`` is per image (B,) or already summed; ``lam`` is one trade-off for the batch or one
    per image (B,), so a batch can mix qualities.
    """
    d = per_image_distortion(x_hat, x, kind)
    return (lam * 255.0**2 * d).mean() + bpp.mean()
