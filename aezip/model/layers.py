"""Building blocks of the transforms: GDN / inverse GDN and the strided (de)convolutions."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_EPS = 1e-6


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016).

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j**2)``; with ``inverse=True`` it multiplies
    instead (IGDN), used in the synthesis transform. ``beta`` and ``gamma`` are stored as square
    roots and squared on use, which keeps them non-negative without a projection step.
    The normalisation is computed in float32 even under autocast: the squares overflow bf16.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_root = nn.Parameter(torch.ones(channels))
        self.gamma_root = nn.Parameter(torch.eye(channels) * 0.1**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        beta = self.beta_root.float().square() + _EPS
        gamma = self.gamma_root.float().square().view(channels, channels, 1, 1)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.float()
            norm = torch.sqrt(F.conv2d(xf * xf, gamma, beta))
            out = xf * norm if self.inverse else xf / norm
        return out.to(x.dtype)


def down(in_ch: int, out_ch: int) -> nn.Conv2d:
    """5×5 convolution with stride 2: halves height and width."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=5, stride=2, padding=2)


def up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """5×5 transposed convolution with stride 2: doubles height and width exactly."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=5, stride=2, padding=2, output_padding=1)
