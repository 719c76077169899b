"""Inference forms of a trained autoencoder: the same model, laid out to run fast on a CPU.

Built from the stored weights at load time; the model file and the bitstream do not change.

* **Synthesis** (decoding): inverse GDN is computed in place, in ``channels_last``. On a CPU the
  transposed convolutions with 128-channel outputs run as Winograd F(6×6, 3×3)
  (:class:`aezip.model.winograd.WinogradUp`, 1.6–1.8× faster each) and the last, thin one
  (3 outputs) in the sub-pixel form (:func:`subpixel_conv`: an ordinary 3×3 convolution with 4×
  the channels, then ``pixel_shuffle``; 61 ms against 86 ms on a Kodak image), both built from the
  stored weights on first use; elsewhere (CUDA) the stored transposed convolutions run as they
  are. Pixels equal the training form's up to float rounding: on kodim01 at most 8e-4 of a level
  before rounding, so about 1 in 20,000 8-bit values ends one level apart.
* **Analysis** (encoding): the same operations as :meth:`Autoencoder.analyze`, in the same
  memory layout and order, only with GDN's temporaries reused in place. Every float it produces
  is bit-identical to the training form's, so latents (which are rounded from them) never change.
  One caveat comes from the convolution library, not from this module: results depend on the
  number of intra-op threads, so :func:`one_thread` pins encoding to one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from aezip.model.autoencoder import Autoencoder, Quality
from aezip.model.layers import GDN
from aezip.model.winograd import WinogradUp, merged_kernel

_thread_lock = threading.Lock()
_thread_users = 0
_saved_threads = 0


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed torch work with one intra-op thread (re-entrant and thread-safe).

    The convolution library splits work differently for different thread counts, which changes
    float rounding and so, rarely, a rounded latent. Encoding under this context makes encoded
    bytes independent of the machine's core count; parallelism belongs across images instead.
    """
    global _thread_users, _saved_threads
    with _thread_lock:
        if _thread_users == 0:
            _saved_threads = torch.get_num_threads()
            if _saved_threads != 1:
                torch.set_num_threads(1)
        _thread_users += 1
    try:
        yield
    finally:
        with _thread_lock:
            _thread_users -= 1
            if _thread_users == 0 and _saved_threads != 1:
                torch.set_num_threads(_saved_threads)


def subpixel_conv(up: nn.ConvTranspose2d) -> nn.Sequential:
    """The stride-2, 5×5, padding-2, output-padding-1 transposed convolution as conv 3×3 + pixel_shuffle.

    Output pixel ``o = 2m + r`` of the transposed convolution sums input ``i`` with kernel tap
    ``k = o + 2 - 2i``; with ``i = m + d`` (``d`` in -1, 0, 1) that is tap ``k = r + 2 - 2d``,
    present when ``0 <= k < 5``. So phase ``r`` of the output is an ordinary 3×3 convolution of the
    input (padding 1) whose tap ``d`` is the transposed kernel's tap ``r + 2 - 2d``. The four
    phases (ry, rx) become output channels ``c*4 + ry*2 + rx``, which ``pixel_shuffle(2)`` interleaves.
    """
    # merged_kernel checks the layer's shape and orders output channels phase-major (ry, rx, c);
    # pixel_shuffle wants (c, ry, rx).
    merged = merged_kernel(up)
    c_in, c_out = up.in_channels, up.out_channels
    sub = merged.view(2, 2, c_out, c_in, 3, 3).permute(2, 0, 1, 3, 4, 5)
    conv = nn.Conv2d(c_in, 4 * c_out, kernel_size=3, padding=1, bias=up.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(sub.reshape(4 * c_out, c_in, 3, 3).to(up.weight.dtype))
        if up.bias is not None:
            conv.bias.copy_(up.bias.detach().repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))


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
        self._cpu_synthesis: nn.Sequential | None = None
        self._build_lock = threading.Lock()

    def cpu_synthesis(self) -> nn.Sequential:
        """The synthesis with its transposed convolutions in their fastest CPU forms (built once)."""
        with self._build_lock:
            if self._cpu_synthesis is None:
                layers = list(self.synthesis)
                last = max(i for i, m in enumerate(layers) if isinstance(m, nn.ConvTranspose2d))
                self._cpu_synthesis = nn.Sequential(
                    *(
                        (subpixel_conv(m) if i == last else WinogradUp(m)) if isinstance(m, nn.ConvTranspose2d) else m
                        for i, m in enumerate(layers)
                    )
                ).eval()
            return self._cpu_synthesis

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
            synthesis = self.cpu_synthesis() if y.device.type == "cpu" else self.synthesis
            return synthesis(y).contiguous(memory_format=torch.channels_last)
