"""Model diagnosis: what the transform can reconstruct at all, and whether the rate ladder learned.

* **Ceiling**: the analysis and synthesis with the latents *not rounded*, at the lowest and the
  highest quality's gains. No quality can beat it; if the top quality's real PSNR sits on it,
  the transform (its width, its training) limits quality, not the rate.
* **Gains**: per quality, the mean and the spread over channels of the log-gains, and how far
  they moved from their initial ramp (``aezip.model.autoencoder.gain_ramp``). Gains that never
  moved mean the ladder is the initial guess, not a learned one.
"""

from __future__ import annotations

import numpy as np
import torch

from aezip.codec.codec import pad_to_multiple
from aezip.codec.metrics import psnr
from aezip.model.autoencoder import Autoencoder, gain_ramp


@torch.no_grad()
def unquantized_psnr(net: Autoencoder, images: list[np.ndarray], quality_index: int) -> float:
    """Mean PSNR of uint8 (H, W, 3) images through the transforms with unrounded latents."""
    device = next(net.parameters()).device
    scores = []
    for rgb in images:
        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.array(rgb)).to(device).permute(2, 0, 1).unsqueeze(0).float().div(255.0)
        y = net.analyze(pad_to_multiple(x, net.config.stride), quality_index)
        x_hat = net.synthesize(y, quality_index)[0, :, :h, :w]
        out = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        scores.append(psnr(rgb, out))
    return float(np.mean(scores))


def gain_report(net: Autoencoder) -> list[dict]:
    """Per quality: mean and channel spread of the log-gains, and their largest move from the ramp."""
    ramp = gain_ramp(net.config.lambdas)
    rows = []
    for q in range(net.config.qualities):
        g = net.log_gain[q].detach().float().cpu()
        ig = net.log_inv_gain[q].detach().float().cpu()
        rows.append(
            {
                "quality": q + 1,
                "log_gain_mean": round(float(g.mean()), 4),
                "log_gain_spread": round(float(g.std()), 4),
                "log_gain_moved": round(float((g - ramp[q]).abs().max()), 4),
                "log_inv_gain_mean": round(float(ig.mean()), 4),
                "log_inv_gain_moved": round(float((ig + ramp[q]).abs().max()), 4),
            }
        )
    return rows


def diagnose(net: Autoencoder, images: list[np.ndarray]) -> dict:
    """The ceiling at the lowest and highest quality over ``images``, and the gain report."""
    top = net.config.qualities - 1
    return {
        "images": len(images),
        "ceiling_psnr": {
            "quality_1_gains": round(unquantized_psnr(net, images, 0), 3),
            f"quality_{top + 1}_gains": round(unquantized_psnr(net, images, top), 3),
        },
        "gains": gain_report(net),
    }
