"""Selection methods and their algorithms against computations worked out independently: class quotas, CCS's
strata and budgets by hand, D2-Pruning against a brute-force graph and selection, exact subset sizes."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_proxy.methods import CCS, D2Pruning, KCenters, RandomSubset, Ranked, Records, build_method, class_shares
from lightning_proxy.selection import Ranking, SubsetSpec, save_ranking, select_subset
from lightning_proxy.selection.coverage import ccs, class_quotas, paper_cutoff, stratum_budgets
from lightning_proxy.selection.graph import d2_pruning, forward_pass, knn_graph, nearest_neighbours, reverse_selection


# --- class quotas -----------------------------------------------------------------------------------------
def test_class_quotas_keep_each_class_share_and_add_up_exactly():
    targets = np.array([0] * 5 + [1] * 3 + [2] * 2)
    # shares 4 * (5, 3, 2) / 10 = (2, 1.2, 0.8): floors (2, 1, 0), the one left to the largest remainder (0.8)
    assert class_quotas(targets, 4) == {0: 2, 1: 1, 2: 1}
    assert class_quotas(targets, 10) == {0: 5, 1: 3, 2: 2}
    rng = np.random.default_rng(0)
    many = rng.integers(0, 7, size=1000)
    for size in (1, 13, 300, 999):
        quotas = class_quotas(many, size, seed=size)
        assert sum(quotas.values()) == size
        share = np.bincount(many) * size / len(many)
        assert all(abs(quotas[c] - share[c]) < 1 for c in quotas)


# --- CCS ----------------------------------------------------------------------------------------------------
def test_ccs_budgets_fill_the_smallest_strata_first():
    # sizes (10, 1, 0, 4) and 9 to spend: the empty one 0, then 1 (of 9 // 3), then 4 (of 8 // 2), then the rest 4
    assert stratum_budgets(np.array([10, 1, 0, 4]), 9).tolist() == [4, 1, 0, 4]
    with pytest.raises(ValueError, match="hold 15 examples; 16 were asked"):
        stratum_budgets(np.array([10, 1, 0, 4]), 16)


def test_ccs_strata_counts_on_a_small_pool_by_hand():
    # seven easy scores in [0, 0.6] and three hard ones in [9, 10]: two strata of width 5 hold 7 and 3
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 9.0, 9.5, 10.0])
    hard = scores >= 9
    for budget, (easy_kept, hard_kept) in {4: (2, 2), 8: (5, 3), 10: (7, 3)}.items():
        chosen = ccs(scores, budget, higher_is_harder=True, cutoff=0.0, strata=2, seed=budget)
        assert len(chosen) == budget == len(set(chosen.tolist()))
        assert (int((~hard[chosen]).sum()), int(hard[chosen].sum())) == (easy_kept, hard_kept)
    # a cut-off of 0.2 removes the two hardest (10 and 9.5) first; the range left is [0, 9]
    chosen = ccs(scores, 4, higher_is_harder=True, cutoff=0.2, strata=2, seed=0)
    assert not {8, 9} & set(chosen.tolist()) and 7 in chosen  # 9.0 alone in its stratum: kept
    # the same scores as "higher is easier" (AUM): the hardest are the lowest, removed first
    chosen = ccs(scores, 4, higher_is_harder=False, cutoff=0.2, strata=2, seed=0)
    assert not {0, 1} & set(chosen.tolist())


def test_ccs_puts_never_learned_examples_in_the_hardest_stratum():
    # forgetting counts with two never learned (infinite): strata over the finite range [0, 4], the infinite
    # ones in the top stratum beside 4; with 2 strata and 4 to spend, the top one (4, inf, inf) gives 2
    scores = np.array([0.0, 0.0, 1.0, 1.0, 4.0, np.inf, np.inf])
    chosen = ccs(scores, 4, higher_is_harder=True, cutoff=0.0, strata=2, seed=0)
    assert len(chosen) == 4 and int((chosen >= 4).sum()) == 2
    chosen = ccs(scores, 3, higher_is_harder=True, cutoff=0.3, strata=2, seed=0)  # the two infinite removed first
    assert not {5, 6} & set(chosen.tolist())


def test_ccs_cutoff_follows_the_pruning_rate():
    assert [paper_cutoff(kept) for kept in (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)] == [0.0, 0.0, 0.0, 0.1, 0.2, 0.3]


def test_ccs_as_a_subset_rule_of_exact_size_and_balanced(tmp_path):
    rng = np.random.default_rng(3)
    targets = np.repeat(np.arange(4), [40, 30, 20, 10])
    scores = rng.normal(size=100) + targets  # class 3 the hardest
    path = save_ranking(tmp_path / "el2n.npz", _ranking(scores, targets, "higher_is_harder"))
    for fraction, balanced in [(0.3, False), (0.3, True), (0.1, True), (0.9, False)]:
        spec = SubsetSpec(ranking=str(path), fraction=fraction, rule="ccs", balanced=balanced, seed=1)
        chosen = select_subset(spec, targets)
        assert len(chosen) == round(fraction * 100) == len(set(chosen.tolist()))
        if balanced:
            quotas = class_quotas(targets, len(chosen), 1)
            assert np.bincount(targets[chosen], minlength=4).tolist() == list(quotas.values())
    with pytest.raises(ValueError, match="rule ccs chooses from a ranking"):
        SubsetSpec(fraction=0.5, rule="ccs")


# --- balance for every method -----------------------------------------------------------------------------
def test_balanced_ranking_keeps_each_class_share_of_the_pool_even_when_the_ranking_covers_part_of_it(tmp_path):
    targets = np.repeat(np.arange(3), [50, 30, 20])
    # a ranking of only 60 examples, all of class 0 and 1: it cannot give class 2 its share
    partial = Ranking.from_scores(np.arange(60.0), {"statistic": "kcenters", **_identity(targets)}, np.arange(60))
    path = save_ranking(tmp_path / "kc.npz", partial)
    with pytest.raises(ValueError, match="only 0 of the 20 candidates of class 2 in .*kc.npz; it cannot supply 6"):
        select_subset(SubsetSpec(ranking=str(path), fraction=0.3, balanced=True), targets)
    full = save_ranking(tmp_path / "all.npz", _ranking(np.arange(100.0), targets, "higher_is_harder"))
    chosen = select_subset(SubsetSpec(ranking=str(full), fraction=0.3, balanced=True), targets)
    assert len(chosen) == 30 and np.bincount(targets[chosen]).tolist() == [15, 9, 6]


@pytest.mark.parametrize(
    "method", [Ranked("el2n"), KCenters(), CCS("el2n", balanced=None), D2Pruning("el2n", balanced=None), RandomSubset()]
)
@pytest.mark.parametrize("balanced", [False, True])
def test_every_method_gives_the_size_asked_and_balanced_keeps_the_quotas(tmp_path, method, balanced):
    records = _records(tmp_path)
    for fraction in (0.1, 0.3, 0.5, 0.9):
        size = round(fraction * len(records.targets))
        chosen = method.subset(records, size, seed=2, balanced=balanced)
        assert len(chosen) == size == len(set(chosen.tolist()))
        if balanced:
            kept = np.bincount(records.targets[chosen], minlength=3)
            assert kept.tolist() == list(class_quotas(records.targets, size, 2).values())
            assert min(class_shares(chosen, records.targets).values()) > 0.9


def test_hard_first_drops_a_class_that_balance_keeps(tmp_path):
    records = _records(tmp_path)
    hardest = Ranked("el2n").subset(records, 30, seed=0)
    assert min(class_shares(hardest, records.targets).values()) == 0.0  # class 0 is the easiest: none kept
    balanced = Ranked("el2n").subset(records, 30, seed=0, balanced=True)
    assert min(class_shares(balanced, records.targets).values()) > 0.9


def test_coverage_methods_keep_class_shares_unless_told_not_to(tmp_path):
    records = _records(tmp_path)
    quotas = list(class_quotas(records.targets, 30, 0).values())
    for method in (CCS("el2n"), D2Pruning("el2n")):  # balanced by default, whatever the experiment asks
        chosen = method.subset(records, 30, seed=0, balanced=False)
        assert np.bincount(records.targets[chosen], minlength=3).tolist() == quotas
    # over the whole pool the strata are the score's: scores 0-1, 2-3 and 4-5 by class fill a third of the 50
    # strata each, so the budget of 30 goes about a third to each class: class 2 (10 %) over twice its quota of 3
    pooled = build_method({"name": "ccs", "statistic": "el2n", "balanced": False, "cutoff": 0.0})
    assert pooled.name == "ccs_el2n_unbalanced_cutoff0"
    chosen = pooled.subset(records, 30, seed=0, balanced=True)  # the method's own choice wins
    assert (records.targets[chosen] == 2).sum() >= 2 * quotas[2]
    assert build_method({"name": "d2", "balanced": False}).name == "d2_unbalanced"
    # variants a user compares side by side get names of their own
    assert build_method({"name": "ccs", "cutoff": 0.2, "strata": 10}).name == "ccs_cutoff0.2_strata10"
    assert build_method({"name": "d2", "statistic": "el2n"}).name == "d2_el2n"


def test_methods_are_built_by_name_with_options():
    assert isinstance(build_method("forgetting"), Ranked) and build_method("forgetting").needs() == {"forgetting"}
    ccs_method = build_method({"name": "ccs", "statistic": "forgetting", "cutoff": 0.1})
    assert (ccs_method.name, ccs_method.statistic, ccs_method.cutoff) == ("ccs_forgetting_cutoff0.1", "forgetting", 0.1)
    assert build_method("kcenters", {"kcenters": {"start": 0.02}}).start == 0.02
    assert build_method("d2").needs() == {"forgetting", "embeddings"}
    with pytest.raises(ValueError, match="unknown method 'vibes'"):
        build_method("vibes")
    with pytest.raises(ValueError, match="statistic must be one of"):
        build_method({"name": "ccs", "statistic": "vibes"})


# --- D2-Pruning -----------------------------------------------------------------------------------------------
def brute_force_d2(x: np.ndarray, difficulty: np.ndarray, budget: int, k: int, gf: float, gr: float, seed: int):
    """The whole distance matrix, each row's k nearest, the union of both directions, then a plain argmax loop."""
    n = len(x)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    adjacent = np.zeros((n, n), dtype=bool)
    for i in range(n):
        adjacent[i, np.argsort(dist[i])[:k]] = True
    adjacent |= adjacent.T
    weights = np.where(adjacent, np.exp(-gf * np.where(adjacent, dist, 0)), 0.0)
    scores = difficulty + weights @ np.maximum(difficulty, 1e-7)
    tie = np.random.default_rng(seed).permutation(n)
    chosen, order = np.zeros(n, dtype=bool), []
    for _ in range(budget):
        candidates = np.flatnonzero(~chosen)
        best = candidates[np.lexsort((tie[candidates], -scores[candidates]))[0]]
        chosen[best] = True
        order.append(int(best))
        for j in np.flatnonzero(adjacent[best] & ~chosen):
            scores[j] -= np.exp(-gr * dist[best, j]) * scores[best]
    return order


def test_knn_in_blocks_equals_the_whole_distance_matrix():
    x = np.random.default_rng(0).normal(size=(53, 4)).astype(np.float32)
    nearest, distances = nearest_neighbours(x, 3, rows_per_block=7)
    dist = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    assert nearest.tolist() == np.argsort(dist, axis=1)[:, :3].tolist()
    assert np.allclose(distances, np.sort(dist, axis=1)[:, :3])
    graph = knn_graph(x, 3, rows_per_block=7)
    degree = np.diff(graph.start)
    assert degree.min() >= 3 and len(graph.neighbours) == degree.sum()  # symmetric: i in j's list iff j in i's
    pairs = {(i, int(j)) for i in range(len(x)) for j in graph.neighbours[graph.start[i] : graph.start[i + 1]]}
    assert all((j, i) in pairs for i, j in pairs)


@pytest.mark.parametrize("seed", [0, 1])
def test_d2_pruning_equals_a_brute_force_graph_and_selection(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3)) * np.array([1.0, 0.5, 2.0])
    difficulty = rng.gamma(2.0, size=60)
    expected = brute_force_d2(x, difficulty, 25, k=4, gf=1.0, gr=0.5, seed=seed)
    assert d2_pruning(x, difficulty, 25, k=4, gamma_forward=1.0, gamma_reverse=0.5, seed=seed).tolist() == expected


def test_d2_message_passing_on_a_hand_made_graph():
    # a path 0 - 1 - 2, unit edges: forward adds e^-1 times each neighbour's difficulty
    from lightning_proxy.selection.graph import Graph

    graph = Graph(np.array([0, 1, 3, 4]), np.array([1, 0, 2, 1]), np.ones(4))
    scores = forward_pass(graph, np.array([1.0, 2.0, 3.0]), gamma=1.0)
    e = np.exp(-1.0)
    assert np.allclose(scores, [1 + 2 * e, 2 + 4 * e, 3 + 2 * e])
    # node 2 leads (3 + 2/e = 3.74 against 3.47 and 1.74) and takes e^-1 x 3.74 off node 1, leaving it 2.09,
    # still above node 0 (1.74); node 1 then takes e^-1 x 2.09 off node 0
    assert reverse_selection(graph, scores, 3, gamma=1.0).tolist() == [2, 1, 0]
    # with a strong reverse weight (gamma 0: the whole score) node 1 falls below node 0 once 2 is picked
    assert reverse_selection(graph, scores, 2, gamma=0.0).tolist() == [2, 0]


# --- helpers ------------------------------------------------------------------------------------------------
def _identity(targets: np.ndarray) -> dict:
    from lightning_proxy.selection.ranking import pool_fingerprint

    return {"num_examples": len(targets), "fingerprint": pool_fingerprint(targets)}


def _ranking(scores: np.ndarray, targets: np.ndarray, direction: str) -> Ranking:
    return Ranking.from_scores(scores, {"statistic": "el2n", "direction": direction, **_identity(targets)})


def _records(tmp_path) -> Records:
    """Three classes (60, 30, 10) whose difficulty grows with the class, in 5-D embeddings by class."""
    rng = np.random.default_rng(7)
    targets = np.repeat(np.arange(3), [60, 30, 10])
    scores = rng.uniform(size=100) + 2.0 * targets  # class 0 easiest, class 2 hardest
    embeddings = (rng.normal(size=(100, 5)) + 3.0 * targets[:, None]).astype(np.float32)
    np.save(tmp_path / "embeddings.npy", embeddings)
    path = save_ranking(tmp_path / "el2n.npz", _ranking(scores, targets, "higher_is_harder"))
    return Records({"el2n": path, "embeddings": tmp_path / "embeddings.npy"}, targets, tmp_path)
