"""D2-Pruning (Maharana et al., ICLR 2024) over the proxy's embeddings and one difficulty statistic."""

from __future__ import annotations

import numpy as np
import torch

from lightning_proxy.methods.base import EMBEDDINGS, STATISTICS, Records, SelectionMethod, named
from lightning_proxy.selection.coverage import paper_cutoff, without_hardest
from lightning_proxy.selection.graph import d2_pruning


class D2Pruning(SelectionMethod):
    """The hardest ``cutoff`` share removed (default: CCS's rule for the pruning rate, as the paper's code
    does), then message passing on the k-NN graph of the embeddings (:mod:`~lightning_proxy.selection.graph`)
    with ``statistic`` as each node's difficulty (forgetting events by default, the paper's recipe; never
    learned counts as one more than the most forgotten). Within each class by default (``balanced``, the
    paper's class mode), as CCS; ``balanced: false`` (``d2_unbalanced``) over the whole pool.
    """

    name = "d2"

    def __init__(
        self,
        statistic: str = "forgetting",
        k: int = 5,
        gamma_forward: float = 1.0,
        gamma_reverse: float = 0.1,
        cutoff: float | None = None,
        balanced: bool | None = True,
    ) -> None:
        if statistic not in STATISTICS:
            raise ValueError(f"d2: statistic must be one of {list(STATISTICS)}, got {statistic!r}")
        if k < 1 or gamma_forward < 0 or gamma_reverse < 0 or (cutoff is not None and not 0.0 <= cutoff < 1.0):
            raise ValueError(
                f"d2: k must be at least 1, the gammas at least 0 and cutoff in [0, 1); got {k}, {gamma_forward}, "
                f"{gamma_reverse}, {cutoff}"
            )
        self.statistic, self.k, self.cutoff, self.balanced = statistic, k, cutoff, balanced
        self.name = named("d2", statistic != "forgetting" and statistic, balanced is False and "unbalanced")
        self.gamma_forward, self.gamma_reverse = gamma_forward, gamma_reverse

    def needs(self) -> set[str]:
        return {self.statistic, EMBEDDINGS}

    def choose(self, records: Records, candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
        raw = records.scores(self.statistic, candidates, "d2")
        finite = raw[np.isfinite(raw)]
        top = finite.max(initial=0.0)
        raw = np.where(np.isposinf(raw), top + 1.0, np.where(np.isneginf(raw), finite.min(initial=0.0) - 1.0, raw))
        difficulty = raw - raw.min() if records.higher_is_harder(self.statistic) else raw.max() - raw
        cutoff = paper_cutoff(size / len(candidates)) if self.cutoff is None else self.cutoff
        kept = without_hardest(difficulty, size, True, cutoff, np.random.default_rng(seed))
        device = "cuda" if torch.cuda.is_available() else None
        rows = np.asarray(records.embeddings[candidates[kept]])
        order = d2_pruning(rows, difficulty[kept], size, self.k, self.gamma_forward, self.gamma_reverse, seed, device)
        return candidates[kept[order]]
