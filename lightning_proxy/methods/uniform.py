"""A seeded random subset: the baseline every method stands beside, at the same size and seed."""

from __future__ import annotations

import numpy as np

from lightning_proxy.methods.base import Records, SelectionMethod


class RandomSubset(SelectionMethod):
    """Examples drawn at random with the seed (per class with ``balanced``)."""

    name = "random"
    active = True

    def choose(self, records: Records, candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).permutation(candidates)[:size]

    def next_batch(self, records: Records, pool: np.ndarray, labelled: np.ndarray, size: int, seed: int) -> np.ndarray:
        unlabelled = np.setdiff1d(pool, labelled)
        if size > len(unlabelled):
            raise ValueError(f"cannot label {size} more: only {len(unlabelled)} pool examples are unlabelled")
        return np.random.default_rng(seed).choice(unlabelled, size, replace=False)
