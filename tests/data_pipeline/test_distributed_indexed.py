"""DistributedBlockSampler: disjoint shares, one pass per epoch, exact resume."""

from __future__ import annotations

import pytest

from Code.data_pipeline.distributed_indexed import DistributedBlockSampler


def shares(n, world, epoch=0, **kw):
    out = []
    for rank in range(world):
        s = DistributedBlockSampler(n, rank=rank, world_size=world, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@pytest.mark.parametrize("n,world", [(100, 4), (103, 4), (7, 3), (50, 1), (1000, 8)])
def test_disjoint_and_every_sample_once_per_epoch(n, world):
    for epoch in range(3):
        parts = shares(n, world, epoch, seed=5)
        per_rank = n // world
        assert all(len(p) == per_rank for p in parts)
        flat = [i for p in parts for i in p]
        assert len(set(flat)) == len(flat) == per_rank * world  # disjoint, nothing twice
        assert set(flat) <= set(range(n)) and n - len(flat) < world  # only the ragged tail is dropped
    if n % world == 0:
        assert sorted(flat) == list(range(n))


def test_dropped_tail_changes_with_the_epoch_so_no_sample_is_lost_for_good():
    seen = set()
    for epoch in range(20):
        seen.update(i for p in shares(103, 4, epoch) for i in p)
    assert seen == set(range(103))


def test_shuffle_depends_on_seed_and_epoch_only():
    a, b = shares(200, 2, epoch=1, seed=3), shares(200, 2, epoch=1, seed=3)
    assert a == b
    assert shares(200, 2, epoch=2, seed=3) != a
    assert shares(200, 2, epoch=1, seed=4) != a
    assert shares(10, 2, shuffle=False) == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


@pytest.mark.parametrize("offset", [0, 1, 17, 24, 25])
def test_resume_at_offset_gives_exactly_the_remaining_sequence(offset):
    for rank in range(4):
        full = DistributedBlockSampler(101, rank=rank, world_size=4, seed=9)
        full.set_epoch(3)
        expected = list(full)[offset:]
        resumed = DistributedBlockSampler(101, rank=rank, world_size=4, seed=9)
        resumed.set_epoch(3)
        resumed.set_start(offset)
        assert list(resumed) == expected and len(resumed) == len(expected)
        resumed.set_epoch(3)  # same epoch: the offset stays
        assert list(resumed) == expected
        resumed.set_epoch(4)  # next epoch starts from its beginning
        assert len(list(resumed)) == resumed.samples_per_rank == 25


def test_no_drop_last_pads_evenly_and_bad_arguments_are_refused():
    parts = shares(10, 4, drop_last=False)
    assert all(len(p) == 3 for p in parts) and set(i for p in parts for i in p) == set(range(10))
    assert all(len(p) == 1 for p in shares(1, 3, drop_last=False))
    with pytest.raises(ValueError, match="rank"):
        DistributedBlockSampler(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer ranks"):
        DistributedBlockSampler(3, rank=0, world_size=4)
    with pytest.raises(ValueError, match="offset"):
        DistributedBlockSampler(10).set_start(11)
