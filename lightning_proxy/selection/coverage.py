"""Coverage-aware subsets: class quotas that keep every class's share of the pool, and CCS.

Hard-first selection collapses at high pruning rates: the hardest examples of a small budget leave out the
easy and typical ones, and often whole classes. Coverage-centric coreset selection (CCS; Zheng et al.,
ICLR 2023) removes the hardest share first (mislabelled and ambiguous examples), splits the rest of the
score's range into equal-width strata and spreads the budget over them, filling the smallest strata first,
so every level of difficulty keeps its examples. Here it works on any per-example score and its direction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# CCS's hard cut-off (share of the pool removed as the hardest first) by pruning rate: its authors' published
# settings at 90 % (0.3, CIFAR-10 and ImageNet) and 80 % (0.2, ImageNet); 0.1 at 70 % and none at 50 % and
# below are this project's steps between them and no cut-off. A rate between two rows takes the lower row's.
PAPER_CUTOFFS = ((0.0, 0.0), (0.7, 0.1), (0.8, 0.2), (0.9, 0.3))


def paper_cutoff(kept: float) -> float:
    """CCS's hard cut-off for keeping the share ``kept`` of the pool (pruning ``1 - kept``)."""
    pruned = 1.0 - kept
    return max(cut for rate, cut in PAPER_CUTOFFS if rate <= pruned + 1e-9)


def class_quotas(targets: np.ndarray, size: int, seed: int = 0) -> dict[int, int]:
    """How many of ``size`` examples each class gets so that it keeps its share of the pool: the largest
    remainder method (every class its share rounded down, the rest to the largest remainders, ties drawn with
    ``seed``), so the quotas add up to ``size`` exactly."""
    classes, counts = np.unique(np.asarray(targets), return_counts=True)
    if not 0 <= size <= counts.sum():
        raise ValueError(f"a subset of {size} examples of a pool of {counts.sum()} is not possible")
    exact = counts * size / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    rest = size - int(quotas.sum())
    order = np.lexsort((np.random.default_rng(seed).permutation(len(classes)), -(exact - quotas)))
    quotas[order[:rest]] += 1
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def per_class(
    targets: np.ndarray,
    candidates: np.ndarray,
    size: int,
    choose: Callable[[np.ndarray, int], np.ndarray],
    seed: int = 0,
) -> np.ndarray:
    """``choose(members, quota)`` within each class's ``candidates`` (pool indices), every class its quota of
    ``size`` by its share of the candidates: a subset of exactly ``size`` that keeps every class's share."""
    targets = np.asarray(targets)
    quotas = class_quotas(targets[candidates], size, seed)
    parts = [choose(candidates[targets[candidates] == c], quota) for c, quota in quotas.items()]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def strata_of(scores: np.ndarray, strata: int) -> np.ndarray:
    """Each score's stratum among ``strata`` equal-width ones over the range ``[min, max]`` (max included) of
    the finite scores; an infinite score (an example never learned) falls in the stratum at its end."""
    finite = scores[np.isfinite(scores)]
    if len(finite) == 0:
        return np.zeros(len(scores), dtype=np.int64)
    lo, hi = float(finite.min()), float(finite.max())
    if hi == lo:
        return np.where(scores > hi, strata - 1, 0).astype(np.int64)
    scores = np.clip(scores, lo, hi)
    return np.minimum(((scores - lo) / (hi - lo) * strata).astype(np.int64), strata - 1)


def stratum_budgets(sizes: np.ndarray, budget: int) -> np.ndarray:
    """CCS's budget per stratum: the strata from the smallest up each take at most an equal share of what is
    left, so a small stratum keeps all it has and the large ones share the rest."""
    if budget > sizes.sum():
        raise ValueError(f"the strata hold {sizes.sum()} examples; {budget} were asked")
    out = np.zeros(len(sizes), dtype=np.int64)
    left = budget
    order = np.argsort(sizes, kind="stable")
    for i, s in enumerate(order):
        out[s] = min(int(sizes[s]), left // (len(sizes) - i))
        left -= out[s]
    return out


def without_hardest(
    scores: np.ndarray, budget: int, higher_is_harder: bool, cutoff: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions into ``scores`` left once the hardest ``cutoff`` share is removed (ties in an order drawn with
    ``rng``), hardest first; at least ``budget`` are left, whatever the cut-off."""
    n = len(scores)
    removed = min(round(cutoff * n), n - budget)
    return np.lexsort((rng.permutation(n), -scores if higher_is_harder else scores))[removed:]


def ccs(
    scores: np.ndarray,
    budget: int,
    higher_is_harder: bool,
    cutoff: float,
    strata: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """CCS: positions into ``scores`` of ``budget`` examples, after the hardest ``cutoff`` share is removed,
    spread over ``strata`` equal-width strata of the score, each filled at random (with ``seed``).

    The cut-off keeps at least ``budget`` examples: it is lowered to ``1 - budget / len(scores)`` if need be.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    if not 0 <= budget <= n:
        raise ValueError(f"ccs: a budget of {budget} from {n} scored examples is not possible")
    if not 0.0 <= cutoff < 1.0 or strata < 1:
        raise ValueError(f"ccs: the cutoff is a share in [0, 1) and strata at least 1, got {cutoff} and {strata}")
    rng = np.random.default_rng(seed)
    kept = without_hardest(scores, budget, higher_is_harder, cutoff, rng)
    if budget == 0 or len(kept) == 0:
        return np.zeros(0, dtype=np.int64)
    stratum = strata_of(scores[kept], strata)
    budgets = stratum_budgets(np.bincount(stratum, minlength=strata), budget)
    chosen = [rng.permutation(kept[stratum == s])[: budgets[s]] for s in range(strata) if budgets[s]]
    return np.sort(np.concatenate(chosen))
