"""WinogradUp: the Winograd form of the synthesis transposed convolutions equals F.conv_transpose2d."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from aezip.model.layers import up
from aezip.model.winograd import WinogradUp, winograd_matrices


def _layer(c_in: int, c_out: int, seed: int, bias: bool = True) -> nn.ConvTranspose2d:
    torch.manual_seed(seed)
    layer = up(c_in, c_out)
    if not bias:
        layer.bias = None
    return layer.eval()


def _check(layer: nn.ConvTranspose2d, x: torch.Tensor, m: int, chunk_tiles: int = 512) -> None:
    with torch.inference_mode():
        ref = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=2, output_padding=1)
        got = WinogradUp(layer, m=m, chunk_tiles=chunk_tiles)(x)
    assert got.shape == ref.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    scale = ref.abs().max().item() + 1e-6
    assert (got - ref).abs().max().item() <= 2e-5 * scale


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 2),
    h=st.integers(1, 15),
    w=st.integers(1, 15),
    m=st.sampled_from([4, 6]),
    chunk_tiles=st.sampled_from([1, 3, 512]),
    seed=st.integers(0, 2**16),
)
def test_matches_conv_transpose(n: int, h: int, w: int, m: int, chunk_tiles: int, seed: int) -> None:
    layer = _layer(8, 5, seed)
    x = torch.randn(n, 8, h, w).contiguous(memory_format=torch.channels_last)
    _check(layer, x, m, chunk_tiles)


@pytest.mark.parametrize(("n", "h", "w"), [(1, 1, 1), (2, 1, 1), (2, 17, 23), (1, 12, 18), (1, 3, 40)])
@pytest.mark.parametrize("m", [4, 6])
def test_fixed_sizes(n: int, h: int, w: int, m: int) -> None:
    layer = _layer(16, 12, 1)
    _check(layer, torch.randn(n, 16, h, w).contiguous(memory_format=torch.channels_last), m)


def test_contiguous_input_and_no_bias() -> None:
    layer = _layer(6, 4, 2, bias=False)
    _check(layer, torch.randn(2, 6, 7, 9), 6)


def test_matrices_compute_correlation() -> None:
    for m in (2, 4, 6):
        at, g, bt = winograd_matrices(m)
        d, k = torch.randn(m + 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        expect = torch.stack([(d[i : i + 3] * k).sum() for i in range(m)])
        torch.testing.assert_close(at @ ((g @ k) * (bt @ d)), expect)


@pytest.mark.parametrize(
    "layer",
    [
        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose2d(4, 4, 5, stride=1, padding=2),
        nn.ConvTranspose2d(4, 4, 5, stride=2, padding=2),
        nn.ConvTranspose2d(4, 4, 5, stride=2, padding=2, output_padding=1, groups=2),
        nn.Conv2d(4, 4, 5, stride=2, padding=2),
    ],
)
def test_rejects_other_shapes(layer: nn.Module) -> None:
    with pytest.raises(ValueError):
        WinogradUp(layer)  # type: ignore[arg-type]
