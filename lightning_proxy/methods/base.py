"""What a selection method is: what the proxy must record, and how its records become a subset or a batch.

A method names the per-example records it reads (:meth:`SelectionMethod.needs`: statistics such as
``forgetting`` or ``entropy``, and ``embeddings``), and turns a trained run's records (:class:`Records`) into
a subset of the pool of a given size (core-sets) or into the next batch to label (active learning). The
drivers build methods by name (:func:`lightning_proxy.methods.build_method`) and loop over them; which
callbacks record what comes from the callback classes themselves (:func:`callbacks_for`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_proxy.callbacks import EL2N, SCORES, AreaUnderMargin, ForgettingEvents, PostTrainingScores
from lightning_proxy.selection.coverage import per_class
from lightning_proxy.selection.ranking import Ranking, load_ranking

EPOCH_STATISTICS = {cls.statistic: cls for cls in (ForgettingEvents, EL2N, AreaUnderMargin)}
STATISTICS = (*EPOCH_STATISTICS, *SCORES)  # every per-example statistic a run can record
EMBEDDINGS = "embeddings"


def callbacks_for(needs: set[str], augment: bool = False, scored: str | None = None) -> list[dict[str, Any]]:
    """The callbacks (``class_path`` dicts) that record ``needs`` (statistics and ``embeddings``) in a run's folder;
    the scores of the trained model for the pool indices in the file ``scored`` only, when given."""
    unknown = needs - {*STATISTICS, EMBEDDINGS}
    if unknown:
        raise ValueError(f"no callback records {sorted(unknown)}; recordable: {[*STATISTICS, EMBEDDINGS]}")
    out: list[dict[str, Any]] = [
        {"class_path": f"{cls.__module__}.{cls.__name__}"} for name, cls in EPOCH_STATISTICS.items() if name in needs
    ]
    scores = [s for s in SCORES if s in needs]
    if scores or EMBEDDINGS in needs:
        init = {"statistics": scores or ["entropy"], "embeddings": EMBEDDINGS in needs, "augment": augment}
        if scored is not None:
            init["indices"] = scored
        out.append({"class_path": f"{PostTrainingScores.__module__}.PostTrainingScores", "init_args": init})
    return out


@dataclass
class Records:
    """What a trained run recorded: its ranking files and embeddings by name, and the pool's labels.

    Each file is read once, however many subsets are chosen from it.
    """

    files: Mapping[str, Path]
    targets: np.ndarray | None = None  # the pool's labels, in pool order: what a core-set subset is balanced by
    folder: Path | None = None
    _rankings: dict[str, Ranking] = field(default_factory=dict, repr=False)

    def ranking(self, name: str) -> Ranking:
        if name not in self._rankings:
            if name not in self.files:
                raise FileNotFoundError(
                    f"the run in {self.folder} recorded no {name} (it has {sorted(self.files)}): it was trained for "
                    "other methods; remove that folder to train it again with what these need, or give another output"
                )
            self._rankings[name] = load_ranking(self.files[name])
        return self._rankings[name]

    @functools.cached_property
    def embeddings(self) -> np.ndarray:
        """The ``(N, D)`` embeddings, memory-mapped (NaN rows where an example was not scored)."""
        if EMBEDDINGS not in self.files:
            raise FileNotFoundError(f"the run in {self.folder} recorded no embeddings (it has {sorted(self.files)})")
        return np.load(self.files[EMBEDDINGS], mmap_mode="r")

    def scores(self, name: str, candidates: np.ndarray, who: str) -> np.ndarray:
        """The ranking's score of each of the ``candidates`` (pool indices); every one must be scored."""
        scores = self.ranking(name).dense_scores(len(self.targets))[candidates]
        if np.isnan(scores).any():
            raise ValueError(f"{who}: {name} scores {int((~np.isnan(scores)).sum())} of the {len(scores)} candidates")
        return scores

    def higher_is_harder(self, name: str) -> bool:
        return self.ranking(name).metadata.get("direction") != "higher_is_easier"

    def hardest_first(self, name: str) -> np.ndarray:
        """The ranking's pool indices, hardest (or most uncertain) first, by its recorded direction."""
        ranking = self.ranking(name)
        return ranking.indices if self.higher_is_harder(name) else ranking.indices[::-1]


class SelectionMethod:
    """Base class: a method's name, what it reads, and how a subset (or an active-learning batch) is chosen.

    ``oracle``: the target's own run on everything can choose by the same method (SVP's oracle).
    ``active``: the method picks active-learning batches.
    ``balanced``: the method's own choice of class balance (True: each class's share of the pool; False: over
    the whole pool); None follows the experiment's ``balanced``.
    """

    name: str = "method"
    oracle: bool = False
    active: bool = False
    balanced: bool | None = None

    def needs(self) -> set[str]:
        """The statistics (and ``embeddings``) the run must record for this method."""
        return set()

    def choose(self, records: Records, candidates: np.ndarray, size: int, seed: int) -> np.ndarray:
        """``size`` of the ``candidates`` (pool indices), by this method; what :meth:`subset` calls per class."""
        raise NotImplementedError

    def subset(self, records: Records, size: int, seed: int = 0, balanced: bool = False) -> np.ndarray:
        """Sorted pool indices of a subset of exactly ``size``; with ``balanced`` (or the method's own
        :attr:`balanced`, which wins) every class keeps its share of the pool
        (:func:`~lightning_proxy.selection.coverage.class_quotas`)."""
        pool = np.arange(len(records.targets))
        if size > len(pool):
            raise ValueError(f"{self.name}: a subset of {size} from a pool of {len(pool)} is not possible")
        if balanced if self.balanced is None else self.balanced:
            chosen = per_class(records.targets, pool, size, lambda c, q: self.choose(records, c, q, seed), seed)
        else:
            chosen = self.choose(records, pool, size, seed)
        if len(chosen) != size or len(np.unique(chosen)) != size:
            raise RuntimeError(f"{self.name} chose {len(np.unique(chosen))} distinct examples where {size} were asked")
        return np.sort(chosen)

    def next_batch(self, records: Records, pool: np.ndarray, labelled: np.ndarray, size: int, seed: int) -> np.ndarray:
        """The ``size`` dataset indices of ``pool`` to label next (not in ``labelled``), in the order chosen."""
        raise ValueError(f"{self.name} is a core-set method: it picks no active-learning batch")

    def __repr__(self) -> str:
        return self.name


def named(base: str, *parts: str | bool) -> str:
    """A method's name with its non-default options (``ccs_forgetting_cutoff0.2``), so variants compared side by
    side have names of their own; a false part is left out."""
    return "_".join([base, *(str(p) for p in parts if p)])


def class_shares(indices: np.ndarray, targets: np.ndarray) -> dict[int, float]:
    """Each class's share of the subset over its share of the pool (1: as in the pool; 0: left out)."""
    targets = np.asarray(targets)
    classes, counts = np.unique(targets, return_counts=True)
    kept = np.bincount(targets[np.asarray(indices, dtype=np.int64)], minlength=int(classes.max()) + 1)[classes]
    size = max(len(indices), 1)
    return {int(c): float(k / size / (n / len(targets))) for c, k, n in zip(classes, kept, counts, strict=True)}
