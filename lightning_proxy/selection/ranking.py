"""Ranking files: per-example scores with provenance, readable with numpy alone.

A ranking file is an ``.npz`` with three arrays:

- ``indices``: example indices into the full training pool, highest score first;
- ``scores``: ``scores[k]`` is the score of ``indices[k]`` (so it never increases);
- ``metadata``: a JSON string (statistic, direction, model, epochs, seed, dataset, pool size
  ``num_examples`` and ``fingerprint`` of the pool's targets, ...).

Read it with ``np.load(path)`` or :func:`load_ranking`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_proxy.files import read_npz, write_npz

REQUIRED_METADATA = ("statistic", "num_examples", "fingerprint")


def pool_fingerprint(targets: Any) -> str:
    """A cheap identity of a training pool: a hash of its targets in pool order (size included)."""
    array = np.ascontiguousarray(np.asarray(targets, dtype=np.int64))
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def pool_identity(pool: Any) -> dict[str, Any]:
    """``num_examples``, ``fingerprint`` and ``dataset`` of a pool: a datamodule (its ``pool_size`` and
    ``fingerprint``, or its ``targets``), the pool's targets themselves in pool order, or a ranking of it."""
    if isinstance(pool, Ranking):
        return {key: pool.metadata.get(key) for key in ("num_examples", "fingerprint", "dataset")}
    if isinstance(pool, np.ndarray | list | tuple) or hasattr(pool, "__array__"):
        targets = np.asarray(pool)
        return {"num_examples": len(targets), "fingerprint": pool_fingerprint(targets), "dataset": None}
    fingerprint, targets = getattr(pool, "fingerprint", None), getattr(pool, "targets", None)
    if fingerprint is None and targets is None:
        raise ValueError(
            f"{type(pool).__name__} has neither a fingerprint nor targets: give it a `targets` attribute (the "
            "pool's labels in pool order), or pass the targets themselves"
        )
    size = getattr(pool, "pool_size", None)
    return {
        "num_examples": int(size) if size is not None else len(targets),
        "fingerprint": fingerprint if fingerprint is not None else pool_fingerprint(targets),
        "dataset": getattr(pool, "name", type(pool).__name__),
    }


@dataclass(frozen=True)
class Ranking:
    """Pool indices in rank order (highest score first), their scores and the provenance."""

    indices: np.ndarray
    scores: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, scores: Any, metadata: dict[str, Any], indices: Any = None) -> Ranking:
        """Sort ``scores`` (of ``indices``, default ``arange(len(scores))``) highest first.

        Ties are broken by a seeded permutation of the pool (``tie_seed`` in the metadata, else its ``seed``,
        else 0), as SVP's sort over a shuffled pool does at random: on a pool listed by class an index
        tie-break would keep the first classes' tied examples and drop the last ones'. Without
        ``num_examples`` in the metadata ties go by index.
        """
        scores = np.asarray(scores, dtype=np.float64)
        indices = np.arange(len(scores)) if indices is None else np.asarray(indices, dtype=np.int64)
        if scores.shape != indices.shape or scores.ndim != 1:
            raise ValueError(f"scores {scores.shape} and indices {indices.shape} must be 1-D of one length")
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN; a ranking needs a score for every example")
        metadata = dict(metadata)
        tie = indices
        n = metadata.get("num_examples")
        if n is not None and len(indices) and indices.min() >= 0 and indices.max() < int(n):
            seed = metadata.get("tie_seed", metadata.get("seed"))
            metadata["tie_seed"] = seed = int(seed) if isinstance(seed, int) else 0
            tie = np.random.default_rng(seed).permutation(int(n))[indices]
        order = np.lexsort((tie, -scores))
        return cls(indices=indices[order], scores=scores[order], metadata=metadata)

    @classmethod
    def for_pool(cls, scores: Any, pool: Any, statistic: str, indices: Any = None, **metadata: Any) -> Ranking:
        """A ranking of a user's own ``scores`` (of ``indices`` into the pool, default all of it, higher first)
        that ``--data.subset.ranking`` and ``select_subset`` accept: the pool's size and fingerprint are
        filled from ``pool``, a datamodule or the pool's targets (see :func:`pool_identity`).

        ``Ranking.for_pool(my_scores, datamodule, "my_score", direction="higher_is_harder")``
        """
        identity = pool_identity(pool)
        ranking = cls.from_scores(scores, {**identity, "statistic": statistic, **metadata}, indices)
        problems = ranking_problems(ranking.indices, ranking.scores, ranking.metadata)
        if problems:
            raise ValueError("; ".join(problems))
        return ranking

    @classmethod
    def from_order(cls, order: Any, pool: Any, statistic: str, **metadata: Any) -> Ranking:
        """The pool indices ``order`` (e.g. greedy k-centers' choices) as a ranking, the first scoring highest."""
        order = np.asarray(order, dtype=np.int64)
        scores = np.arange(len(order), 0, -1, dtype=np.float64)
        return cls.for_pool(scores, pool, statistic, order, **{"direction": "higher_is_chosen_first", **metadata})

    def dense_scores(self, num_examples: int) -> np.ndarray:
        """Every pool example's score in pool order, NaN where the ranking does not score it."""
        out = np.full(num_examples, np.nan)
        out[self.indices] = self.scores
        return out

    def __len__(self) -> int:
        return len(self.indices)

    def check_pool(self, num_examples: int, fingerprint: str, where: str = "this dataset") -> None:
        """Refuse a ranking made on another pool (size or targets differ)."""
        made_on = self.metadata.get("dataset", "an unnamed dataset")
        if int(self.metadata["num_examples"]) != num_examples:
            raise ValueError(
                f"ranking was made on {made_on} with a pool of {self.metadata['num_examples']} examples, "
                f"but {where} has {num_examples}: rank the same training pool you select from"
            )
        if self.metadata["fingerprint"] != fingerprint:
            raise ValueError(
                f"ranking was made on {made_on} whose targets (fingerprint {self.metadata['fingerprint']}) "
                f"differ from {where}'s (fingerprint {fingerprint}): the pool order or labels changed; "
                "rank the same training pool you select from"
            )


def ranking_problems(indices: np.ndarray, scores: np.ndarray, metadata: dict[str, Any]) -> list[str]:
    """What keeps arrays and metadata from being a valid ranking (empty when they are one)."""
    problems = [f"metadata lacks '{key}'" for key in REQUIRED_METADATA if key not in metadata]
    if indices.ndim != 1 or scores.shape != indices.shape:
        problems.append(f"indices {indices.shape} and scores {scores.shape} must be 1-D of one length")
    elif not np.issubdtype(indices.dtype, np.integer):
        problems.append(f"indices must be integers, got {indices.dtype}")
    elif len(indices) and "num_examples" in metadata:
        n = int(metadata["num_examples"])
        if indices.min() < 0 or indices.max() >= n:
            problems.append(f"indices fall outside the pool [0, {n})")
        if len(np.unique(indices)) != len(indices):
            problems.append("indices repeat")
    return problems


def save_ranking(path: str | os.PathLike, ranking: Ranking) -> Path:
    """Write atomically (temp file in the same folder, then rename), so a crash never leaves half a file.

    What :func:`load_ranking` would refuse is refused here, before anything is written; a ranking built with
    :meth:`Ranking.for_pool` has everything it needs.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"ranking files end in .npz, got {path}")
    indices, scores = np.asarray(ranking.indices), np.asarray(ranking.scores)
    problems = ranking_problems(indices, scores, ranking.metadata)
    if problems:
        raise ValueError(
            f"cannot save {path} as a ranking: " + "; ".join(problems) + ". Build it with Ranking.for_pool(scores, "
            "datamodule_or_targets, statistic), which fills the pool's size and fingerprint"
        )
    return write_npz(
        path,
        {"format": 1, **ranking.metadata},
        indices=np.asarray(ranking.indices, dtype=np.int64),
        scores=np.asarray(ranking.scores, dtype=np.float64),
    )


def load_ranking(path: str | os.PathLike) -> Ranking:
    """Read and validate a ranking file; a malformed or truncated file raises a ``ValueError`` naming it."""
    path = Path(path)
    hint = "callbacks write them under their dirpath"
    arrays, metadata = read_npz(path, ("indices", "scores"), "ranking file", hint)
    indices, scores = arrays["indices"], arrays["scores"]
    problems = ranking_problems(indices, scores, metadata)
    if problems:
        raise ValueError(f"{path} is not a valid ranking file: " + "; ".join(problems))
    return Ranking(indices=indices.astype(np.int64), scores=scores.astype(np.float64), metadata=metadata)


# what makes runs one proxy's: a ranking aggregated across them is one model's view of one statistic on one pool
SAME_RUN_KEYS = ("statistic", "direction", "never_learned", "model", "fingerprint", "dataset")


def aggregate_rankings(rankings: Sequence[Ranking], how: str = "mean", allow_mixed: bool = False) -> Ranking:
    """One ranking from several runs of one proxy (seeds): each example's scores summed or averaged.

    The runs must score the same statistic with the same model on the same pool (size and fingerprint) and
    the same examples. ``allow_mixed`` combines runs that differ in :data:`SAME_RUN_KEYS` (other models,
    statistics or pools of one size) and records every run's value of each such key under ``mixed``, the key
    itself then holding the list. The result's metadata is otherwise the first run's, with ``seeds``,
    ``aggregation`` and ``runs`` added.

    An example never learned in a run (score ``inf``) orders as Toneva et al.'s summed counts do: by the
    number of runs in which it was never learned, then by its combined finite scores. The score written is
    finite: ``runs never learned * never_learned_weight + combined finite score`` (both in the metadata).
    """
    if how not in ("mean", "sum"):
        raise ValueError(f"how must be 'mean' or 'sum', got {how!r}")
    if not rankings:
        raise ValueError("aggregate_rankings needs at least one ranking")
    first = rankings[0].metadata
    for i, ranking in enumerate(rankings[1:], start=1):
        if int(ranking.metadata["num_examples"]) != int(first["num_examples"]):
            raise ValueError(
                f"ranking {i} was made on a pool of {ranking.metadata['num_examples']} examples but ranking 0 on "
                f"{first['num_examples']}: aggregate rankings of one pool"
            )
    mixed = {}
    for key in SAME_RUN_KEYS:
        values = [r.metadata.get(key) for r in rankings]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            mixed[key] = values
    if mixed and not allow_mixed:
        key, values = next(iter(mixed.items()))
        i = next(i for i, v in enumerate(values) if v != values[0])
        raise ValueError(
            f"ranking {i} has {key}={values[i]!r} but ranking 0 has {values[0]!r}: aggregate runs of one model and "
            "statistic on one pool (allow_mixed / --allow_mixed true combines them and records each run's)"
        )
    order = [np.argsort(r.indices) for r in rankings]
    indices = rankings[0].indices[order[0]]
    for i, (ranking, o) in enumerate(zip(rankings, order, strict=True)):
        if not np.array_equal(ranking.indices[o], indices):
            raise ValueError(f"ranking {i} scores other examples than ranking 0: aggregate runs on one subset")
    stacked = np.stack([r.scores[o] for r, o in zip(rankings, order, strict=True)])
    infinite = np.isposinf(stacked)  # never learned in that run (forgetting's inf)
    never = infinite.sum(axis=0)
    finite = np.where(infinite, 0.0, stacked)
    scores = finite.sum(axis=0) if how == "sum" else finite.mean(axis=0)
    extra: dict[str, Any] = {}
    if never.any():
        # Toneva's order: by the runs never learned, then by the combined finite counts, as one finite score
        weight = float(np.nanmax(np.abs(scores))) + 1.0
        scores = never * weight + scores
        extra = {"never_learned_weight": weight, "never_learned_runs": "score // never_learned_weight"}
    metadata = {
        **first,
        **mixed,
        "seeds": [r.metadata.get("seed") for r in rankings],
        "aggregation": how,
        "runs": len(rankings),
        **extra,
    }
    if mixed:
        metadata["mixed"] = sorted(mixed)
    metadata.pop("seed", None)
    return Ranking.from_scores(scores, metadata, indices)
