"""The synthesis transform in NumPy, for decoding on a CPU without loading PyTorch.

Data flow (one image, channels last, float32)::

    ŷ (C, h, w) int ──► × inv_gain[q] ──► (h, w, C)
      │ [WinogradUp → inverse GDN] × (levels − 1)      (the 128-channel stages)
      │ WinogradUp                                     (the thin last stage, 3 outputs)
      ▼
    x̂ (16h, 16w, 3), not clamped

Why NumPy: ``import torch`` costs 2.5–4 s on the project's 2-core machine, more than decoding
a Kodak image; a decoder that needs only NumPy (already required by the entropy coders) starts
in a fraction of a second, and NumPy's OpenBLAS ``sgemm`` runs the Winograd products at least as
fast as ``torch.bmm`` (61–68 against 56–61 GFLOP/s on one core). The model file, the bitstream and
the entropy-decoded latents are unchanged; pixels equal the training form's up to float rounding.

Each stride-2 5×5 transposed convolution runs as Winograd F(6×6, 3×3) on its 3×3 sub-pixel
kernel (Lavin & Gray 2016):

1. **Sub-pixel form.** Output pixel ``(2y + ry, 2x + rx)`` depends only on the 3×3 input
   neighbourhood of ``(y, x)``: the layer is one 3×3 correlation with ``4·Cout`` output channels
   (phase ``(ry, rx)`` × channel) followed by a 2× pixel shuffle (:func:`merged_kernel`).
2. **Winograd.** The input is cut into overlapping 8×8 tiles at stride 6; each tile ``d`` gives
   6×6 outputs ``Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A``. The kernel transform ``U = G g Gᵀ`` is done once,
   in float64, when the model is loaded. Per tile the channel sums become 64 independent matrix
   products (tiles × Cin by Cin × 4·Cout): one stacked ``matmul``, 64/36 ≈ 1.8 multiplications
   per output against 6.25 for the transposed convolution.
3. **Pixel shuffle in the last copy.** ``Bᵀ d B`` and ``Aᵀ M A`` run as two small matrix products
   each; the bias is added once to ``M`` at the point (1, 1), whose column of ``Aᵀ ⊗ Aᵀ`` is all
   ones; the output transform runs one tile row at a time, and the inverse GDN that follows runs
   on those rows while they are still in cache, before the next tile row.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import numpy as np

from aezip.errors import ModelError

#: Output tile side of Winograd F(m×m, 3×3): 6 (8×8 input tiles) measured fastest; 4 is more exact.
TILE = 6
#: Tiles per stacked matrix product (whole tile rows): keeps the intermediates cache-sized.
CHUNK_TILES = 512
_EPS = 1e-6  # added to beta, as in aezip.model.layers.GDN


def _poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ``(AT, G, BT)`` of Winograd F(m, 3) (Toom-Cook, float64), ``m`` in 2, 4 or 6.

    Points 0, ±1, ±2, ±1/2 (as many as needed) and infinity; ``y = AT[(G g) ⊙ (BT d)]`` is the
    correlation ``y_i = Σ_k g_k d_{i+k}`` of a length-3 filter ``g`` with a length-(m+2) input ``d``.
    """
    if m not in (2, 4, 6):
        raise ValueError("m must be 2, 4 or 6")
    pts = [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2), Fraction(-1, 2)]
    alpha = m + 2
    pts = pts[: alpha - 1]
    at = [[Fraction(0)] * alpha for _ in range(m)]
    g = [[Fraction(0)] * 3 for _ in range(alpha)]
    bt = [[Fraction(0)] * alpha for _ in range(alpha)]
    for j, p in enumerate(pts):
        norm = Fraction(1)
        poly = [Fraction(1)]
        for q in pts:
            if q != p:
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
    at_, g_, bt_ = (np.array([[float(v) for v in r] for r in rows], dtype=np.float64) for rows in (at, g, bt))
    return at_, g_, bt_


def merged_kernel(weight: np.ndarray) -> np.ndarray:
    """A 5×5 stride-2 transposed convolution's weight (Cin, Cout, 5, 5) as one 3×3 correlation
    kernel (float64) of shape (4·Cout, Cin, 3, 3).

    Output pixel ``o = 2i + r`` of the transposed convolution (padding 2, output padding 1) sums
    input ``i + d`` (``d`` in −1, 0, 1) with kernel tap ``k = r + 2 − 2d``, present when
    ``0 <= k < 5``. Output channel ``(ry·2 + rx)·Cout + c`` is phase (ry, rx) of channel ``c``:
    the phase is the slow index, so a channels-last result keeps each pixel's channels together.
    """
    if weight.ndim != 4 or weight.shape[2:] != (5, 5):
        raise ModelError(f"expected a 5x5 transposed convolution weight, got shape {weight.shape}")
    w = weight.astype(np.float64)
    c_in, c_out = w.shape[:2]
    sub = np.zeros((2, 2, c_out, c_in, 3, 3), dtype=np.float64)
    for ry in range(2):
        for rx in range(2):
            for jy in range(3):
                ky = ry + 4 - 2 * jy
                for jx in range(3):
                    kx = rx + 4 - 2 * jx
                    if 0 <= ky < 5 and 0 <= kx < 5:
                        sub[ry, rx, :, :, jy, jx] = w[:, :, ky, kx].T
    return sub.reshape(4 * c_out, c_in, 3, 3)


class InverseGDN:
    """Inverse GDN on channels-last rows: ``x · sqrt(beta + x² · gammaᵀ)``, in place, :data:`BLOCK`
    pixels at a time so the temporaries stay in a core's cache (54 against 96 ms for a whole
    384×256×128 activation at once)."""

    #: Pixels per step.
    BLOCK = 2048

    def __init__(self, beta_root: np.ndarray, gamma_root: np.ndarray) -> None:
        c = beta_root.shape[0]
        if beta_root.shape != (c,) or gamma_root.shape != (c, c):
            raise ModelError(f"inverse GDN parameters of shapes {beta_root.shape}, {gamma_root.shape}")
        self.beta = (np.square(beta_root.astype(np.float32)) + np.float32(_EPS)).astype(np.float32)
        self.gamma_t = np.ascontiguousarray(np.square(gamma_root.astype(np.float32)).T)

    def apply_(self, x: np.ndarray, scratch: np.ndarray) -> None:
        """``x`` (P, C) float32, overwritten with the result; ``scratch``: ≥ 2·min(P, BLOCK)·C float32."""
        for start in range(0, x.shape[0], self.BLOCK):
            block = x[start : start + self.BLOCK]
            n = block.size
            sq = np.multiply(block, block, out=scratch[:n].reshape(block.shape))
            norm = np.matmul(sq, self.gamma_t, out=scratch[n : 2 * n].reshape(block.shape))
            norm += self.beta
            np.sqrt(norm, out=norm)
            block *= norm


class _Up:
    """What both forms of a stride-2 5×5 transposed convolution share: the shape checks, the bias
    in phase-major channel order (ry, rx, c) and the zero-padded input."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.c_in, self.c_out = weight.shape[:2]
        if bias.shape != (self.c_out,):
            raise ModelError(f"transposed convolution bias of shape {bias.shape}, expected ({self.c_out},)")
        self.bias4 = np.tile(bias.astype(np.float32), 4)

    def _padded(self, x: np.ndarray, height: int, width: int) -> np.ndarray:
        """``x`` (H, W, Cin) in a zero (height, width, Cin) array, one row and column in from the top left."""
        h, w, c = x.shape
        if c != self.c_in:
            raise ValueError(f"expected {self.c_in} input channels, got {c}")
        xp = np.zeros((height, width, c), dtype=np.float32)
        xp[1 : h + 1, 1 : w + 1] = x
        return xp


class WinogradUp(_Up):
    """One stride-2 5×5 transposed convolution as Winograd F(6×6, 3×3) (see the module docstring),
    optionally followed by an inverse GDN applied tile row by tile row."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, igdn: InverseGDN | None = None) -> None:
        super().__init__(weight, bias)
        at, g, bt = winograd_matrices(TILE)
        self.m, self.alpha = TILE, TILE + 2
        k = 4 * self.c_out
        taps = np.ascontiguousarray(merged_kernel(weight).transpose(2, 3, 1, 0)).reshape(3, 3 * self.c_in * k)
        u = np.matmul(g, (g @ taps).reshape(self.alpha, 3, self.c_in * k))  # (p, q, Cin·4·Cout), contiguous
        self.u = u.reshape(self.alpha**2, self.c_in, k).astype(np.float32)
        self.bt = bt.astype(np.float32)
        self.at = at.astype(np.float32)
        self.igdn = igdn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(H, W, Cin) float32 → (2H, 2W, Cout) float32, channels last."""
        h, w, c = x.shape
        m, a, cout = self.m, self.alpha, self.c_out
        a2, k = a * a, 4 * cout
        th, tw = -(-h // m), -(-w // m)
        xp = self._padded(x, m * th + 2, m * tw + 2)  # zeros past the image fill the last tiles
        out = np.empty((2 * h, 2 * w, cout), dtype=np.float32)
        rows = max(1, min(th, CHUNK_TILES // tw))
        tmax = rows * tw
        dbuf = np.empty(a2 * tmax * c, dtype=np.float32)
        vbuf = np.empty(a2 * tmax * c, dtype=np.float32)
        mbuf = np.empty(a2 * tmax * max(c, k), dtype=np.float32)  # also holds Bᵀ d
        zbuf = np.empty(a * m * tw * k, dtype=np.float32)
        ybuf = np.empty(m * m * tw * k, dtype=np.float32)
        gbuf = np.empty(2 * InverseGDN.BLOCK * cout, dtype=np.float32) if self.igdn is not None else None
        one = a + 1  # index of the point (1, 1): its column of kron(Aᵀ, Aᵀ) is all ones
        twf, pc = w // m, w % m  # full tile columns; output columns of the partial last one
        cols = [(0, twf, m, 0)] if twf else []
        if pc:
            cols.append((twf, twf + 1, pc, 2 * m * twf))
        s0, s1, s2 = xp.strides
        for r0 in range(0, th, rows):
            r = min(rows, th - r0)
            t = r * tw
            # The tiles as (p, q, tile row, tile column, C), then V = Bᵀ d B one direction at a time.
            tiles = np.lib.stride_tricks.as_strided(
                xp[m * r0 :], shape=(a, a, r, tw, c), strides=(s0, s1, m * s0, m * s1, s2), writeable=False
            )
            d = dbuf[: a2 * t * c].reshape(a, a, r, tw, c)
            np.copyto(d, tiles)
            z = np.matmul(self.bt, d.reshape(a, a * t * c), out=mbuf[: a2 * t * c].reshape(a, a * t * c))
            v = np.matmul(self.bt, z.reshape(a, a, t * c), out=vbuf[: a2 * t * c].reshape(a, a, t * c))
            mm = np.matmul(v.reshape(a2, t, c), self.u, out=mbuf[: a2 * t * k].reshape(a2, t, k))
            mm[one] += self.bias4
            mm = mm.reshape(a, a, r, tw * k)
            for i in range(r):
                # Y = Aᵀ M A for one tile row, then pixel-shuffle it into the output.
                gi = r0 + i
                z = np.matmul(self.at, mm[:, :, i], out=zbuf.reshape(a, m, tw * k))
                y = np.matmul(self.at, z.reshape(a, m * tw * k), out=ybuf.reshape(m, m * tw * k))
                y = y.reshape(m, m, tw, 2, 2, cout)  # (a, b, tile, ry, rx, c)
                arows = min(m, h - m * gi)
                dst_rows = out[2 * m * gi : 2 * m * gi + 2 * arows]
                for j0, j1, bcols, x0 in cols:
                    dst = dst_rows[:, x0 : x0 + 2 * (j1 - j0) * bcols].reshape(arows, 2, j1 - j0, bcols, 2, cout)
                    np.copyto(dst, y[:arows, :bcols, j0:j1].transpose(0, 3, 2, 1, 4, 5))
                if self.igdn is not None:
                    self.igdn.apply_(dst_rows.reshape(-1, cout), gbuf)
        return out


class SubpixelUp(_Up):
    """A thin stride-2 5×5 transposed convolution (few outputs, e.g. the last, RGB one) as one
    matrix product and nine shifted sums.

    For so few outputs Winograd does not pay (its input transform costs as much as for a wide
    layer). Instead ``Z = Wᵀ · Xᵀ`` gives each input pixel's contribution to all nine taps of the
    merged 3×3 sub-pixel kernel at once (one ``sgemm`` with ``9·4·Cout`` rows, laid out tap, channel,
    row, column so each shifted sum runs along whole rows), and output pixel ``(y, x)`` of the
    phase-major channels is ``Σ Z[tap(jy, jx), :, y + jy, x + jx]``; the sums are written
    pixel-shuffled straight into the output.
    """

    #: Input rows per matrix product (bounds ``Z`` to a few MB).
    ROWS = 8

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__(weight, bias)
        k = merged_kernel(weight)  # (4·Cout, Cin, 3, 3)
        self.wt = np.ascontiguousarray(k.transpose(2, 3, 0, 1).reshape(9 * k.shape[0], self.c_in), dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(H, W, Cin) float32 → (2H, 2W, Cout) float32, channels last."""
        h, w, c = x.shape
        cout = self.c_out
        k = 4 * cout
        xp = self._padded(x, h + 2, w + 2)
        out = np.empty((2 * h, 2 * w, cout), dtype=np.float32)
        phases = out.reshape(h, 2, w, 2, cout).transpose(0, 2, 1, 3, 4)  # a view: (y, x, ry, rx, c)
        zbuf = np.empty(9 * k * (self.ROWS + 2) * (w + 2), dtype=np.float32)
        acc = np.empty(k * self.ROWS * w, dtype=np.float32)
        for y0 in range(0, h, self.ROWS):
            r = min(self.ROWS, h - y0)
            rows = xp[y0 : y0 + r + 2].reshape(-1, c)
            z = np.matmul(self.wt, rows.T, out=zbuf[: 9 * k * rows.shape[0]].reshape(9 * k, -1))
            z = z.reshape(9, k, r + 2, w + 2)
            s = acc[: k * r * w].reshape(k, r, w)
            np.add(z[0, :, 0:r, 0:w], self.bias4[:, None, None], out=s)
            for tap in range(1, 9):
                jy, jx = divmod(tap, 3)
                s += z[tap, :, jy : jy + r, jx : jx + w]
            phases[y0 : y0 + r] = s.reshape(2, 2, cout, r, w).transpose(3, 4, 0, 1, 2)
        return out


class CpuSynthesis:
    """The synthesis transform of one model, built from its weights (NumPy arrays by state-dict name).

    ``weights`` holds ``synthesis.{i}.weight``/``bias`` of the transposed convolutions,
    ``synthesis.{i}.beta_root``/``gamma_root`` of the inverse GDNs and ``log_inv_gain`` (qualities
    × latent channels), as :class:`aezip.model.autoencoder.Autoencoder` names them; a missing array,
    or shapes that do not chain from the latent channels to 3 colours, raise :class:`ModelError`.
    """

    def __init__(self, weights: Mapping[str, np.ndarray], levels: int) -> None:
        try:
            log_inv_gain = weights["log_inv_gain"]
            channels = log_inv_gain.shape[-1] if log_inv_gain.ndim == 2 else -1
            self.inv_gain = np.exp(log_inv_gain.astype(np.float32))
            self.stages: list[WinogradUp | SubpixelUp] = []
            for i in range(levels):
                weight, bias = weights[f"synthesis.{2 * i}.weight"], weights[f"synthesis.{2 * i}.bias"]
                last = i == levels - 1
                if weight.ndim != 4 or weight.shape[0] != channels or (last and weight.shape[1] != 3):
                    raise ModelError(f"synthesis stage {i} has weights of shape {weight.shape}, which do not chain")
                if last:
                    self.stages.append(SubpixelUp(weight, bias))
                    break
                igdn = InverseGDN(
                    weights[f"synthesis.{2 * i + 1}.beta_root"], weights[f"synthesis.{2 * i + 1}.gamma_root"]
                )
                if igdn.beta.shape[0] != weight.shape[1]:
                    raise ModelError(f"synthesis stage {i}: inverse GDN width differs from its convolution's")
                self.stages.append(WinogradUp(weight, bias, igdn))
                channels = weight.shape[1]
        except KeyError as exc:
            raise ModelError(f"model has no synthesis weight {exc.args[0]}") from None

    def __call__(self, latents: np.ndarray, quality: int) -> np.ndarray:
        """Integer latents (C, h, w) and a 0-based quality → image (H, W, 3) float32, not clamped."""
        gain = self.inv_gain[quality]
        x = np.multiply(latents.transpose(1, 2, 0), gain, dtype=np.float32)
        for stage in self.stages:
            x = stage(x)
        return x
