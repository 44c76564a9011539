"""A distributed sampler over block indices that a resumed run can restart mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class DistributedBlockSampler(Sampler[int]):
    """Each rank's disjoint share of `range(num_samples)`, shuffled by (seed, epoch).

    The epoch's order is one permutation shared by all ranks; rank r takes positions r, r+W, r+2W, ...
    drop_last=True drops the permutation's ragged tail (fewer than W samples, a different few each
    epoch) so every rank gets the same count and every kept sample appears once; drop_last=False pads
    with the first samples instead, like torch's DistributedSampler.

    Resuming: `set_epoch(e)` then `set_start(k)` makes the iterator yield exactly what an uninterrupted
    run would have yielded after its first k samples on this rank. The start offset is kept until the
    epoch changes.
    """

    def __init__(
        self,
        num_samples: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.start = 0
        if drop_last:
            self.samples_per_rank = num_samples // world_size
        else:
            self.samples_per_rank = -(-num_samples // world_size)
        if self.samples_per_rank == 0:
            raise ValueError(
                f"{num_samples} samples cannot give each of {world_size} ranks one: use more data or fewer ranks"
            )

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def set_start(self, offset: int) -> None:
        """Skip the first `offset` samples of this rank's share in the current epoch."""
        if not 0 <= offset <= self.samples_per_rank:
            raise ValueError(f"start offset {offset} is outside 0..{self.samples_per_rank} (samples per rank)")
        self.start = offset

    def epoch_order(self) -> np.ndarray:
        """The whole epoch's order, before it is dealt to ranks (identical on every rank)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        total = self.samples_per_rank * self.world_size
        if total > len(order):  # drop_last=False: pad with the first samples
            order = np.resize(order, total)  # repeats the order cyclically
        return order[:total]

    def indices(self) -> np.ndarray:
        """This rank's share for the current epoch, from the start offset on."""
        return self.epoch_order()[self.rank :: self.world_size][self.start :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.samples_per_rank - self.start
