"""aezip.loader.sampling: epoch orders as pure functions of (seed, epoch), rank shares, resume arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from aezip.errors import AezipError
from aezip.loader.sampling import DistributedBlockSampler, env_rank_world, epoch_order, rank_share

COUNTS = [37, 0, 50, 13]


def test_order_is_a_deterministic_permutation_per_seed_and_epoch() -> None:
    order = epoch_order(COUNTS, seed=7, epoch=0)
    assert sorted(order.tolist()) == list(range(100))
    assert np.array_equal(order, epoch_order(COUNTS, seed=7, epoch=0))
    assert not np.array_equal(order, epoch_order(COUNTS, seed=7, epoch=1))
    assert not np.array_equal(order, epoch_order(COUNTS, seed=8, epoch=0))
    assert np.array_equal(epoch_order(COUNTS, 7, 0, shuffle=False), np.arange(100))
    assert len(epoch_order([], 0, 0)) == 0
    with pytest.raises(AezipError):
        epoch_order(COUNTS, 0, 0, block_size=0)


def test_blocks_stay_contiguous_within_one_source() -> None:
    offsets = np.cumsum([0, *COUNTS])
    blocks = epoch_order(COUNTS, seed=1, epoch=3, block_size=8, window=1)  # window 1: blocks, not mixed
    runs = np.split(blocks, np.flatnonzero(np.diff(blocks) != 1) + 1)
    for run in runs:  # each run: whole aligned blocks of one source, in order
        source = int(np.searchsorted(offsets, run[0], side="right")) - 1
        assert run[-1] < offsets[source + 1]
        assert (run[0] - offsets[source]) % 8 == 0
    assert len(runs) > 5
    mixed = epoch_order(COUNTS, seed=1, epoch=3, block_size=8, window=32)
    for start in range(0, 100, 32):  # a window shuffles only its own items
        assert sorted(mixed[start : start + 32]) == sorted(blocks[start : start + 32])
    assert not np.array_equal(mixed, blocks)


def test_rank_shares_are_equal_and_cover_the_epoch() -> None:
    order = epoch_order(COUNTS, seed=0, epoch=0)
    wrap = [rank_share(order, 0, r, 3, "wrap") for r in range(3)]
    assert {len(s) for s in wrap} == {34}
    assert sorted(np.concatenate(wrap).tolist()) == sorted([*range(100), *order[:2].tolist()])
    drop = [rank_share(order, 0, r, 3, "drop") for r in range(3)]
    assert {len(s) for s in drop} == {33}
    assert sorted(np.concatenate(drop).tolist()) == sorted(order[:99].tolist())
    with pytest.raises(AezipError):
        rank_share(order, 0, 0, 3, "pad")


@pytest.mark.parametrize("new_world", [1, 2, 3, 5])
def test_resume_after_world_size_change_yields_exactly_the_rest(new_world: int) -> None:
    ranks = [DistributedBlockSampler(COUNTS, seed=4, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(2)
    seen = []
    for s in ranks:
        seen += s.indices()[:11].tolist()
        s.advance(11)
    state = ranks[0].state_dict()
    assert state == ranks[1].state_dict()
    assert state["position"] == 22 and state["epoch"] == 2 and state["seed"] == 4
    resumed = [DistributedBlockSampler(COUNTS, rank=r, world_size=new_world) for r in range(new_world)]
    rest = []
    for s in resumed:
        s.load_state_dict(state)
        s.set_epoch(2)  # the loop of a resumed run calls this too: it keeps the position
        rest.append(s.indices().tolist())
    assert len({len(r) for r in rest}) == 1
    order = epoch_order(COUNTS, 4, 2).tolist()
    assert sorted(seen) == sorted(order[:22])
    padded = -(-78 // new_world) * new_world - 78
    assert sorted(i for r in rest for i in r) == sorted(order[22:] + order[:padded])


def test_epochs_complete_and_restart() -> None:
    s = DistributedBlockSampler([10], seed=0, rank=0, world_size=4, uneven="drop")
    assert s.num_samples() == 2 and len(s) == 2
    first = list(s)
    s.advance(2)
    assert s.complete and s.state_dict()["position"] == 10
    s.set_epoch(0)  # the current epoch keeps its position, even when finished
    assert list(s) == [] and s.complete
    s.set_epoch(1)
    assert list(s) != first
    assert len(s) == 2 and s.epoch == 1
    with pytest.raises(AezipError):
        s.load_state_dict({"seed": 0, "epoch": 0, "position": 11})
    with pytest.raises(AezipError):
        s.load_state_dict({"epoch": 0})


def test_rank_and_world_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert env_rank_world() == (2, 3)
    assert env_rank_world(0, 1) == (0, 1)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert env_rank_world() == (0, 1)
    with pytest.raises(AezipError):
        env_rank_world(3, 3)
