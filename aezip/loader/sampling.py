"""Deterministic, resumable sampling for distributed training: pure functions of (seed, epoch).

The data is a list of *sources*, each an ordered run of items (one archive today; the shards of a
manifest later), given by their item counts. An epoch's order is computed, never drawn from
global random state:

1. each source is cut into *blocks* of ``block_size`` consecutive items (a block never crosses
   sources, so one block is one contiguous read region of one file);
2. all blocks are permuted (a ``numpy`` PCG64 generator seeded with ``(seed, epoch)``);
3. the concatenated blocks are cut into *windows* of ``window`` items and the items are shuffled
   within each window. A dataset smaller than a window gets a full shuffle; in a larger one any
   ``window`` consecutive samples touch at most ``window / block_size + 2`` blocks.

Ranks then take strided shares of that order, starting at a global *position* (the number of
samples of the epoch already consumed by all ranks together): rank ``r`` of ``W`` gets
``order[position + r :: W]``. While ranks run in lockstep (as DDP does), after each rank has seen
``s`` samples exactly ``order[:position + s * W]`` has been consumed, so a checkpoint needs one
number, and a resume can split what remains among any number of ranks. Every rank gets the
same count: ``uneven="wrap"`` repeats samples from the start of the epoch's order to fill the
last round, ``uneven="drop"`` leaves out the last ``remaining % W``.

A rank's samples are batched, and batch ``j`` goes to DataLoader worker ``j % num_workers``: a
DataLoader collects worker outputs round-robin, so the batches come out in the same order for
any number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from aezip.errors import AezipError

#: Consecutive items of one source read as one region (see module docstring).
DEFAULT_BLOCK_SIZE = 64
#: Items shuffled together; datasets up to this size get a full shuffle.
DEFAULT_WINDOW = 16384
UNEVEN = ("wrap", "drop")


def epoch_order(
    counts: list[int] | tuple[int, ...],
    seed: int,
    epoch: int,
    shuffle: bool = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
    window: int = DEFAULT_WINDOW,
) -> np.ndarray:
    """Global item indices (int64) of one epoch, a pure function of its arguments.

    Item ``i`` of source ``k`` has global index ``sum(counts[:k]) + i``. Without ``shuffle`` the
    order is the natural one.
    """
    if any(c < 0 for c in counts):
        raise AezipError("source counts must not be negative")
    if block_size < 1 or window < 1:
        raise AezipError("block_size and window must be positive")
    total = int(sum(counts))
    if not shuffle or total == 0:
        return np.arange(total, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([seed & 0xFFFFFFFFFFFFFFFF, epoch & 0xFFFFFFFFFFFFFFFF, 0xAE21]))
    starts, lengths = [], []
    offset = 0
    for count in counts:
        first = np.arange(0, count, block_size, dtype=np.int64)
        starts.append(offset + first)
        lengths.append(np.minimum(block_size, count - first))
        offset += count
    block_start = np.concatenate(starts)
    block_len = np.concatenate(lengths)
    perm = rng.permutation(len(block_start))
    block_start, block_len = block_start[perm], block_len[perm]
    # Expand the permuted blocks into item indices without a Python loop over blocks.
    ends = np.cumsum(block_len)
    within = np.arange(total, dtype=np.int64) - np.repeat(ends - block_len, block_len)
    order = np.repeat(block_start, block_len) + within
    full = total // window * window
    mixed = rng.permuted(order[:full].reshape(-1, window), axis=1).ravel()
    return np.concatenate([mixed, rng.permutation(order[full:])])


def env_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """This process's (rank, world size): the arguments, else ``RANK``/``WORLD_SIZE``, else an
    initialised ``torch.distributed`` group, else (0, 1)."""
    if world_size is None and "WORLD_SIZE" in os.environ:
        world_size = int(os.environ["WORLD_SIZE"])
    if rank is None and "RANK" in os.environ:
        rank = int(os.environ["RANK"])
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise AezipError(f"rank {rank} is not in 0..{world_size - 1}")
    return rank, world_size


def rank_share(order: np.ndarray, position: int, rank: int, world_size: int, uneven: str = "wrap") -> np.ndarray:
    """Rank ``rank``'s samples of ``order[position:]``, as many as every other rank gets.

    ``uneven="wrap"`` fills the last round from the start of ``order``; ``"drop"`` leaves it out.
    """
    if uneven not in UNEVEN:
        raise AezipError(f"uneven must be one of {', '.join(UNEVEN)}, got {uneven!r}")
    remaining = order[min(max(position, 0), len(order)) :]
    if uneven == "drop":
        per_rank = len(remaining) // world_size
    else:
        per_rank = -(-len(remaining) // world_size)
        short = per_rank * world_size - len(remaining)
        if short:
            remaining = np.concatenate([remaining, np.resize(order, short)])
    return remaining[rank : per_rank * world_size : world_size]


@dataclass
class SamplerState:
    """Where an epoch stands: enough to resume it on any number of ranks (see module docstring)."""

    seed: int
    epoch: int
    position: int  # samples of the epoch's order consumed by all ranks together
    samples_seen: int = 0  # by this rank since ``position`` was last set from a checkpoint or epoch start

    def as_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position, "samples_seen": self.samples_seen}


class DistributedBlockSampler:
    """The samples of one rank, epoch by epoch, with mid-epoch resume by index arithmetic.

    ``counts`` are the sources' item counts. ``rank``/``world_size`` default to ``RANK`` and
    ``WORLD_SIZE`` (see :func:`env_rank_world`). Iterating yields this rank's global indices for the
    current epoch from the current position; :meth:`advance` records consumed samples (call it as
    you consume, or let :class:`aezip.loader.archive_loader.ArchiveLoader` do it).
    """

    def __init__(
        self,
        counts: list[int] | tuple[int, ...],
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        uneven: str = "wrap",
        block_size: int = DEFAULT_BLOCK_SIZE,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if uneven not in UNEVEN:
            raise AezipError(f"uneven must be one of {', '.join(UNEVEN)}, got {uneven!r}")
        self.counts = tuple(int(c) for c in counts)
        self.shuffle = shuffle
        self.rank, self.world_size = env_rank_world(rank, world_size)
        self.uneven = uneven
        self.block_size = block_size
        self.window = window
        if block_size < 1 or window < 1:
            raise AezipError("block_size and window must be positive")
        self.state = SamplerState(seed=seed, epoch=0, position=0)

    @property
    def total(self) -> int:
        """Items in all sources."""
        return sum(self.counts)

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def seed(self) -> int:
        return self.state.seed

    def order(self) -> np.ndarray:
        """The current epoch's global order (all ranks)."""
        s = self.state
        return epoch_order(self.counts, s.seed, s.epoch, self.shuffle, self.block_size, self.window)

    def indices(self) -> np.ndarray:
        """This rank's remaining indices of the current epoch."""
        share = rank_share(self.order(), self.state.position, self.rank, self.world_size, self.uneven)
        return share[self.state.samples_seen :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return max(self.share(self.state.position) - self.state.samples_seen, 0)

    def share(self, position: int = 0) -> int:
        """Samples each rank gets of an epoch from ``position`` on (equal on every rank)."""
        remaining = max(self.total - position, 0)
        if self.uneven == "drop":
            return remaining // self.world_size
        return -(-remaining // self.world_size)

    def num_samples(self) -> int:
        """Samples each rank gets in a whole epoch."""
        return self.share(0)

    @property
    def complete(self) -> bool:
        """Whether this rank has consumed all its samples of the current epoch."""
        return len(self) == 0

    def set_epoch(self, epoch: int) -> None:
        """Select an epoch: another one starts at its beginning; the current one keeps its position
        (so a resumed run's loop can call it; a finished epoch then yields nothing more)."""
        if epoch != self.state.epoch:
            self.state = SamplerState(self.state.seed, epoch, 0)

    def advance(self, samples: int) -> None:
        """Record that this rank consumed ``samples`` more samples."""
        self.state.samples_seen += samples

    def state_dict(self) -> dict:
        """Seed, epoch, global position and this rank's samples seen; identical on all ranks in lockstep."""
        s = self.state
        position = min(s.position + s.samples_seen * self.world_size, self.total)
        if self.complete:
            position = self.total
        return {
            "seed": s.seed,
            "epoch": s.epoch,
            "position": position,
            "samples_seen": s.samples_seen,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` (taken with any world size): the rest of that epoch follows."""
        try:
            seed, epoch, position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AezipError(f"not a sampler state: {exc}") from None
        if not 0 <= position <= self.total:
            raise AezipError(f"sampler state position {position} is outside 0..{self.total}")
        self.state = SamplerState(seed, epoch, position)
