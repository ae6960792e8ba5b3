"""Greedy k-centers on the proxy's embeddings (SVP): the subset that covers the pool's feature space best."""

from __future__ import annotations

import numpy as np

from lightning_proxy.methods.base import EMBEDDINGS, Records, SelectionMethod
from lightning_proxy.selection.kcenters import greedy_k_centers


def start_count(start: float, candidates: int, pool: int) -> int:
    """``start`` random points as a number: a share of the candidates (below 1), or a count (>= 1) over the
    whole pool, which a class among the candidates gets its share of."""
    if start <= 0 or (start >= 1 and start != int(start)):
        raise ValueError(f"kcenters_start must be a count >= 1 or a share of the pool in (0, 1), got {start}")
    if start < 1:
        return max(1, round(start * candidates))
    return max(1, round(start * candidates / pool))


class KCenters(SelectionMethod):
    """Farthest-first traversal in the penultimate features, from ``start`` random points that stay in the
    subset (SVP starts from 1,000; ``1`` is the classic start from one seeded point). Per class with
    ``balanced``; in active learning, from the labelled set."""

    name = "kcenters"
    active = True

    def __init__(self, start: float = 1) -> None:
        start_count(start, 1, 1)  # refused before anything trains
        self.start = start

    def needs(self) -> set[str]:
        return {EMBEDDINGS}

    def choose(self, records: Records, candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
        rows = np.asarray(records.embeddings[candidates])
        count = min(size, start_count(self.start, len(candidates), len(records.targets)))
        if count == 1:
            order = greedy_k_centers(rows, size, seed=seed).numpy()
        else:
            first = np.random.default_rng(seed).choice(len(candidates), count, replace=False)
            rest = greedy_k_centers(rows, size - count, start=first).numpy() if size > count else []
            order = np.concatenate([first, rest]).astype(np.int64)
        return candidates[order]

    def next_batch(self, records: Records, pool: np.ndarray, labelled: np.ndarray, size: int, seed: int) -> np.ndarray:
        rows = np.ascontiguousarray(records.embeddings[pool])  # row p = pool position p
        start = np.searchsorted(pool, labelled)  # pool positions of the labelled examples
        return pool[greedy_k_centers(rows, size, start=start).numpy()]
