"""An epoch's batches of a set of pool indices, shuffled and split over ranks, for pools that make their own
batches (the image tensor path, text); the per-item ``DataLoader`` path leaves both to Lightning's sampler.

Shuffling is a seeded ``randperm`` per epoch (seed ``PL_GLOBAL_SEED``, as Lightning's own distributed
sampler), the same on every rank; each rank takes its shard, padded as ``DistributedSampler`` pads, so every
example is seen once per epoch across ranks. Lightning calls ``sampler.set_epoch`` at each epoch. The image
tensor path and the text path are :class:`ShardedBatches` that say how one batch of pool indices is made.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ShardedShuffle(Sampler[int]):
    """This rank's share of an epoch's order of ``n`` positions: seeded ``randperm`` (or ``0..n-1``), padded
    to a multiple of ``world_size`` by repeating its start, every ``world_size``-th position from ``rank``."""

    def __init__(self, n: int, shuffle: bool, rank: int = 0, world_size: int = 1, seed: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.n, self.shuffle, self.rank, self.world_size = n, shuffle, rank, world_size
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def order(self) -> torch.Tensor:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        total = len(self) * self.world_size
        if total > self.n:
            order = torch.cat([order] * math.ceil(total / self.n))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())


class ShardedBatches:
    """Batches of ``indices`` in a :class:`ShardedShuffle` order (``sampler``), ``batch_size`` at a time: what the
    image and the text batches share. Lightning reads the order from ``sampler`` and calls its ``set_epoch``."""

    batch_sampler = None  # as a DataLoader with its own batching
    indices: Sequence[int]
    batch_size: int
    sampler: ShardedShuffle

    def shard(self, rank: int, world_size: int) -> ShardedBatches:
        """The same batches split over ``world_size`` processes (as ``DistributedSampler`` would)."""
        other = copy.copy(self)
        other.sampler = ShardedShuffle(len(self.indices), self.sampler.shuffle, rank, world_size, self.sampler.seed)
        return other

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)
