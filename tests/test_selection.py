import json

import numpy as np
import pytest

from lightning_proxy.selection import (
    Ranking,
    SubsetSpec,
    aggregate_rankings,
    load_ranking,
    pool_fingerprint,
    save_ranking,
)
from lightning_proxy.selection.subset import select_subset

TARGETS = np.array([0, 1] * 10)  # 20 examples, two classes alternating
CLASSES = ["even", "odd"]


def ranking_file(tmp_path, scores, targets=TARGETS, name="r.npz", **meta):
    metadata = {
        "statistic": "loss",
        "num_examples": len(targets),
        "fingerprint": pool_fingerprint(targets),
        "dataset": "toy",
        **meta,
    }
    return save_ranking(tmp_path / name, Ranking.from_scores(scores, metadata))


def test_from_scores_orders_highest_first_ties_by_index():
    r = Ranking.from_scores([0.5, 2.0, 0.5, np.inf], {"statistic": "x"})
    assert r.indices.tolist() == [3, 1, 0, 2]
    assert r.scores.tolist() == [np.inf, 2.0, 0.5, 0.5]


def test_round_trip_and_plain_numpy(tmp_path):
    path = ranking_file(tmp_path, np.arange(20.0)[::-1], model="m")
    loaded = load_ranking(path)
    assert loaded.indices.tolist() == list(range(20))
    assert loaded.metadata["model"] == "m" and loaded.metadata["num_examples"] == 20
    with np.load(path) as f:  # readable without this library
        assert json.loads(str(f["metadata"]))["statistic"] == "loss"
        assert f["scores"][0] == 19.0
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]  # no temp file left behind


def test_truncated_file_is_refused_with_its_name(tmp_path):
    path = ranking_file(tmp_path, np.arange(20.0))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="r.npz"):
        load_ranking(path)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"indices": np.arange(3), "scores": np.zeros(3)}, "lacks the arrays"),
        ({"indices": np.arange(3), "scores": np.zeros(2), "metadata": "{}"}, "metadata lacks"),
        (
            {
                "indices": np.array([0, 5]),
                "scores": np.zeros(2),
                "metadata": json.dumps({"statistic": "s", "num_examples": 3, "fingerprint": "f"}),
            },
            "outside the pool",
        ),
        (
            {
                "indices": np.array([1, 1]),
                "scores": np.zeros(2),
                "metadata": json.dumps({"statistic": "s", "num_examples": 3, "fingerprint": "f"}),
            },
            "repeat",
        ),
    ],
)
def test_malformed_files_are_refused(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_ranking(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_ranking(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fraction": 0.0}, r"\(0, 1\]"),
        ({"fraction": 1.5}, r"\(0, 1\]"),
        ({"fraction": -0.1}, r"\(0, 1\]"),
        ({"count": 0}, "positive"),
        ({"count": 5, "fraction": 0.5}, "not both"),
        ({"skip": 0.1}, "give subset.ranking"),
        ({"skip": 0.6, "fraction": 0.5, "ranking": "r.npz"}, "exceeds"),
        ({"indices": [1, 2], "fraction": 0.5}, "explicit"),
        ({"classes": 1}, "at least 2"),
        ({"classes": ["cat"]}, "at least 2"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SubsetSpec(**kwargs)


def test_a_ranking_is_given_by_its_file(tmp_path):
    ranking = Ranking.from_scores(np.arange(len(TARGETS), dtype=float), {"statistic": "s"})
    with pytest.raises(TypeError, match="path of a ranking file .*save_ranking"):
        SubsetSpec(ranking=ranking)
    path = ranking_file(tmp_path, np.arange(len(TARGETS), dtype=float))
    for given in (str(path), path):  # a str, as from YAML, or a Path in Python
        chosen = select_subset(SubsetSpec(ranking=given, fraction=0.25), TARGETS, CLASSES)
        assert chosen.tolist() == sorted(np.argsort(-np.arange(len(TARGETS)))[: round(0.25 * len(TARGETS))].tolist())


def test_random_fraction_is_seeded():
    a = select_subset(SubsetSpec(fraction=0.3, seed=1), TARGETS, CLASSES)
    b = select_subset(SubsetSpec(fraction=0.3, seed=1), TARGETS, CLASSES)
    c = select_subset(SubsetSpec(fraction=0.3, seed=2), TARGETS, CLASSES)
    assert len(a) == 6 and a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert len(np.unique(a)) == 6 and a.min() >= 0 and a.max() < 20
    assert len(select_subset(SubsetSpec(count=7), TARGETS, CLASSES)) == 7
    assert select_subset(SubsetSpec(), TARGETS, CLASSES).tolist() == list(range(20))


@pytest.mark.parametrize(
    "keep, fraction, skip, expected",
    [
        ("highest", 0.15, 0.0, [17, 18, 19]),
        ("highest", 0.15, 0.1, [15, 16, 17]),  # drop the top 2 first
        ("lowest", 0.1, 0.0, [0, 1]),
        ("lowest", 0.1, 0.05, [1, 2]),
    ],
)
def test_ranking_keep_and_band(tmp_path, keep, fraction, skip, expected):
    path = ranking_file(tmp_path, np.arange(20.0))  # example i scores i
    spec = SubsetSpec(ranking=str(path), keep=keep, fraction=fraction, skip=skip)
    assert select_subset(spec, TARGETS, CLASSES).tolist() == expected


def test_ranking_balanced_takes_the_same_share_of_every_class(tmp_path):
    scores = np.where(TARGETS == 0, 100.0, 0.0) + np.arange(20)  # class 0 dominates the top
    path = ranking_file(tmp_path, scores)
    plain = select_subset(SubsetSpec(ranking=str(path), fraction=0.4), TARGETS, CLASSES)
    balanced = select_subset(SubsetSpec(ranking=str(path), fraction=0.4, balanced=True), TARGETS, CLASSES)
    assert set(TARGETS[plain]) == {0}
    assert np.bincount(TARGETS[balanced]).tolist() == [4, 4]
    assert balanced.tolist() == [12, 13, 14, 15, 16, 17, 18, 19]


def test_random_balanced():
    targets = np.array([0] * 30 + [1] * 10)
    kept = select_subset(SubsetSpec(fraction=0.5, balanced=True), targets, CLASSES)
    assert np.bincount(targets[kept]).tolist() == [15, 5]


def test_classes_by_name_and_by_count():
    targets = np.arange(12) % 4
    names = ["a", "b", "c", "d"]
    kept = select_subset(SubsetSpec(classes=["d", "b"]), targets, names)
    assert set(targets[kept]) == {1, 3} and len(kept) == 6
    drawn = select_subset(SubsetSpec(classes=2, seed=3), targets, names)
    assert len(set(targets[drawn])) == 2 and len(drawn) == 6
    with pytest.raises(ValueError, match=r"unknown class names \['z'\].*\['a', 'b', 'c', 'd'\]"):
        select_subset(SubsetSpec(classes=["z", "a"]), targets, names)


def test_other_classes_are_the_complement_of_the_drawn_half():
    targets = np.arange(60) % 6
    names = list("abcdef")
    half = select_subset(SubsetSpec(classes=3, seed=5), targets, names)
    other = select_subset(SubsetSpec(classes=3, seed=5, other_classes=True), targets, names)
    assert set(targets[half]).isdisjoint(targets[other]) and set(targets[half]) | set(targets[other]) == set(range(6))
    named = select_subset(SubsetSpec(classes=["a", "b"], other_classes=True), targets, names)
    assert set(targets[named]) == {2, 3, 4, 5}
    with pytest.raises(ValueError, match="leaves 1 class"):
        select_subset(SubsetSpec(classes=5, other_classes=True), targets, names)
    with pytest.raises(ValueError, match="give classes too"):
        SubsetSpec(other_classes=True)


def test_classes_then_fraction_is_a_share_of_the_kept_classes():
    targets = np.arange(40) % 4
    kept = select_subset(SubsetSpec(classes=["a", "b"], fraction=0.5), targets, ["a", "b", "c", "d"])
    assert len(kept) == 10 and set(targets[kept]) <= {0, 1}


@pytest.mark.parametrize("form", ["list", "npy", "txt", "json"])
def test_explicit_indices(tmp_path, form):
    wanted = [7, 2, 11]
    source = {
        "list": lambda: wanted,
        "npy": lambda: (np.save(tmp_path / "i.npy", wanted), str(tmp_path / "i.npy"))[1],
        "txt": lambda: ((tmp_path / "i.txt").write_text("7\n2\n11\n"), str(tmp_path / "i.txt"))[1],
        "json": lambda: ((tmp_path / "i.json").write_text("[7, 2, 11]"), str(tmp_path / "i.json"))[1],
    }[form]()
    assert select_subset(SubsetSpec(indices=source), TARGETS, CLASSES).tolist() == [2, 7, 11]


def test_explicit_indices_out_of_range():
    with pytest.raises(ValueError, match="outside the pool"):
        select_subset(SubsetSpec(indices=[3, 25]), TARGETS, CLASSES)


def test_ranking_from_another_pool_is_refused(tmp_path):
    other = ranking_file(tmp_path, np.arange(30.0), targets=np.zeros(30, dtype=int), name="big.npz")
    with pytest.raises(ValueError, match="pool of 30 examples.*has 20"):
        select_subset(SubsetSpec(ranking=str(other), fraction=0.5), TARGETS, CLASSES)
    shuffled = ranking_file(tmp_path, np.arange(20.0), targets=TARGETS[::-1], name="shuffled.npz")
    with pytest.raises(ValueError, match="fingerprint"):
        select_subset(SubsetSpec(ranking=str(shuffled), fraction=0.5), TARGETS, CLASSES)


def seed_run(scores, seed, indices=None, **meta):
    metadata = {"statistic": "forgetting", "num_examples": 6, "fingerprint": "f", "seed": seed, **meta}
    return Ranking.from_scores(scores, metadata, indices)


# example 4, never learned in one run: one run's weight (the largest combined score + 1) above its finite part
@pytest.mark.parametrize("how, expected", [("mean", [1.5, 2.5, 3.5, 0.0]), ("sum", [3.0, 5.0, 6.0, 0.0])])
def test_aggregate_seeds(how, expected):
    # two seeds scoring examples 0, 2, 4, 5 (in different orders), one never learned (inf) in one seed
    a = seed_run([2.0, 3.0, np.inf, 0.0], seed=1, indices=[0, 2, 4, 5])
    b = seed_run([2.0, 0.0, 0.0, 1.0], seed=2, indices=[2, 5, 4, 0])
    r = aggregate_rankings([a, b], how=how)
    assert dict(zip(r.indices.tolist(), r.scores.tolist(), strict=True)) == dict(
        zip([0, 2, 4, 5], expected, strict=True)
    )
    assert r.indices.tolist() == [4, 2, 0, 5]
    assert r.metadata["seeds"] == [1, 2] and r.metadata["aggregation"] == how and r.metadata["runs"] == 2
    assert "seed" not in r.metadata


def test_aggregate_refuses_mixed_runs():
    a = seed_run([1.0, 2.0], seed=1, indices=[0, 1])
    with pytest.raises(ValueError, match="statistic"):
        aggregate_rankings([a, seed_run([1.0, 2.0], seed=2, indices=[0, 1], statistic="loss")])
    with pytest.raises(ValueError, match="never_learned"):
        aggregate_rankings([a, seed_run([1.0, 2.0], seed=2, indices=[0, 1], never_learned="zero")])
    with pytest.raises(ValueError, match="other examples"):
        aggregate_rankings([a, seed_run([1.0, 2.0], seed=2, indices=[0, 3])])
    with pytest.raises(ValueError, match="mean"):
        aggregate_rankings([a], how="median")


def test_aggregate_rankings_command(tmp_path, capsys):
    from lightning_proxy.cli import main

    for seed, scores in [(0, np.arange(20.0)), (1, np.arange(20.0)[::-1])]:
        ranking_file(tmp_path, scores, name=f"seed{seed}.npz", seed=seed)
    main(
        [
            "aggregate-rankings",
            str(tmp_path / "seed0.npz"),
            str(tmp_path / "seed1.npz"),
            "--output",
            str(tmp_path / "m.npz"),
        ]
    )
    merged = load_ranking(tmp_path / "m.npz")
    # every example ties at 9.5: the order is the seeded permutation's (seed 0, the first run's), not the index
    keys = np.random.default_rng(0).permutation(20)
    assert np.allclose(merged.scores, 9.5) and merged.indices.tolist() == np.argsort(keys).tolist()
    assert merged.metadata["tie_seed"] == 0
    assert merged.metadata["seeds"] == [0, 1] and "mean of 2 runs" in capsys.readouterr().out


def test_aggregate_refuses_other_models_unless_mixing_is_allowed():
    a = seed_run([1.0, 2.0], seed=1, indices=[0, 1], model="preact_resnet8")
    b = seed_run([3.0, 0.0], seed=2, indices=[0, 1], model="preact_resnet20")
    with pytest.raises(ValueError, match="model='preact_resnet20'.*allow_mixed"):
        aggregate_rankings([a, b])
    mixed = aggregate_rankings([a, b], allow_mixed=True)
    assert mixed.metadata["model"] == ["preact_resnet8", "preact_resnet20"] and mixed.metadata["mixed"] == ["model"]
    assert dict(zip(mixed.indices.tolist(), mixed.scores.tolist(), strict=True)) == {0: 2.0, 1: 1.0}
    other_size = seed_run([1.0, 2.0], seed=2, indices=[0, 1], num_examples=7)
    with pytest.raises(ValueError, match="pool of 7 examples"):
        aggregate_rankings([a, other_size], allow_mixed=True)  # indices of other pools mean other examples


class Pool:
    """A datamodule of a user's own: its pool's targets and nothing else of ours."""

    targets = TARGETS


def test_for_pool_makes_a_ranking_the_subset_rules_accept(tmp_path):
    scores = np.linspace(0.0, 1.0, 20)[::-1]  # example 0 scores highest
    for pool in (Pool(), TARGETS, TARGETS.tolist()):
        ranking = Ranking.for_pool(scores, pool, "own", direction="higher_is_harder")
        assert ranking.metadata["num_examples"] == 20 and ranking.metadata["fingerprint"] == pool_fingerprint(TARGETS)
        path = save_ranking(tmp_path / "own.npz", ranking)
        chosen = select_subset(SubsetSpec(ranking=str(path), fraction=0.25), TARGETS, CLASSES)
        assert sorted(chosen.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="neither a fingerprint nor targets"):
        Ranking.for_pool(scores, object(), "own")
    with pytest.raises(ValueError, match="outside the pool"):
        Ranking.for_pool([1.0, 2.0], Pool(), "own", indices=[3, 20])


def test_from_order_ranks_the_first_chosen_highest(tmp_path):
    order = [7, 2, 11]
    ranking = Ranking.from_order(order, TARGETS, "kcenters", budget=3)
    assert ranking.indices.tolist() == order and ranking.metadata["direction"] == "higher_is_chosen_first"
    again = load_ranking(save_ranking(tmp_path / "k.npz", ranking))
    assert again.indices.tolist() == order and again.metadata["budget"] == 3
    # a ranking of the same pool names it as well as the targets do
    assert Ranking.from_order(order, again, "kcenters").metadata["fingerprint"] == pool_fingerprint(TARGETS)


@pytest.mark.parametrize(
    "metadata, indices, message",
    [
        ({"statistic": "s", "num_examples": 20}, [0, 1], "lacks 'fingerprint'"),
        ({"statistic": "s", "fingerprint": "f"}, [0, 1], "lacks 'num_examples'"),
        ({"statistic": "s", "num_examples": 20, "fingerprint": "f"}, [0, 20], "outside the pool"),
    ],
)
def test_save_refuses_what_load_would_and_writes_nothing(tmp_path, metadata, indices, message):
    path = tmp_path / "bad.npz"
    with pytest.raises(ValueError, match=f"cannot save .*{message}.*Ranking.for_pool"):
        save_ranking(path, Ranking.from_scores([1.0, 0.0], metadata, indices))
    assert not list(tmp_path.iterdir())


def test_aggregated_forgetting_orders_as_tonevas_summed_counts():
    # two runs; inf = never learned. Toneva: first by the runs never learned, then by the summed counts
    a = seed_run([np.inf, np.inf, 5.0, np.inf], seed=1, indices=[0, 1, 2, 3])
    b = seed_run([3.0, np.inf, 4.0, 0.0], seed=2, indices=[0, 1, 2, 3])
    merged = aggregate_rankings([a, b], how="sum")
    # 1: never learned twice; 0 and 3: once, with 3 and 0 forgettings; 2: always learned, 9 forgettings
    assert merged.indices.tolist() == [1, 0, 3, 2]
    assert np.isfinite(merged.scores).all()
    weight = merged.metadata["never_learned_weight"]
    by_index = dict(zip(merged.indices.tolist(), merged.scores.tolist(), strict=True))
    assert {i: int(v // weight) for i, v in by_index.items()} == {1: 2, 0: 1, 3: 1, 2: 0}  # runs never learned
    assert by_index[2] == 9.0 and by_index[0] - weight == 3.0


def test_ties_on_a_pool_listed_by_class_keep_every_class_alike():
    targets = np.repeat(np.arange(10), 100)  # 1,000 examples sorted by class, as folder datasets list them
    metadata = {"statistic": "forgetting", "num_examples": 1000, "fingerprint": pool_fingerprint(targets), "seed": 3}
    scores = np.zeros(1000)
    scores[::50] = 1.0  # 20 forgotten examples; the other 980 tie at 0
    ranking = Ranking.from_scores(scores, metadata)
    assert set(ranking.indices[:20].tolist()) == set(range(0, 1000, 50)) and ranking.metadata["tie_seed"] == 3
    kept = np.bincount(targets[ranking.indices[:500]], minlength=10)
    assert kept.min() >= 35 and kept.max() <= 65, kept  # an index tie-break keeps classes 0-4 whole: 100, ..., 0
    again = Ranking.from_scores(scores, metadata)
    assert again.indices.tolist() == ranking.indices.tolist()  # reproducible
    other = Ranking.from_scores(scores, {**metadata, "seed": 4})
    assert other.indices.tolist() != ranking.indices.tolist()
