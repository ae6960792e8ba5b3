"""D2-Pruning (Maharana et al., ICLR 2024): difficulty and diversity balanced by message passing on a k-NN graph.

Every example is a node joined to its ``k`` nearest neighbours in embedding space (Euclidean distance; the
edges made symmetric). Forward message passing adds to each node's difficulty its neighbours', weighted by
``exp(-gamma_forward * distance)``, so a hard example in a dense region of hard examples scores highest.
Selection takes the highest-scoring node, then lowers each neighbour's score by ``exp(-gamma_reverse *
distance)`` times the chosen one's (reverse message passing), so the next picks come from elsewhere.

The graph costs O(N k) memory: distances are computed a block of rows at a time against all rows, on the
embeddings' device, and only each row's ``k`` nearest are kept (as greedy k-centers keeps only its running
minimum). Selection keeps a heap with lazy updates: O((N + budget k) log N), no N x N matrix and no pass
over all N scores per pick.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

FLOOR = 1e-7  # a neighbour's difficulty passes on at least this much (the paper's code clamps so)


@dataclass(frozen=True)
class Graph:
    """A symmetric k-NN graph in compressed rows: node ``i``'s neighbours are ``neighbours[start[i]:start[i + 1]]``
    at ``distances`` of the same positions."""

    start: np.ndarray
    neighbours: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return len(self.start) - 1


def nearest_neighbours(
    embeddings: torch.Tensor | np.ndarray, k: int, rows_per_block: int | None = None, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows (``N x k`` indices) and their Euclidean distances (float64, computed
    afresh from the two rows, so they do not depend on the blocked search's rounding)."""
    x = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    x = x.to(device or x.device)
    x = x.float() if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16) else x
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"d2: k must be in [1, {n - 1}] for {n} examples, got {k}")
    if not torch.isfinite(x).all():
        raise ValueError("d2: the embeddings hold NaN or inf rows (examples that were not scored?)")
    block = rows_per_block or max(1, min(n, 2**25 // n))  # a block of distances stays near 128 MiB
    squared = (x * x).sum(1)
    found = []
    for first in range(0, n, block):
        rows = slice(first, min(first + block, n))
        d2 = squared[rows, None] + squared[None, :] - 2.0 * (x[rows] @ x.T)
        d2[torch.arange(d2.shape[0]), torch.arange(rows.start, rows.stop)] = float("inf")  # not its own neighbour
        found.append(d2.topk(k, dim=1, largest=False).indices.cpu())
    nearest = torch.cat(found).numpy().astype(np.int64)
    xs = np.asarray(x.cpu(), dtype=np.float64)
    distances = np.empty(nearest.shape)
    for first in range(0, n, 4096):  # a block of rows at a time: (rows x k x d) float64
        block = slice(first, first + 4096)
        distances[block] = np.linalg.norm(xs[block, None, :] - xs[nearest[block]], axis=2)
    return nearest, distances


def knn_graph(
    embeddings: torch.Tensor | np.ndarray, k: int, rows_per_block: int | None = None, device: str | None = None
) -> Graph:
    """The symmetric k-NN graph: ``i`` and ``j`` are joined when either is among the other's ``k`` nearest."""
    nearest, distances = nearest_neighbours(embeddings, k, rows_per_block, device)
    n = len(nearest)
    src = np.repeat(np.arange(n), k)
    edges = np.concatenate([np.stack([src, nearest.ravel()]), np.stack([nearest.ravel(), src])], axis=1)
    lengths = np.concatenate([distances.ravel(), distances.ravel()])
    edges, first = np.unique(edges, axis=1, return_index=True)  # sorted by source, then neighbour
    start = np.searchsorted(edges[0], np.arange(n + 1))
    return Graph(start, edges[1].copy(), lengths[first])


def forward_pass(graph: Graph, difficulty: np.ndarray, gamma: float) -> np.ndarray:
    """Each node's difficulty plus its neighbours', weighted by ``exp(-gamma * distance)``."""
    difficulty = np.asarray(difficulty, dtype=np.float64)
    source = np.repeat(np.arange(len(graph)), np.diff(graph.start))
    messages = np.exp(-gamma * graph.distances) * np.maximum(difficulty[graph.neighbours], FLOOR)
    return difficulty + np.bincount(source, weights=messages, minlength=len(graph))


def reverse_selection(graph: Graph, scores: np.ndarray, budget: int, gamma: float, seed: int = 0) -> np.ndarray:
    """``budget`` nodes, highest score first (ties in a seeded order); each pick lowers its neighbours' scores by
    ``exp(-gamma * distance)`` times its own. Returns the nodes in the order chosen."""
    if not 0 <= budget <= len(graph):
        raise ValueError(f"d2: a budget of {budget} from {len(graph)} examples is not possible")
    scores = np.array(scores, dtype=np.float64)
    tie = np.random.default_rng(seed).permutation(len(graph))  # the rank that breaks a tie, lowest first
    version = np.zeros(len(graph), dtype=np.int64)
    heap = [(-s, int(r), 0, i) for i, (s, r) in enumerate(zip(scores.tolist(), tie.tolist(), strict=True))]
    heapq.heapify(heap)
    chosen = np.zeros(len(graph), dtype=bool)
    order = []
    while len(order) < budget:
        _, _, seen, i = heapq.heappop(heap)
        if chosen[i] or seen != version[i]:
            continue  # taken already, or its score has changed since this entry
        chosen[i] = True
        order.append(i)
        picked = scores[i]
        for at in range(graph.start[i], graph.start[i + 1]):
            j = int(graph.neighbours[at])
            if chosen[j]:
                continue
            scores[j] -= np.exp(-gamma * graph.distances[at]) * picked
            version[j] += 1
            heapq.heappush(heap, (-scores[j], int(tie[j]), int(version[j]), j))
    return np.asarray(order, dtype=np.int64)


def d2_pruning(
    embeddings: torch.Tensor | np.ndarray,
    difficulty: np.ndarray,
    budget: int,
    k: int = 5,
    gamma_forward: float = 1.0,
    gamma_reverse: float = 0.1,
    seed: int = 0,
    device: str | None = None,
) -> np.ndarray:
    """D2-Pruning's choice of ``budget`` rows of ``embeddings`` by ``difficulty`` (higher is harder, >= 0), in the
    order chosen. Defaults: the paper's code for CIFAR-10 (k 5, reverse gamma 0.1; forward weight exp(-d)).
    ``device`` is where the distances are computed (default: the embeddings')."""
    if len(difficulty) < 2:
        return np.arange(budget, dtype=np.int64)
    graph = knn_graph(embeddings, min(k, len(difficulty) - 1), device=device)
    return reverse_selection(graph, forward_pass(graph, difficulty, gamma_forward), budget, gamma_reverse, seed)
