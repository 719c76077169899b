"""Model shape and rate ladder: everything needed to rebuild a network, stored with its weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from aezip.errors import ModelError

#: λ for qualities 1..8 (λ·255²·MSE + bpp). Spaced ×~1.9, the usual ladder of learned codecs,
#: meant to span about 0.1 to 2 bits per pixel on natural photos once a model is trained.
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932, 0.18)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the autoencoder.

    ``levels`` strided stages each halve the resolution, so an image is downsampled by
    ``2**levels``. ``channels`` is the width of the hidden stages and ``bottleneck`` the number
    of latent channels. ``lambdas`` fixes the number of qualities (one gain vector and one
    entropy model per quality).
    """

    levels: int = 4
    channels: int = 128
    bottleneck: int = 192
    lambdas: tuple[float, ...] = field(default=DEFAULT_LAMBDAS)
    filters: tuple[int, ...] = (3, 3, 3)

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= 6:
            raise ModelError(f"levels must be 1..6, got {self.levels}")
        if not (1 <= self.channels <= 1024 and 1 <= self.bottleneck <= 1024):
            raise ModelError("channels and bottleneck must be 1..1024")
        if not 1 <= len(self.lambdas) <= 16 or any(v <= 0 for v in self.lambdas):
            raise ModelError("lambdas must be 1..16 positive values")
        object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
        object.__setattr__(self, "filters", tuple(int(v) for v in self.filters))

    @property
    def stride(self) -> int:
        """Total downsampling factor: input sizes are padded to a multiple of this."""
        return 2**self.levels

    @property
    def qualities(self) -> int:
        """Number of quality levels (1-based in the user interface)."""
        return len(self.lambdas)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) so the same config always serialises to the same bytes."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Parse a config written by :meth:`to_json`; unknown or missing keys are an error."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            return cls(
                levels=int(raw["levels"]),
                channels=int(raw["channels"]),
                bottleneck=int(raw["bottleneck"]),
                lambdas=tuple(raw["lambdas"]),
                filters=tuple(raw["filters"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"invalid model config: {exc}") from None
