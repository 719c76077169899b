"""Every setting of a training run, and the counters that survive a resume.

Kept apart from the loop (``trainer``) and the export (``export``) so that both can use them
without importing each other.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

PRIOR_LR_SCALE = 10.0
GAIN_LR_SCALE = 10.0
EMA_DECAY = 0.999


@dataclass
class TrainOptions:
    """Every setting of a run; recorded verbatim in the model card.

    ``variant`` is how a step runs (:mod:`aezip.train.step`); ``auto`` first times the
    candidates in ``bench`` (default: :func:`aezip.train.step.default_candidates`) for
    ``bench_seconds`` in all, as real training steps, then trains on with the fastest variant
    and its batch size. ``lambdas=None`` keeps the ladder of the ``--init``/``--resume`` model, or the default ladder
    for a fresh model; with ``--init``, a different ladder re-ladders the model (``reladder``).
    """

    data: Path
    out: Path
    val: Path | None = None
    steps: int = 100_000
    minutes: float | None = None
    batch: int = 16
    crop: int = 128
    lr: float = 1e-4
    lr_drop_at: float = 0.8
    clip: float = 1.0
    levels: int = 4
    channels: int = 128
    bottleneck: int = 320
    rescale: float = 0.25
    ema: float = EMA_DECAY
    lambdas: tuple[float, ...] | None = None
    loss: str = "mse"
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    init: Path | None = None
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    val_limit: int | None = None
    threads: int | None = None
    variant: str = "eager"
    bench_seconds: float = 45.0
    bench: str | None = None
    compile_backend: str = "inductor"
    progress: bool = True
    command: str = field(default_factory=lambda: shlex.join(["aezip", *sys.argv[1:]]))

    @property
    def checkpoint_path(self) -> Path:
        return self.out.with_name(self.out.name + ".ckpt")

    @property
    def log_path(self) -> Path:
        return self.out.with_name(self.out.name + ".log.jsonl")


@dataclass
class TrainState:
    """Counters that survive a resume; ``prior_*`` come from an ``--init`` model's card."""

    step: int = 0
    seconds: float = 0.0
    prior_steps: int = 0
    prior_seconds: float = 0.0
    history: list[str] = field(default_factory=list)
