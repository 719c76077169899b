"""Learned per-channel (factorized) density of the latents, used for the rate term in training.

Each latent channel gets its own small monotonic network ``f`` (Ballé et al. 2018, appendix 6.1);
``sigmoid(f(x))`` is a cumulative distribution. The probability of an integer-quantized value
``k`` (or of ``k + u`` with uniform noise ``u`` in training) is ``c(k + 1/2) - c(k - 1/2)``.
At pack time this density is tabulated once into integer CDFs (``aezip.entropy.tables``), so
decoding never evaluates this network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

_LIKELIHOOD_FLOOR = 1e-9


class FactorizedPrior(nn.Module):
    """A monotonic density per channel over the real line.

    ``filters`` are the hidden widths of the per-channel network, e.g. ``(3, 3, 3)``.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        self.channels = channels
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for ``x`` of shape (channels, 1, n); monotonically increasing in ``x``."""
        return logits_cdf(x, list(self.matrices), list(self.biases), list(self.factors))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit bin around each value of ``y`` (shape B, C, H, W)."""
        with torch.autocast(device_type=y.device.type, enabled=False):
            b, c, h, w = y.shape
            v = y.float().permute(1, 0, 2, 3).reshape(c, 1, -1)
            lik = bin_likelihood(v, self.logits_cdf)
            return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def pmf(self, low: int, high: int) -> torch.Tensor:
        """Mass of each integer ``low..high`` per channel, shape (channels, high - low + 1), float64."""
        grid = torch.arange(low, high + 2, dtype=torch.float32) - 0.5
        device = self.matrices[0].device
        edges = grid.to(device).view(1, 1, -1).expand(self.channels, 1, -1)
        cdf = torch.sigmoid(self.logits_cdf(edges).double()).squeeze(1).cpu()
        return (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0.0)


def logits_cdf(
    x: torch.Tensor, matrices: list[torch.Tensor], biases: list[torch.Tensor], factors: list[torch.Tensor]
) -> torch.Tensor:
    """The per-channel monotonic network: ``x`` (channels, 1, n) → logits of the CDF, same shape.

    Parameters may be the concatenation of several priors' (channels stacked), which evaluates
    all of them in one batched pass.
    """
    for i, matrix in enumerate(matrices):
        x = torch.matmul(F.softplus(matrix), x) + biases[i]
        if i < len(factors):
            x = x + torch.tanh(factors[i]) * torch.tanh(x)
    return x


def bin_likelihood(v: torch.Tensor, logits: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mass of the unit bin around each value of ``v`` (channels, 1, n), floored for the log."""
    lower = logits(v - 0.5)
    upper = logits(v + 0.5)
    # Evaluate on the side of the distribution where the sigmoid is far from 1, so the
    # difference keeps its precision in the tails.
    sign = -torch.sign(lower + upper).detach()
    lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
    return lik.clamp_min(_LIKELIHOOD_FLOOR)


def stacked_likelihood(priors: Sequence[FactorizedPrior], y: torch.Tensor) -> torch.Tensor:
    """Likelihoods of ``y`` (Q·k, C, H, W) whose images ``j·k … j·k+k-1`` use ``priors[j]``.

    One batched evaluation for all priors instead of one per prior: what makes training with a
    mix of qualities in every batch cheap on a GPU.
    """
    q, (b, c, h, w) = len(priors), y.shape
    k = b // q
    with torch.autocast(device_type=y.device.type, enabled=False):
        v = y.float().reshape(q, k, c, h * w).permute(0, 2, 1, 3).reshape(q * c, 1, k * h * w)
        layers = range(len(priors[0].matrices))
        matrices = [torch.cat([p.matrices[i] for p in priors]) for i in layers]
        biases = [torch.cat([p.biases[i] for p in priors]) for i in layers]
        factors = [torch.cat([p.factors[i] for p in priors]) for i in range(len(priors[0].factors))]
        lik = bin_likelihood(v, lambda t: logits_cdf(t, matrices, biases, factors))
        return lik.reshape(q, c, k, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
