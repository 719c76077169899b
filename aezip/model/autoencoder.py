"""The variable-rate convolutional autoencoder.

Data flow (one quality ``q`` of ``Q``)::

    x (B,3,H,W) in [0,1], H and W multiples of 2**levels
      │ analysis: [conv5x5/2 → GDN] × (levels-1) → conv5x5/2
      ▼
    y (B,M,H/s,W/s)        × gain[q]         (per-channel gain: sets the rate)
      │ quantize: round  (training: uniform noise for the rate, straight-through round for the decoder)
      ▼
    ŷ integers ──────────────► entropy coding (aezip.entropy), prior[q] gives the rate in training
      │ × inv_gain[q]
      │ synthesis: [deconv5x5/2 → IGDN] × (levels-1) → deconv5x5/2
      ▼
    x̂ (B,3,H,W)

One set of weights serves every quality: only the gain vectors and the entropy models are
per quality (the "gained" variable-rate scheme of Cui et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aezip.model.config import ModelConfig
from aezip.model.layers import GDN, down, up
from aezip.model.prior import FactorizedPrior


@dataclass
class ForwardResult:
    """What a training step needs: the reconstruction and the estimated bits per pixel."""

    x_hat: torch.Tensor
    bpp: torch.Tensor


class Autoencoder(nn.Module):
    """Analysis transform, per-quality gains and priors, synthesis transform."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n, m, levels = config.channels, config.bottleneck, config.levels
        analysis: list[nn.Module] = []
        synthesis: list[nn.Module] = []
        for i in range(levels):
            last = i == levels - 1
            analysis.append(down(3 if i == 0 else n, m if last else n))
            if not last:
                analysis.append(GDN(n))
            synthesis.append(up(m if i == 0 else n, 3 if last else n))
            if not last:
                synthesis.append(GDN(n, inverse=True))
        self.analysis = nn.Sequential(*analysis)
        self.synthesis = nn.Sequential(*synthesis)
        q = config.qualities
        # Higher quality → larger gain → finer effective quantization step. Start from a
        # geometric ramp so the qualities are ordered from the first step.
        ramp = torch.tensor([math.log(2.0) * (i - (q - 1)) * 0.5 for i in range(q)])
        self.log_gain = nn.Parameter(ramp.view(q, 1).repeat(1, m).clone())
        self.log_inv_gain = nn.Parameter(-ramp.view(q, 1).repeat(1, m).clone())
        self.priors = nn.ModuleList(FactorizedPrior(m, config.filters) for _ in range(q))

    def gain(self, quality_index: int) -> torch.Tensor:
        """Per-channel gain applied to ``y`` before rounding, shape (1, M, 1, 1)."""
        return self.log_gain[quality_index].exp().view(1, -1, 1, 1)

    def inv_gain(self, quality_index: int) -> torch.Tensor:
        """Per-channel gain applied to ``ŷ`` before synthesis, shape (1, M, 1, 1)."""
        return self.log_inv_gain[quality_index].exp().view(1, -1, 1, 1)

    def analyze(self, x: torch.Tensor, quality_index: int) -> torch.Tensor:
        """Image in [0, 1] → scaled, unquantized latents."""
        return self.analysis(x) * self.gain(quality_index)

    def synthesize(self, y_hat: torch.Tensor, quality_index: int) -> torch.Tensor:
        """Quantized latents → image (not clamped)."""
        return self.synthesis(y_hat * self.inv_gain(quality_index))

    def forward(self, x: torch.Tensor, quality_index: int) -> ForwardResult:
        """Training pass: noisy latents for the rate, straight-through rounding for the decoder."""
        y = self.analyze(x, quality_index)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_round = y + (torch.round(y) - y).detach()
        likelihood = self.priors[quality_index].likelihood(y_noisy)
        pixels = x.shape[0] * x.shape[2] * x.shape[3]
        bpp = -torch.log2(likelihood).sum() / pixels
        return ForwardResult(x_hat=self.synthesize(y_round, quality_index), bpp=bpp)
