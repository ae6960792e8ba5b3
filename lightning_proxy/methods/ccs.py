"""Coverage-centric coreset selection (Zheng et al., ICLR 2023) over any recorded statistic."""

from __future__ import annotations

import numpy as np

from lightning_proxy.methods.base import STATISTICS, Records, SelectionMethod, named
from lightning_proxy.selection.coverage import ccs, paper_cutoff


class CCS(SelectionMethod):
    """The hardest ``cutoff`` share removed (default: the paper's rule for the pruning rate), then the budget
    spread over ``strata`` equal-width strata of ``statistic`` (AUM by default, as the paper), the smallest
    strata filled first.

    Within each class by default (``balanced``: every class its share of the pool, its own strata): on small
    pools and short proxies the paper's strata over the whole pool keep some classes at a fraction of their
    share and lost to random by up to 12 points, where per class they stayed level with it (docs/results.md,
    "Which method, when"). ``balanced: false`` (named ``ccs_unbalanced``) is the paper's form; None follows
    the experiment's ``balanced``."""

    name = "ccs"
    oracle = True

    def __init__(
        self, statistic: str = "aum", cutoff: float | None = None, strata: int = 50, balanced: bool | None = True
    ) -> None:
        if statistic not in STATISTICS:
            raise ValueError(f"ccs: statistic must be one of {list(STATISTICS)}, got {statistic!r}")
        if (cutoff is not None and not 0.0 <= cutoff < 1.0) or strata < 1:
            raise ValueError(f"ccs: cutoff is a share in [0, 1) and strata at least 1, got {cutoff} and {strata}")
        self.statistic, self.cutoff, self.strata, self.balanced = statistic, cutoff, strata, balanced
        self.name = named(
            "ccs",
            statistic != "aum" and statistic,
            balanced is False and "unbalanced",
            cutoff is not None and f"cutoff{cutoff:g}",
            strata != 50 and f"strata{strata}",
        )

    def needs(self) -> set[str]:
        return {self.statistic}

    def choose(self, records: Records, candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
        scores = records.scores(self.statistic, candidates, "ccs")
        cutoff = paper_cutoff(size / len(candidates)) if self.cutoff is None else self.cutoff
        return candidates[ccs(scores, size, records.higher_is_harder(self.statistic), cutoff, self.strata, seed)]
