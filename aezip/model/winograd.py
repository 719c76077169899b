"""Winograd form of the synthesis transform's stride-2 5×5 transposed convolutions (CPU decoding).

:class:`WinogradUp` computes exactly what ``F.conv_transpose2d`` computes for the model's
``ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)``, up to float rounding, with fewer
multiplications. Built from the stored weights at load time; nothing is retrained.

The math, in three steps:

1. **Sub-pixel form.** Output pixel ``(2y + ry, 2x + rx)`` depends only on the 3×3 input
   neighbourhood of ``(y, x)``: the layer is one 3×3 correlation with ``4·Cout`` output channels
   (phase ``(ry, rx)`` × channel) followed by a 2× pixel shuffle (:func:`merged_kernel`).
2. **Winograd F(m×m, 3×3)** on that correlation (Lavin & Gray 2016): the input is cut into
   overlapping ``(m+2)×(m+2)`` tiles at stride ``m``; each tile ``d`` gives ``m×m`` outputs
   ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``. The kernel transform ``U = G g Gᵀ`` is done once, in float64.
   Per tile the channel sums become ``(m+2)²`` independent matrix products
   ``M[p, q] = V[p, q] · U[p, q]`` (tiles × Cin by Cin × 4·Cout): one ``bmm``. With ``m = 6``
   (8×8 tiles, points 0, ±1, ±2, ±½, ∞) that is 64/36 ≈ 1.8 multiplications per output against
   9 for the 3×3 sub-pixel convolution and 6.25 for the transposed one (3.5× fewer); ``m = 4``
   (6×6 tiles) needs 36/16 = 2.25.
3. **Pixel shuffle folded into the last copy.** ``Bᵀ d B`` and ``Aᵀ M A`` run as two small
   matrix products each (separably); the bias is added once to ``M`` at the point (1, 1), whose
   column of ``Aᵀ ⊗ Aᵀ`` is all ones; the output transform runs one tile row at a time so its
   result is still in cache when one strided copy writes it, pixel-shuffled, into the
   channels_last output.

Why: on the project's CPU (one thread, torch 2.14, kodim01 at 768×512, latents 320×32×48, real
activations, best of 5), the three 128-channel-output layers took 39, 58 and 229 ms as
channels_last ``ConvTranspose2d`` and 24, 34 and 124 ms in this form (m = 6; m = 4: 22, 37,
145 ms); the whole synthesis went from 507 to 365 ms. Outputs differ by float rounding only
(max |Δ| ≈ 1e-5 on activations of order 1). The last layer (3 output channels) is too thin for
this form to pay (96 ms against 86). ``bmm`` is about 70 % of the time.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn


def _poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def winograd_matrices(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact ``(AT, G, BT)`` of Winograd F(m, 3) (Toom-Cook, float64), ``m`` in 2, 4 or 6.

    Points 0, ±1, ±2, ±1/2 (as many as needed) and infinity; ``y = AT[(G g) ⊙ (BT d)]`` is the
    correlation ``y_i = Σ_k g_k d_{i+k}`` of a length-3 filter ``g`` with a length-(m+2) input ``d``.
    """
    pts = [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2)]
    if m not in (2, 4, 6):
        raise ValueError("m must be 2, 4 or 6")
    alpha = m + 2
    pts = pts[: alpha - 1]
    at = [[Fraction(0)] * alpha for _ in range(m)]
    g = [[Fraction(0)] * 3 for _ in range(alpha)]
    bt = [[Fraction(0)] * alpha for _ in range(alpha)]
    for j, p in enumerate(pts):
        others = [q for q in pts if q != p]
        norm = Fraction(1)
        poly = [Fraction(1)]
        for q in others:
            norm *= p - q
            poly = _poly_mul(poly, [-q, Fraction(1)])
        for i in range(m):
            at[i][j] = p**i
        for k in range(3):
            g[j][k] = p**k / norm
        bt[j][: len(poly)] = poly
    full = [Fraction(1)]
    for q in pts:
        full = _poly_mul(full, [-q, Fraction(1)])
    at[m - 1][alpha - 1] = Fraction(1)
    g[alpha - 1][2] = Fraction(1)
    bt[alpha - 1] = full

    def t(rows: list[list[Fraction]]) -> torch.Tensor:
        return torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)

    return t(at), t(g), t(bt)


def merged_kernel(up: nn.ConvTranspose2d) -> torch.Tensor:
    """The transposed convolution as one 3×3 correlation kernel (float64), shape (4·Cout, Cin, 3, 3).

    Output channel ``(ry·2 + rx)·Cout + c`` is phase (ry, rx) of output channel ``c`` (see
    :func:`aezip.model.inference.subpixel_conv`; here the phase is the slow index, so a
    channels_last result keeps each pixel's channels contiguous). Any other layer shape (also
    dilated or grouped) raises ValueError: this is the one check both converted forms rely on.
    """
    if not isinstance(up, nn.ConvTranspose2d) or (
        up.stride != (2, 2)
        or up.kernel_size != (5, 5)
        or up.padding != (2, 2)
        or up.output_padding != (1, 1)
        or up.dilation != (1, 1)
        or up.groups != 1
    ):
        raise ValueError("expected a 5x5 stride-2 transposed convolution (padding 2, output padding 1)")
    w = up.weight.detach().double()  # (in, out, 5, 5)
    c_in, c_out = w.shape[:2]
    sub = torch.zeros(2, 2, c_out, c_in, 3, 3, dtype=torch.float64)
    for ry in range(2):
        for rx in range(2):
            for jy in range(3):
                ky = ry + 4 - 2 * jy
                for jx in range(3):
                    kx = rx + 4 - 2 * jx
                    if 0 <= ky < 5 and 0 <= kx < 5:
                        sub[ry, rx, :, :, jy, jx] = w[:, :, ky, kx].t()
    return sub.reshape(4 * c_out, c_in, 3, 3)


class WinogradUp(nn.Module):
    """``ConvTranspose2d(k=5, s=2, p=2, output_padding=1)`` as Winograd F(m×m, 3×3); see the module docstring.

    ``forward`` takes (N, Cin, H, W) float32 (channels_last is fastest, any layout works) and
    returns (N, Cout, 2H, 2W), channels_last contiguous. ``chunk_tiles`` bounds the tiles per
    ``bmm`` (whole tile rows) so the intermediates stay cache-sized.
    """

    def __init__(self, up: nn.ConvTranspose2d, m: int = 6, chunk_tiles: int = 512) -> None:
        super().__init__()
        if m not in (4, 6):
            raise ValueError("m must be 4 or 6")
        at, g, bt = winograd_matrices(m)
        self.m, self.alpha = m, m + 2
        self.c_in, self.c_out = up.in_channels, up.out_channels
        self.chunk_tiles = chunk_tiles
        u = torch.einsum("pi,kcij,qj->pqck", g, merged_kernel(up), g)
        self.register_buffer("u", u.reshape(self.alpha**2, self.c_in, 4 * self.c_out).float().contiguous())
        bias = up.bias.detach().float() if up.bias is not None else torch.zeros(self.c_out)
        self.register_buffer("bias4", bias.repeat(4).contiguous())  # output channel order (ry, rx, c)
        self.register_buffer("bt", bt.float())
        self.register_buffer("at", at.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Cin, H, W) → (N, Cout, 2H, 2W) channels_last: the transposed convolution's output."""
        n, c, h, w = x.shape
        if c != self.c_in:
            raise ValueError(f"expected {self.c_in} input channels, got {c}")
        m, a, cout = self.m, self.alpha, self.c_out
        a2, k = a * a, 4 * cout
        th, tw = -(-h // m), -(-w // m)
        opts = {"dtype": self.u.dtype, "device": x.device}
        # Zero-padded (N, Hp, Wp, C): one pixel of padding at the top/left, the rest of the last tile.
        xp = torch.empty(n, m * th + 2, m * tw + 2, c, **opts)
        xp[:, 0].zero_()
        xp[:, h + 1 :].zero_()
        xp[:, 1 : h + 1, 0].zero_()
        xp[:, 1 : h + 1, w + 1 :].zero_()
        xp[:, 1 : h + 1, 1 : w + 1].copy_(x.permute(0, 2, 3, 1))
        out = torch.empty(n, 2 * h, 2 * w, cout, **opts)
        rows = max(1, min(th, self.chunk_tiles // tw))
        tmax = rows * tw
        dbuf = torch.empty(a2 * tmax * c, **opts)
        vbuf = torch.empty(a2 * tmax * c, **opts)
        mbuf = torch.empty(a2 * tmax * max(c, k), **opts)  # also holds Bᵀ d
        zbuf = torch.empty(a * m * tw * k, **opts)
        ybuf = torch.empty(m * m * tw * k, **opts)
        one = a + 1  # index of the point (1, 1): its column of kron(Aᵀ, Aᵀ) is all ones
        twf, pc = w // m, w % m  # full tile columns; output columns of the partial last one
        cols = [(slice(0, twf), m, 0)] if twf else []
        if pc:
            cols.append((slice(twf, twf + 1), pc, 2 * m * twf))
        for b in range(n):
            for r0 in range(0, th, rows):
                r = min(rows, th - r0)
                t = r * tw
                # Gather the tiles as (p, q, tile, C), then V = Bᵀ d B, one direction at a time.
                tiles = xp[b, m * r0 : m * (r0 + r) + 2].unfold(0, a, m).unfold(1, a, m)  # (r, tw, C, a, a)
                d = dbuf[: a2 * t * c].view(a, a, r, tw, c)
                d.copy_(tiles.permute(3, 4, 0, 1, 2))
                z = torch.mm(self.bt, d.view(a, a * t * c), out=mbuf[: a2 * t * c].view(a, a * t * c))
                v = torch.matmul(self.bt, z.view(a, a, t * c), out=vbuf[: a2 * t * c].view(a, a, t * c))
                mm = torch.bmm(v.view(a2, t, c), self.u, out=mbuf[: a2 * t * k].view(a2, t, k))
                mm[one].add_(self.bias4)
                mm = mm.view(a, a, r, tw * k)
                for i in range(r):
                    # Y = Aᵀ M A for one tile row, then pixel-shuffle it into the output.
                    gi = r0 + i
                    z = torch.matmul(self.at, mm[:, :, i], out=zbuf.view(a, m, tw * k))
                    y = torch.mm(self.at, z.view(a, m * tw * k), out=ybuf.view(m, m * tw * k))
                    y = y.view(m, m, tw, 2, 2, cout)  # (a, b, tile, ry, rx, c)
                    arows = min(m, h - m * gi)
                    dst_rows = out[b, 2 * m * gi : 2 * m * gi + 2 * arows]
                    for jsl, bcols, x0 in cols:
                        rj = jsl.stop - jsl.start
                        dst = dst_rows[:, x0 : x0 + 2 * rj * bcols].view(arows, 2, rj, bcols, 2, cout)
                        dst.copy_(y[:arows, :bcols, jsl].permute(0, 3, 2, 1, 4, 5))
        return out.permute(0, 3, 1, 2)
