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
from aezip.model.prior import FactorizedPrior, stacked_likelihood

#: A quality index for the whole batch, or a (B,) long tensor of indices, one per image.
Quality = int | torch.Tensor


@dataclass
class ForwardResult:
    """What a training step needs: the reconstruction and the estimated bits per pixel per image."""

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
        self.log_gain = nn.Parameter(gain_ramp(config.lambdas).view(-1, 1).repeat(1, m))
        self.log_inv_gain = nn.Parameter(-gain_ramp(config.lambdas).view(-1, 1).repeat(1, m))
        self.priors = nn.ModuleList(FactorizedPrior(m, config.filters) for _ in range(config.qualities))

    def gain(self, quality: Quality) -> torch.Tensor:
        """Per-channel gain applied to ``y`` before rounding, shape (1 or B, M, 1, 1)."""
        return self.log_gain[_on(quality, self.log_gain)].exp().view(-1, self.config.bottleneck, 1, 1)

    def inv_gain(self, quality: Quality) -> torch.Tensor:
        """Per-channel gain applied to ``ŷ`` before synthesis, shape (1 or B, M, 1, 1)."""
        return self.log_inv_gain[_on(quality, self.log_gain)].exp().view(-1, self.config.bottleneck, 1, 1)

    def analyze(self, x: torch.Tensor, quality: Quality) -> torch.Tensor:
        """Image in [0, 1] → scaled, unquantized latents (float32).

        The last convolution runs in float32 even under autocast: bfloat16 keeps 8 bits of
        mantissa, so a latent near 100 would be off by up to 0.25 before rounding.
        """
        hidden = self.analysis[:-1](x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.analysis[-1](hidden.float()) * self.gain(quality)

    def synthesize(self, y_hat: torch.Tensor, quality: Quality) -> torch.Tensor:
        """Quantized latents → image (not clamped); the first convolution runs in float32."""
        with torch.autocast(device_type=y_hat.device.type, enabled=False):
            hidden = self.synthesis[0](y_hat.float() * self.inv_gain(quality))
        return self.synthesis[1:](hidden)

    def forward(self, x: torch.Tensor, quality: Quality, balanced: bool | None = None) -> ForwardResult:
        """Training pass: noisy latents for the rate, straight-through rounding for the decoder.

        ``quality`` is one quality index for the whole batch, or a (B,) tensor of indices so
        one step trains several qualities at once. ``bpp`` is per image, shape (B,).
        ``balanced=True`` promises the trainer's sorted batch (every quality equally often), so
        the rate needs no look at the indices on the host (no sync, nothing for a compiled
        graph to break on); ``None`` looks.
        """
        y = self.analyze(x, quality)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_round = y + (torch.round(y) - y).detach()
        bpp = self._bits(y_noisy, quality, balanced) / (x.shape[2] * x.shape[3])
        return ForwardResult(x_hat=self.synthesize(y_round, quality), bpp=bpp)

    def _bits(self, y: torch.Tensor, quality: Quality, balanced: bool | None = None) -> torch.Tensor:
        """Estimated bits of each image's latents under its quality's prior, shape (B,)."""
        if isinstance(quality, int):
            return -torch.log2(self.priors[quality].likelihood(y)).sum(dim=(1, 2, 3))
        if balanced:
            return -torch.log2(stacked_likelihood(self.priors, y)).sum(dim=(1, 2, 3))
        q_cpu = quality.cpu()
        qualities = self.config.qualities
        k = q_cpu.numel() // qualities
        if balanced is None and k > 0 and torch.equal(q_cpu, torch.arange(qualities).repeat_interleave(k)):
            # The trainer's balanced, sorted batches: every prior in one batched pass.
            return -torch.log2(stacked_likelihood(self.priors, y)).sum(dim=(1, 2, 3))
        bits = torch.zeros(y.shape[0], device=y.device, dtype=torch.float32)
        for q in torch.unique(q_cpu).tolist():
            rows = (q_cpu == q).nonzero().squeeze(1).to(y.device)
            lik = self.priors[q].likelihood(y.index_select(0, rows))
            bits = bits.index_add(0, rows, -torch.log2(lik).sum(dim=(1, 2, 3)))
        return bits


def _on(quality: Quality, like: torch.Tensor) -> Quality:
    """A quality index tensor moved to the device of ``like`` (ints pass through).

    The copy is asynchronous: a training step must not wait for the GPU to drain.
    """
    return quality.to(like.device, non_blocking=True) if isinstance(quality, torch.Tensor) else quality


def gain_ramp(lambdas: tuple[float, ...]) -> torch.Tensor:
    """Initial log-gain per quality: ``0.5·ln(λ_q / λ_max)``.

    At high rate the MSE-optimal quantization step scales as ``1/sqrt(λ)``, so a gain of
    ``sqrt(λ_q / λ_max)`` puts every quality near its operating point from the first step; the
    top quality starts at gain 1.
    """
    top = max(lambdas)
    return torch.tensor([0.5 * math.log(v / top) for v in lambdas], dtype=torch.float32)
