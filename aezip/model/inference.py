"""Inference forms of a trained autoencoder in PyTorch: the encoder, and the GPU decoder.

Built from the stored weights at load time; the model file and the bitstream do not change.

* **Synthesis** (decoding on a GPU): inverse GDN computed in place, in ``channels_last``.
  A CPU decodes with :mod:`aezip.model.cpu_synthesis` instead (NumPy, Winograd), without torch.
* **Analysis** (encoding): the same operations as :meth:`Autoencoder.analyze`, in the same
  memory layout and order, only with GDN's temporaries reused in place. Every float it produces
  is bit-identical to the training form's, so latents (which are rounded from them) never change.
  One caveat comes from the convolution library, not from this module: results depend on the
  number of intra-op threads, so :func:`one_thread` pins encoding to one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aezip.model.autoencoder import Autoencoder, Quality
from aezip.model.layers import GDN
from aezip.model.runtime import SharedSetting


def _one_torch_thread() -> Callable[[], None]:
    saved = torch.get_num_threads()
    if saved == 1:
        return lambda: None
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(saved)


_one_thread = SharedSetting(_one_torch_thread)


def one_thread() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed torch work with one intra-op thread (process-wide, re-entrant and thread-safe).

    The convolution library splits work differently for different thread counts, which changes
    float rounding and so, rarely, a rounded latent. Encoding under this context makes encoded
    bytes independent of the machine's core count; parallelism belongs across images instead.
    """
    return _one_thread.held()


class InferenceGDN(nn.Module):
    """GDN / inverse GDN with the training form's arithmetic, reusing its temporaries in place.

    ``y = x / sqrt(beta + gamma * x²)`` (or ``x * sqrt(…)`` for the inverse): the same float
    operations in the same order as :class:`aezip.model.layers.GDN`, so the result is bit-identical;
    only two full-size buffers are allocated instead of four (large buffers cost page faults).
    """

    def __init__(self, gdn: GDN) -> None:
        super().__init__()
        channels = gdn.beta_root.shape[0]
        self.inverse = gdn.inverse
        self.register_buffer("beta", gdn.beta_root.detach().float().square() + 1e-6)
        self.register_buffer("gamma", gdn.gamma_root.detach().float().square().view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x * x, self.gamma, self.beta)
        norm.sqrt_()
        return norm.mul_(x) if self.inverse else torch.div(x, norm, out=norm)


class InferenceModel:
    """Fast encode and decode transforms of one :class:`Autoencoder` (weights shared, nothing trained).

    ``analyze`` gives bit-identical floats to ``Autoencoder.analyze`` (see the module docstring);
    ``synthesize`` gives the same pixels up to float rounding.
    """

    def __init__(self, net: Autoencoder) -> None:
        self.net = net
        self.config = net.config
        self.analysis = nn.Sequential(*(InferenceGDN(m) if isinstance(m, GDN) else m for m in net.analysis)).eval()
        self.synthesis = nn.Sequential(*(InferenceGDN(m) if isinstance(m, GDN) else m for m in net.synthesis)).eval()
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> InferenceModel:
        """Move the transforms to ``device`` (returns self)."""
        self.analysis.to(device)
        self.synthesis.to(device)
        self.device = device
        return self

    def analyze(self, x: torch.Tensor, quality: Quality) -> torch.Tensor:
        """Image in [0, 1] (B, 3, H, W) → scaled, unquantized latents: bit-identical to the training form."""
        with torch.inference_mode():
            return self.analysis(x) * self.net.gain(quality)

    def synthesize(self, y_hat: torch.Tensor, quality: Quality) -> torch.Tensor:
        """Quantized latents → image (not clamped), in channels_last form."""
        with torch.inference_mode():
            y = (y_hat.float() * self.net.inv_gain(quality)).contiguous(memory_format=torch.channels_last)
            return self.synthesis(y).contiguous(memory_format=torch.channels_last)
