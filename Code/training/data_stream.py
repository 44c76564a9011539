"""Endless, resumable batch streams: the same batches an uninterrupted run would have seen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from Code.data_pipeline.distributed_indexed import DistributedBlockSampler


def endless_batches(data: Dataset, sampler: DistributedBlockSampler, loader_kwargs: dict[str, Any], seed: int,
                    start_batch: int) -> Iterator[Any]:
    """Batches over epochs forever, starting `start_batch` batches in, as the interrupted run would have."""
    per_epoch = sampler.samples_per_rank // loader_kwargs["batch_size"]
    if per_epoch < 1:
        raise ValueError(f"{sampler.samples_per_rank} samples per rank make no batch of {loader_kwargs['batch_size']}:"
                         " lower --micro-batch-size or add data")
    epoch, offset = divmod(start_batch, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        sampler.set_start(offset * loader_kwargs["batch_size"])
        # An own generator keeps worker seeding off the global RNG, which dropout replays on resume.
        loader = DataLoader(data, sampler=sampler, generator=torch.Generator().manual_seed(seed + epoch),
                            **loader_kwargs)
        yield from loader
        epoch, offset = epoch + 1, 0
