"""The hardest (or most uncertain) first by one recorded statistic: SVP's and the forgetting paper's selection."""

from __future__ import annotations

import numpy as np

from lightning_proxy.methods.base import Records, SelectionMethod

UNCERTAINTY = ("least_confidence", "entropy", "margin")  # scores that need no label: active learning's


class Ranked(SelectionMethod):
    """Keep the hardest examples by ``statistic`` (forgetting events, EL2N, AUM, loss) or the most uncertain
    (least confidence, entropy, margin), which end is which read from the ranking's direction."""

    oracle = True

    def __init__(self, statistic: str) -> None:
        self.name = self.statistic = statistic
        self.active = statistic in UNCERTAINTY

    def needs(self) -> set[str]:
        return {self.statistic}

    def choose(self, records: Records, candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
        order = records.hardest_first(self.statistic)
        order = order[np.isin(order, candidates)]
        if len(order) < size:
            raise ValueError(f"{self.statistic} ranks {len(order)} of the candidates; {size} were asked")
        return order[:size]

    def next_batch(self, records: Records, pool: np.ndarray, labelled: np.ndarray, size: int, seed: int) -> np.ndarray:
        if not self.active:
            raise ValueError(f"{self.statistic} reads the labels: active learning picks by {list(UNCERTAINTY)}")
        unlabelled = np.setdiff1d(pool, labelled)
        order = records.hardest_first(self.statistic)
        order = order[np.isin(order, unlabelled)]  # most uncertain first
        if len(order) < size:
            raise ValueError(f"{records.files[self.statistic]} scores {len(order)} unlabelled examples, {size} needed")
        return order[:size]
