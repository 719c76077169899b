"""Integer probability tables for the latents: the only model the entropy coder ever sees.

A table is built once from a density (the learned prior, or smoothed histograms of real latents)
and stored with the weights. Everything after that is integer arithmetic, so encoder and
decoder agree bit for bit on any machine.

Layout for ``C`` channels and ``K`` symbols per channel: symbol ``s`` in ``0..K-2`` stands for
the latent value ``low[c] + s``; symbol ``K-1`` is the *escape*, used for values outside that
range (their value is then sent separately). ``freq[c, s] >= 1`` and each row sums to
``2**precision``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aezip.errors import ModelError

if TYPE_CHECKING:
    import torch

PRECISION = 16
MAX_SYMBOLS = 1024


@dataclass(frozen=True)
class CdfTables:
    """Per-channel integer frequencies with an escape symbol (see module docstring)."""

    low: np.ndarray  # int32 (C,)
    freq: np.ndarray  # int32 (C, K)
    precision: int = PRECISION

    def __post_init__(self) -> None:
        low, freq = self.low, self.freq
        if low.ndim != 1 or freq.ndim != 2 or freq.shape[0] != low.shape[0]:
            raise ModelError("entropy tables: inconsistent shapes")
        if not 2 <= freq.shape[1] <= MAX_SYMBOLS or not 8 <= self.precision <= 24:
            raise ModelError("entropy tables: symbol count or precision out of range")
        if (freq < 1).any() or (freq.sum(axis=1, dtype=np.int64) != (1 << self.precision)).any():
            raise ModelError("entropy tables: frequencies must be >= 1 and sum to 2**precision")

    @property
    def channels(self) -> int:
        return int(self.low.shape[0])

    @property
    def symbols(self) -> int:
        """Symbols per channel, the escape included."""
        return int(self.freq.shape[1])

    @property
    def escape(self) -> int:
        return self.symbols - 1

    @classmethod
    def from_pmf(cls, pmf: np.ndarray, offset: int, tail_mass: float = 1e-6, max_symbols: int = 256) -> CdfTables:
        """Quantize per-channel masses ``pmf[c, i]`` of values ``offset + i`` into a table.

        Each channel keeps the central range holding all but ``tail_mass`` of its mass (capped
        so that all channels share ``max_symbols`` symbols); the rest goes to the escape.
        """
        pmf = np.asarray(pmf, dtype=np.float64)
        pmf = pmf / np.maximum(pmf.sum(axis=1, keepdims=True), 1e-300)
        cum = np.cumsum(pmf, axis=1)
        lo = np.argmax(cum > tail_mass / 2, axis=1)
        upper = cum >= 1 - tail_mass / 2
        hi = np.where(upper.any(axis=1), np.argmax(upper, axis=1), pmf.shape[1] - 1)
        hi = np.maximum(hi, lo)
        span = int(min(max_symbols - 1, (hi - lo).max() + 1))
        centre = (lo + hi) // 2
        start = np.clip(centre - (span - 1) // 2, 0, pmf.shape[1] - span)
        rows = np.stack([pmf[c, s : s + span] for c, s in enumerate(start)])
        escape = np.clip(1.0 - rows.sum(axis=1, keepdims=True), 0.0, None)
        return cls(low=(start + offset).astype(np.int32), freq=quantize(np.hstack([rows, escape]), PRECISION))

    @classmethod
    def from_counts(cls, counts: np.ndarray, offset: int, max_symbols: int = 256) -> CdfTables:
        """Tables from histograms of observed symbols, smoothed so no value has zero mass."""
        counts = np.asarray(counts, dtype=np.float64)
        smoothed = counts + 0.5
        return cls.from_pmf(
            smoothed, offset, tail_mass=0.5 / max(counts.sum(axis=1).min(), 1.0), max_symbols=max_symbols
        )

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors for the model file (int32, little-endian once saved)."""
        import torch

        return {
            "low": torch.from_numpy(self.low.astype(np.int32)),
            "freq": torch.from_numpy(self.freq.astype(np.int32)),
            "precision": torch.tensor([self.precision], dtype=torch.int32),
        }

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray | torch.Tensor], channels: int) -> CdfTables:
        """Inverse of :meth:`to_tensors` (arrays or CPU tensors), checking the channel count against the model's."""
        try:
            low = np.asarray(tensors["low"]).astype(np.int32)
            freq = np.asarray(tensors["freq"]).astype(np.int32)
            precision = int(np.asarray(tensors["precision"]).reshape(-1)[0])
        except (KeyError, IndexError) as exc:
            raise ModelError(f"entropy tables: missing {exc}") from None
        if low.shape != (channels,):
            raise ModelError("entropy tables: channel count differs from the model's")
        return cls(low=low, freq=freq, precision=precision)

    def symbolize(self, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map integer latents (C, H, W) to table symbols (C, H, W) and the escaped values (1-D)."""
        rel = latents.astype(np.int64) - self.low.astype(np.int64).reshape(-1, 1, 1)
        out = (rel < 0) | (rel >= self.escape)
        symbols = np.where(out, self.escape, rel).astype(np.int32)
        return symbols, latents[out].astype(np.int64)

    def desymbolize(self, symbols: np.ndarray, escaped: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`symbolize`; ``escaped`` holds the values of escape symbols in C order."""
        values = symbols.astype(np.int64) + self.low.astype(np.int64).reshape(-1, 1, 1)
        mask = symbols == self.escape
        if int(mask.sum()) != escaped.size:
            raise ValueError("escape count mismatch")
        values[mask] = escaped
        return values.astype(np.int32)

    def ideal_bits(self, latents: np.ndarray) -> float:
        """Code length in bits under these tables (escaped values not counted)."""
        symbols, _ = self.symbolize(latents)
        f = np.take_along_axis(self.freq, symbols.reshape(self.channels, -1), axis=1)
        return float(self.precision * f.size - np.log2(f).sum())


def quantize(pmf: np.ndarray, precision: int) -> np.ndarray:
    """Round probabilities (rows summing to ~1) to integers >= 1 that sum to ``2**precision``.

    Deterministic: the rounding residue is settled on the largest entries, ties by index.
    """
    total = 1 << precision
    rows, k = pmf.shape
    if k > total // 2:
        raise ModelError("entropy tables: too many symbols for the precision")
    pmf = pmf / np.maximum(pmf.sum(axis=1, keepdims=True), 1e-300)
    freq = np.maximum(1, np.round(pmf * (total - k)).astype(np.int64))
    for r in range(rows):
        diff = total - int(freq[r].sum())
        order = np.argsort(-freq[r], kind="stable")
        i = 0
        while diff != 0:
            j = order[i % k]
            step = 1 if diff > 0 else -1
            if freq[r, j] + step >= 1:
                freq[r, j] += step
                diff -= step
            i += 1
    return freq.astype(np.int32)
