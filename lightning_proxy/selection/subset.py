"""Subset rules: which examples of the full training pool a run trains on.

Everything here works on pool indices (positions in the full training pool), so a subset of a subset,
a shuffled loader or a DDP rank never changes which example an index names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lightning_proxy.selection.coverage import ccs, class_quotas, paper_cutoff, per_class
from lightning_proxy.selection.ranking import Ranking, load_ranking, pool_fingerprint


@dataclass
class SubsetSpec:
    """Which part of the training pool to train on.

    Rules combine in this order: ``classes`` restricts the pool (and validation) to some classes, with
    labels remapped to ``0..k-1``; then exactly one of ``indices`` (an explicit list, e.g. active
    learning's labelled set), ``ranking`` (keep the ``fraction`` or ``count`` with the highest or lowest
    scores after skipping a ``skip`` band at that end) or a seeded random ``fraction`` / ``count``.
    ``balanced`` keeps every class's share of the pool (quotas that add up to the size asked). With
    ``rule: ccs`` a ranking is not cut at one end: coverage-centric selection removes its hardest ``cutoff``
    share (by the ranking's direction), then spreads the size over ``strata`` equal-width strata of its scores.

    Args:
        fraction: share of the (class-restricted) pool to keep, in (0, 1].
        count: number of examples to keep instead of a fraction.
        classes: class names to keep (numbers are read as names, e.g. digits' ``[1, 4, 7]``), or a number
            of classes drawn with ``seed``; at least two, as a classifier needs.
        ranking: path of a ranking file (``.npz``) made on this training pool.
        keep: keep the ``highest`` or the ``lowest`` scores of the ranking.
        skip: share of the pool dropped first at the kept end (e.g. 0.05 drops the top 5 % before keeping).
        balanced: keep the same share of every class.
        indices: explicit pool indices, or the path of a ``.npy``, ``.txt`` or ``.json`` file holding them.
        other_classes: keep the classes that ``classes`` leaves out instead (the 000 paper's "other half").
        seed: seed of the random draws (random fraction, class draw, CCS's strata, quota ties).
        rule: how a ranking chooses: ``top`` (the kept end, after ``skip``) or ``ccs`` (coverage-centric).
        strata: CCS's number of equal-width score strata (its paper's 50).
        cutoff: CCS's share of the pool removed as the hardest first; default by the pruning rate (none below
            70 % pruned, 10 % at 70 %, 20 % at 80 %, 30 % at 90 %: its authors' settings at 80 and 90 %).
    """

    fraction: float = 1.0
    count: int | None = None
    classes: list[str | int] | int | None = None
    ranking: str | None = None
    keep: Literal["highest", "lowest"] = "highest"
    skip: float = 0.0
    balanced: bool = False
    indices: list[int] | str | None = None
    other_classes: bool = False
    seed: int = 0
    rule: Literal["top", "ccs"] = "top"
    strata: int = 50
    cutoff: float | None = None

    def __post_init__(self) -> None:
        if self.ranking is not None and not isinstance(self.ranking, str | os.PathLike):
            raise TypeError(
                f"subset.ranking is the path of a ranking file (.npz), got {type(self.ranking).__name__}: "
                "write a Ranking with lightning_proxy.selection.save_ranking and pass its path"
            )
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"subset.fraction must be in (0, 1], got {self.fraction}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"subset.count must be a positive number of examples, got {self.count}")
        if self.count is not None and self.fraction != 1.0:
            raise ValueError("give subset.fraction or subset.count, not both")
        if not 0.0 <= self.skip < 1.0:
            raise ValueError(f"subset.skip must be in [0, 1), got {self.skip}")
        if self.skip and self.ranking is None:
            raise ValueError("subset.skip drops a band of a ranking: give subset.ranking too")
        if self.count is None and self.skip + self.fraction > 1.0 + 1e-9:
            raise ValueError(
                f"subset.skip + subset.fraction = {self.skip + self.fraction:g} exceeds the pool; lower one"
            )
        if self.keep not in ("highest", "lowest"):
            raise ValueError(f"subset.keep must be 'highest' or 'lowest', got {self.keep!r}")
        if self.indices is not None and (self.ranking is not None or self.fraction != 1.0 or self.count):
            raise ValueError("subset.indices is an explicit list: do not combine it with ranking/fraction/count")
        if self.rule not in ("top", "ccs"):
            raise ValueError(f"subset.rule must be 'top' or 'ccs', got {self.rule!r}")
        if self.rule == "ccs" and (self.ranking is None or self.skip):
            raise ValueError(
                "subset.rule ccs chooses from a ranking's scores (give subset.ranking) and removes its own hardest "
                "share (subset.cutoff, not subset.skip)"
            )
        if self.strata < 1 or (self.cutoff is not None and not 0.0 <= self.cutoff < 1.0):
            raise ValueError(
                f"subset.strata must be at least 1 and subset.cutoff in [0, 1), got {self.strata} and {self.cutoff}"
            )
        if self.other_classes and self.classes is None:
            raise ValueError("subset.other_classes keeps the classes that subset.classes leaves out: give classes too")
        if isinstance(self.classes, int) and self.classes < 2:
            raise ValueError(f"subset.classes must keep at least 2 classes, got {self.classes}")
        if isinstance(self.classes, list):
            if len(self.classes) < 2:
                raise ValueError(f"subset.classes must name at least 2 classes, got {self.classes}")
            self.classes = [str(name) for name in self.classes]


# a datamodule's hyperparameters hold its SubsetSpec: checkpoints load with torch's safe (weights-only) unpickler
torch.serialization.add_safe_globals([SubsetSpec])


def choose_classes(spec: SubsetSpec, class_names: list[str]) -> list[int]:
    """The kept class ids in ascending order (their new labels are their positions in this list)."""
    if spec.classes is None:
        return list(range(len(class_names)))
    chosen = _named_or_drawn_classes(spec, class_names)
    if not spec.other_classes:
        return chosen
    rest = sorted(set(range(len(class_names))) - set(chosen))
    if len(rest) < 2:
        raise ValueError(
            f"subset.other_classes leaves {len(rest)} class(es) of {len(class_names)}; a classifier needs 2"
        )
    return rest


def _named_or_drawn_classes(spec: SubsetSpec, class_names: list[str]) -> list[int]:
    if isinstance(spec.classes, int):
        if spec.classes > len(class_names):
            raise ValueError(f"subset.classes={spec.classes} but the dataset has {len(class_names)} classes")
        rng = np.random.default_rng(spec.seed)
        return sorted(rng.permutation(len(class_names))[: spec.classes].tolist())
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in spec.classes if name not in lookup]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; the dataset's classes are {class_names}")
    if len(set(spec.classes)) != len(spec.classes):
        raise ValueError(f"subset.classes repeats a name: {spec.classes}")
    return sorted(lookup[name] for name in spec.classes)


def read_indices(
    source: list[int] | str | Path, what: str = "subset.indices", pool_size: int | None = None, where: str = ""
) -> np.ndarray:
    """An explicit index list from a list or a ``.npy`` / ``.txt`` / ``.json`` file, checked against ``pool_size``.

    ``what`` and ``where`` name the list and the pool in errors.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        what = f"{what} {path}"
        if not path.is_file():
            raise FileNotFoundError(f"{what}: no such file")
        if path.suffix == ".npy":
            try:
                values = np.load(path, allow_pickle=False)
            except ValueError as error:
                if "allow_pickle" not in str(error):
                    raise ValueError(f"{what} is not a readable .npy file: {error}") from None
                raise ValueError(
                    f"{what} holds Python objects (a pickle), which are never loaded: save the indices as a plain "
                    "integer array, np.save(path, np.asarray(indices, dtype=np.int64))"
                ) from None
        elif path.suffix == ".json":
            values = np.asarray(json.loads(path.read_text()))
        else:
            values = np.loadtxt(path, dtype=np.int64, ndmin=1)
    else:
        values = np.asarray(source)
    if values.ndim != 1 or (len(values) and not np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D list of integers, got {values.dtype} {values.shape}")
    if pool_size is not None and len(values) and (values.min() < 0 or values.max() >= pool_size):
        bad = values[(values < 0) | (values >= pool_size)]
        raise ValueError(
            f"{what}: {int(bad[0])} falls outside the pool [0, {pool_size}){where}"
            + (f" ({len(bad)} values do)" if len(bad) > 1 else "")
            + "; indices are positions in the full training pool"
        )
    return values.astype(np.int64)


def distinct(indices: np.ndarray, source: list[int] | str | Path) -> np.ndarray:
    """``indices`` when no index repeats; else one line naming the list's source and the first repeated index."""
    values, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"subset.indices {_source(source)} repeat index {int(values[counts > 1][0])}")
    return indices


def _take(ordered: np.ndarray, skip: float, size: int, n_pool: int, where: str = "") -> np.ndarray:
    """``size`` examples of an ordered candidate list after skipping the first ``skip`` share of the pool."""
    start = round(skip * n_pool)
    if start + size > n_pool:
        raise ValueError(f"subset asks for {size} examples{where} after skipping {start}, but there are {n_pool}")
    if start + size > len(ordered):
        raise ValueError(
            f"the ranking scores only {len(ordered)} of the {n_pool} candidates{where}; it cannot supply {size}"
        )
    return ordered[start : start + size]


def select_subset(
    spec: SubsetSpec,
    targets: np.ndarray,
    class_names: list[str] | None = None,
    dataset_name: str = "this dataset",
) -> np.ndarray:
    """Sorted pool indices of the examples ``spec`` keeps, out of a pool with these ``targets``.

    ``class_names`` (in label order) are needed only to name the classes of ``spec.classes``; by default the
    labels themselves, as strings.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if class_names is None:
        class_names = [str(c) for c in range(int(targets.max(initial=-1)) + 1)]
    kept_classes = choose_classes(spec, class_names)
    in_classes = np.isin(targets, kept_classes)
    if spec.indices is not None:
        chosen = distinct(read_indices(spec.indices, pool_size=n, where=f" of {dataset_name}"), spec.indices)
        return np.sort(chosen[in_classes[chosen]])
    n_kept = int(in_classes.sum())
    size = spec.count if spec.count is not None else round(spec.fraction * n_kept)
    if size > n_kept:
        raise ValueError(f"subset.count {size} exceeds the {n_kept} examples of {dataset_name} it chooses from")
    ranking = None
    if spec.ranking is not None:
        ranking = load_ranking(spec.ranking)
        ranking.check_pool(n, pool_fingerprint(targets), where=dataset_name)
    if spec.rule == "ccs":
        return np.sort(_ccs_subset(spec, ranking, targets, in_classes, size))
    if ranking is not None:
        ordered = ranking.indices if spec.keep == "highest" else ranking.indices[::-1]
    else:
        ordered = np.random.default_rng(spec.seed).permutation(n)
    ordered = ordered[in_classes[ordered]]
    if not spec.balanced:
        return np.sort(_take(ordered, spec.skip, size, n_kept))
    quotas = class_quotas(targets[in_classes], size, spec.seed)
    parts = []
    for c, quota in quotas.items():
        of_class, n_class = ordered[targets[ordered] == c], int((targets[in_classes] == c).sum())
        where = f" of class {class_names[c]}" + (f" in {spec.ranking}" if spec.ranking else "")
        parts.append(_take(of_class, spec.skip, quota, n_class, where))
    return np.sort(np.concatenate(parts))


def _ccs_subset(
    spec: SubsetSpec, ranking: Ranking, targets: np.ndarray, in_classes: np.ndarray, size: int
) -> np.ndarray:
    """CCS over the ranking's scores of the candidates, per class with ``balanced``."""
    scored = ranking.indices[in_classes[ranking.indices]]
    score_of = ranking.dense_scores(len(targets))
    if len(scored) < in_classes.sum():
        raise ValueError(
            f"subset.rule ccs: {spec.ranking} scores {len(scored)} of the {int(in_classes.sum())} candidates; "
            "CCS stratifies the scores of the whole pool"
        )
    direction = ranking.metadata.get("direction")
    harder_high = direction == "higher_is_harder" if direction else spec.keep == "highest"
    cutoff = paper_cutoff(size / len(scored)) if spec.cutoff is None else spec.cutoff

    def choose(members: np.ndarray, budget: int) -> np.ndarray:
        return members[ccs(score_of[members], budget, harder_high, cutoff, spec.strata, spec.seed)]

    if spec.balanced:
        return per_class(targets, scored, size, choose, spec.seed)
    return choose(scored, size)


def _source(indices: list[int] | str) -> str:
    return str(indices) if isinstance(indices, str) else "(the list given)"
