"""Per-image quality targets: the lowest quality that reaches a PSNR floor, under a bpp cap.

A fixed quality gives very different results per image; dataset owners care about the worst
image. :func:`encode_to_target` searches the quality ladder with the real encoder and decoder
(PSNR measured on the decoded pixels, bpp on the stream bytes), by bisection: PSNR and rate grow
with quality, so at most ``ceil(log2(Q)) + 1`` trials (4 for 8 qualities) find the answer.

The same measurement is the autoencoder's reconstruction error, which makes images unlike the
training data (noise, screenshots, corrupt files) stand out: ``aezip report`` lists the worst.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from aezip.codec.imagefile import Prepared
from aezip.codec.metrics import psnr
from aezip.errors import AezipError, CorruptArchiveError

if TYPE_CHECKING:  # the codec calls this module (encode with min_psnr); this module only names its type
    from aezip.codec.codec import Codec

BELOW_FLOOR = ("best", "lossless", "fail")


@dataclass(frozen=True)
class QualityTarget:
    """What to aim for per image: ``min_psnr`` (dB) and/or ``max_bpp``; ``measure`` alone only records.

    ``below_floor`` says what happens to an image no quality brings to the floor (within the cap):
    ``best`` codes it at the best quality allowed, ``lossless`` stores it losslessly, ``fail`` stops.
    """

    min_psnr: float | None = None
    max_bpp: float | None = None
    below_floor: str = "best"
    measure: bool = True

    def __post_init__(self) -> None:
        if self.below_floor not in BELOW_FLOOR:
            raise AezipError(f"below_floor must be one of {', '.join(BELOW_FLOOR)}, got {self.below_floor!r}")
        if self.min_psnr is not None and not (math.isfinite(self.min_psnr) and self.min_psnr > 0):
            raise AezipError(f"min_psnr must be a positive number of dB, got {self.min_psnr}")
        if self.max_bpp is not None and not (math.isfinite(self.max_bpp) and self.max_bpp > 0):
            raise AezipError(f"max_bpp must be a positive number of bits per pixel, got {self.max_bpp}")

    @property
    def searches(self) -> bool:
        """Whether the quality is chosen per image (a floor or a cap), not fixed."""
        return self.min_psnr is not None or self.max_bpp is not None


@dataclass(frozen=True)
class ImageStats:
    """What packing measured for one coded image; stored in its member metadata."""

    quality: int
    psnr: float
    bpp: float
    trials: int = 1
    below_floor: bool = False
    over_cap: bool = False

    def to_meta(self) -> dict:
        """The JSON fields recorded in the archive (rounded; booleans only when true)."""
        meta = {"quality": self.quality, "psnr": round(self.psnr, 3), "bpp": round(self.bpp, 4)}
        meta.update({k: True for k in ("below_floor", "over_cap") if getattr(self, k)})
        return meta

    def as_dict(self) -> dict:
        return asdict(self)


def stats_from_meta(meta: dict, name: str) -> ImageStats | None:
    """The ``stats`` recorded in an IMAGE member's metadata, checked (the archive is hostile input)."""
    raw = meta.get("stats")
    if raw is None:
        return None
    numbers = isinstance(raw, dict) and all(
        isinstance(raw.get(k), int | float) and not isinstance(raw.get(k), bool) and math.isfinite(raw[k])
        for k in ("quality", "psnr", "bpp")
    )
    flags = numbers and all(isinstance(raw.get(k, False), bool) for k in ("below_floor", "over_cap"))
    if not flags or not 1 <= raw["quality"] <= 255 or raw["bpp"] < 0:
        raise CorruptArchiveError(f"{name}: metadata has malformed quality stats")
    return ImageStats(
        int(raw["quality"]),
        float(raw["psnr"]),
        float(raw["bpp"]),
        below_floor=raw.get("below_floor", False),
        over_cap=raw.get("over_cap", False),
    )


class BelowFloorError(AezipError):
    """No allowed quality reaches the floor and the policy is ``lossless`` or ``fail``."""


def _trial(codec: Codec, prep: Prepared, quality: int) -> tuple[bytes, float, float]:
    """Encode at ``quality``, decode, and measure: (stream, PSNR over RGB, bits per pixel)."""
    at_q = copy.copy(codec)
    at_q.quality = quality
    data = at_q.encode_prepared(prep)
    decoded = at_q.decode_many([data])[0]
    h, w = prep.rgb.shape[:2]
    return data, min(psnr(prep.rgb, decoded.rgb), 99.0), 8 * len(data) / (h * w)


def encode_to_target(codec: Codec, prep: Prepared, target: QualityTarget) -> tuple[bytes, ImageStats]:
    """The stream and its measured stats for one prepared image under ``target``.

    Without a floor or cap the image is coded at ``codec.quality`` (and measured). With a cap, only
    qualities whose stream fits ``max_bpp`` are allowed (quality 1 if none fits: flagged
    ``over_cap``). With a floor, the lowest allowed quality reaching ``min_psnr`` wins; if none does,
    ``below_floor`` decides (:class:`BelowFloorError` for ``lossless`` and ``fail``).
    """
    trials: dict[int, tuple[bytes, float, float]] = {}

    def run(q: int) -> tuple[bytes, float, float]:
        if q not in trials:
            trials[q] = _trial(codec, prep, q)
        return trials[q]

    if not target.searches:
        data, db, bpp = run(codec.quality)
        return data, ImageStats(codec.quality, db, bpp)
    top = codec.model.config.qualities
    over_cap = False
    if target.max_bpp is not None:
        top = _last_true(1, top, lambda q: run(q)[2] <= target.max_bpp)
        if top == 0:
            top, over_cap = 1, True
    chosen, below = top, False
    if target.min_psnr is not None:
        first = _first_true(1, top, lambda q: run(q)[1] >= target.min_psnr)
        if first is None:
            below = True
            if target.below_floor != "best":
                best = run(top)[1]
                raise BelowFloorError(f"reaches {best:.2f} dB at best, below the {target.min_psnr:g} dB floor")
        else:
            chosen = first
    data, db, bpp = run(chosen)
    return data, ImageStats(chosen, db, bpp, trials=len(trials), below_floor=below, over_cap=over_cap)


def _first_true(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """Smallest q in [lo, hi] with ok(q), assuming ok is monotone (false … true); None if none."""
    if hi < lo or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _last_true(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest q in [lo, hi] with ok(q), assuming ok is monotone (true … false); 0 if none."""
    if not ok(lo):
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
