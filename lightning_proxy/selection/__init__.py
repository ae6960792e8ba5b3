"""Ranking files, the rules that turn a ranking into a training subset, and greedy k-centers."""

from lightning_proxy.selection.kcenters import greedy_k_centers
from lightning_proxy.selection.ranking import Ranking, aggregate_rankings, load_ranking, pool_fingerprint, save_ranking
from lightning_proxy.selection.subset import SubsetSpec, select_subset

__all__ = [
    "Ranking",
    "SubsetSpec",
    "aggregate_rankings",
    "greedy_k_centers",
    "load_ranking",
    "pool_fingerprint",
    "save_ranking",
    "select_subset",
]
