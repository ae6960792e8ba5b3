"""Proxy-quality metrics against values worked out by hand on small results tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_proxy.experiments import quality as q

PNG = b"\x89PNG\r\n\x1a\n"


def make_results(
    accuracies: dict[tuple[str, str], dict[str, float]],
    seconds: dict[str, float] | None = None,
) -> pd.DataFrame:
    """``{(dataset, strategy): {config: accuracy}}`` -> one row per run; seconds per strategy (default 1)."""
    rows = []
    for (dataset, strategy), by_config in accuracies.items():
        for config, accuracy in by_config.items():
            rows.append(
                {
                    "dataset": dataset,
                    "strategy": strategy,
                    "config": config,
                    "accuracy": accuracy,
                    "seconds": (seconds or {}).get(strategy, 1.0),
                }
            )
    return pd.DataFrame(rows)


def hand_r2(pairs: list[tuple[list[float], list[float]]]) -> float:
    """Pooled r² of target = beta * proxy over per-dataset z-scores, spelled out with plain numpy."""
    x = np.concatenate([(np.array(p) - np.mean(p)) / np.std(p) for p, _ in pairs])
    y = np.concatenate([(np.array(t) - np.mean(t)) / np.std(t) for _, t in pairs])
    beta = (x * y).sum() / (x * x).sum()
    return 1 - ((y - beta * x) ** 2).sum() / (y * y).sum()


def row(quality: pd.DataFrame, strategy: str) -> pd.Series:
    return quality.set_index("strategy").loc[strategy]


CONFIGS = ["c1", "c2", "c3", "c4"]


def test_r2_hand_value_single_dataset():
    # deviations of proxy [1,2,3,4] and target [1,3,2,4]: Sxy = 4, Sxx = Syy = 5 -> r = 0.8, r2 = 0.64
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
            ("a", "p"): dict(zip(CONFIGS, [0.1, 0.2, 0.3, 0.4], strict=True)),
        }
    )
    quality = q.proxy_quality(results)
    assert row(quality, "p").r2 == pytest.approx(0.64)
    assert row(quality, "target").r2 == 1.0


def test_r2_pools_z_scores_and_ignores_dataset_scale():
    # a: r = 0.8 over 4 configs; b: proxy deviations [-1,0,1], target [-1,1,0] -> r = 0.5 over 3 configs.
    # Pooled z-scores: Sxy = 4*0.8 + 3*0.5, Sxx = Syy = 7 -> r2 = 4.7**2 / 49
    a = {("a", "target"): [0.1, 0.3, 0.2, 0.4], ("a", "p"): [0.1, 0.2, 0.3, 0.4]}
    b = {("b", "target"): [0.7, 0.9, 0.8], ("b", "p"): [0.5, 0.6, 0.7]}
    spec = {k: dict(zip(CONFIGS, v, strict=False)) for k, v in {**a, **b}.items()}
    expected = 4.7**2 / 49
    assert expected == pytest.approx(
        hand_r2([(a[("a", "p")], a[("a", "target")]), (b[("b", "p")], b[("b", "target")])])
    )
    assert row(q.proxy_quality(make_results(spec)), "p").r2 == pytest.approx(expected)

    # shift and squeeze dataset b (a harder dataset): nothing changes
    shifted = {k: ({c: 0.5 * v - 0.3 for c, v in d.items()} if k[0] == "b" else d) for k, d in spec.items()}
    assert row(q.proxy_quality(make_results(shifted)), "p").r2 == pytest.approx(expected)

    by_dataset = q.proxy_quality(make_results(spec), by_dataset=True).set_index(["dataset", "strategy"])
    assert by_dataset.loc[("a", "p"), "r2"] == pytest.approx(0.64)
    assert by_dataset.loc[("b", "p"), "r2"] == pytest.approx(0.25)
    assert by_dataset.loc[("b", "p"), "n_configs"] == 3


def test_constant_proxy_has_zero_r2():
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
            ("a", "flat"): dict.fromkeys(CONFIGS, 0.5),
        }
    )
    flat = row(q.proxy_quality(results), "flat")
    assert flat.r2 == 0.0
    assert np.isnan(flat.spearman_good)


@pytest.mark.parametrize("fourth", [0.5, 0.97, 0.999])
def test_spearman_good_footnote_10(fourth: float):
    # proxy [.92, .93, .84, .86], target [.95, .99, .81, x]: Spearman([.92, .93], [.95, .99]) = 1
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.95, 0.99, 0.81, fourth], strict=True)),
            ("a", "p"): dict(zip(CONFIGS, [0.92, 0.93, 0.84, 0.86], strict=True)),
        }
    )
    assert row(q.proxy_quality(results), "p").spearman_good == 1.0


def test_spearman_good_quantile():
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.95, 0.99, 0.81, 0.5], strict=True)),
            ("a", "p"): dict(zip(CONFIGS, [0.92, 0.93, 0.84, 0.86], strict=True)),
        }
    )
    # all four configs: ranks [3, 4, 1, 2] vs [3, 4, 2, 1], sum d^2 = 2 -> 1 - 6*2/(4*15) = 0.8
    assert row(q.proxy_quality(results, good_quantile=0.0), "p").spearman_good == pytest.approx(0.8)
    # only the best config is good: fewer than 2 -> NaN
    assert np.isnan(row(q.proxy_quality(results, good_quantile=1.0), "p").spearman_good)


def test_relative_cost_over_matched_runs_and_repeats_averaged():
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
            ("b", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
            ("a", "p"): dict(zip(CONFIGS, [0.1, 0.2, 0.3, 0.4], strict=True)),
        }
    )
    # target seconds: 10 on a (where p ran), 100 on b (where it did not); p: 1, 2, 3, 2 on a
    results.loc[results.strategy == "target", "seconds"] = np.where(
        results[results.strategy == "target"].dataset == "a", 10.0, 100.0
    )
    results.loc[results.strategy == "p", "seconds"] = [1.0, 2.0, 3.0, 2.0]
    # a repeat of (a, p, c1) with 3 s and accuracy 0.3: c1 averages to 2 s and accuracy 0.2
    repeat = results[(results.strategy == "p") & (results.config == "c1")].assign(seconds=3.0, accuracy=0.3)
    results = pd.concat([results, repeat], ignore_index=True)
    quality = q.proxy_quality(results)
    p = row(quality, "p")
    assert p.relative_cost == pytest.approx((2 + 2 + 3 + 2) / 4 / 10)
    assert p.seconds == pytest.approx(9 / 4)
    assert p.n_configs == 4
    assert p.mean_accuracy == pytest.approx((0.2 + 0.2 + 0.3 + 0.4) / 4)
    assert row(quality, "target").relative_cost == 1.0
    assert list(quality.strategy) == ["target", "p"]
    assert p.family == "p"


def five_proxies() -> pd.DataFrame:
    """Target and five proxies on two datasets, with distinct costs and noisy accuracies."""
    rng = np.random.default_rng(3)
    configs = ["default", "model.lr=0.1", "model.lr=0.01", "model.lr=0.001", "model.wd=0.1", "model.wd=0.01"]
    spec, seconds = {}, {"target": 10.0}
    for dataset, scale in (("a", 0.9), ("b", 0.6)):
        truth = rng.normal(size=len(configs))
        spec[(dataset, "target")] = dict(zip(configs, scale + 0.02 * truth, strict=True))
        for i, noise in enumerate([0.2, 0.5, 1.0, 2.0, 4.0]):
            spec[(dataset, f"random-{i}")] = dict(
                zip(configs, scale - 0.1 + 0.02 * (truth + noise * rng.normal(size=len(configs))), strict=True)
            )
    seconds.update({f"random-{i}": cost for i, cost in enumerate([5.0, 3.0, 2.0, 1.0, 0.5])})
    return make_results(spec, seconds)


def test_cost_adjusted_r2_is_residual_of_cubic_fit():
    quality = q.proxy_quality(five_proxies())
    assert len(quality) == 6
    coefficients = np.polyfit(quality.relative_cost, quality.r2, 3)
    expected = quality.r2 - np.polyval(coefficients, quality.relative_cost)
    np.testing.assert_allclose(quality.cost_adjusted_r2, expected, atol=1e-12)
    # sorted with the target first, then by relative cost descending
    assert list(quality.strategy) == ["target", "random-0", "random-1", "random-2", "random-3", "random-4"]
    assert list(quality.relative_cost) == pytest.approx([1.0, 0.5, 0.3, 0.2, 0.1, 0.05])


def test_cost_adjusted_r2_hand_values():
    r2 = [1.0, 0.9, 0.5, 0.6, 0.2, 0.3]
    cost = [1.0, 0.5, 0.4, 0.3, 0.1, 0.05]
    expected = np.array(r2) - np.polyval(np.polyfit(cost, r2, 3), cost)
    np.testing.assert_allclose(q.cost_adjusted_r2(r2, cost), expected, atol=1e-12)
    # exactly degree + 1 points: the polynomial goes through all of them
    np.testing.assert_allclose(q.cost_adjusted_r2(r2[:4], cost[:4], degree=3), 0.0, atol=1e-9)
    # with four strategies the default degree is 2, with three it is 1, with two a constant
    np.testing.assert_allclose(
        q.cost_adjusted_r2(r2[:4], cost[:4]), np.array(r2[:4]) - np.polyval(np.polyfit(cost[:4], r2[:4], 2), cost[:4])
    )
    np.testing.assert_allclose(q.cost_adjusted_r2([1.0, 0.6], [1.0, 0.1]), [0.2, -0.2])
    assert np.isnan(q.cost_adjusted_r2([1.0, np.nan, 0.5], [1.0, 0.5, 0.1])[1])


def test_cost_adjusted_r2_with_two_and_one_strategies():
    spec = {
        ("a", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
        ("a", "p"): dict(zip(CONFIGS, [0.1, 0.2, 0.3, 0.4], strict=True)),
    }
    quality = q.proxy_quality(make_results(spec, {"target": 10.0, "p": 1.0}))
    # a constant fit: the mean of r2 = (1 + 0.64) / 2, residuals +-0.18
    assert row(quality, "target").cost_adjusted_r2 == pytest.approx(0.18)
    assert row(quality, "p").cost_adjusted_r2 == pytest.approx(-0.18)
    only_target = q.proxy_quality(make_results({("a", "target"): spec[("a", "target")]}))
    assert only_target.cost_adjusted_r2.tolist() == [0.0]


def test_best_match_and_regret():
    results = make_results(
        {
            # a: the proxy picks c3 (0.75) but the target's best is c2: regret 0.90 - 0.85 = 0.05
            ("a", "target"): {"c1": 0.80, "c2": 0.90, "c3": 0.85},
            ("a", "p"): {"c1": 0.70, "c2": 0.60, "c3": 0.75},
            # b: c1 and c2 tie on the proxy; c1 (first by name) is picked and is the target's best
            ("b", "target"): {"c1": 0.50, "c2": 0.40, "c3": 0.45},
            ("b", "p"): {"c2": 0.30, "c1": 0.30, "c3": 0.20},
        }
    )
    p = row(q.proxy_quality(results), "p")
    assert p.best_match == 0.5
    assert p.regret == pytest.approx(0.05 / 2)
    by_dataset = q.proxy_quality(results, by_dataset=True).set_index(["dataset", "strategy"])
    assert by_dataset.loc[("a", "p"), "regret"] == pytest.approx(0.05)
    assert by_dataset.loc[("a", "p"), "best_match"] == 0.0
    assert by_dataset.loc[("b", "p"), ["best_match", "regret"]].tolist() == [1.0, 0.0]
    assert row(q.proxy_quality(results), "target")[["best_match", "regret"]].tolist() == [1.0, 0.0]


def test_epoch_agreement_hand_curves():
    runs = [
        # dataset d: four configs, r2 with a longer curve (epochs past the shortest run's 3 are ignored)
        ("d", "c1", [0.5, 0.6, 0.7]),
        ("d", "c2", [0.4, 0.6, 0.8, 0.75]),
        ("d", "c3", [0.6, 0.5, 0.65]),
        ("d", "c4", [0.3, 0.7, 0.8]),  # tied with c2 at the end: pair (c2, c4) left out
        ("e", "c1", [0.1, 0.2, 0.3]),
        ("e", "c2", [0.2, 0.1, 0.4]),
    ]
    results = pd.DataFrame(
        [
            {
                "dataset": d,
                "strategy": "target",
                "config": c,
                "accuracy": max(curve),
                "seconds": 1.0,
                "epoch_accuracies": json.dumps(curve),
            }
            for d, c, curve in runs
        ]
    )
    # a proxy's run does not count, nor a target run without a curve
    extra = [
        results.iloc[:1].assign(strategy="p", epoch_accuracies="[0.9, 0.1, 0.2]"),
        results.iloc[:1].assign(config="c9", epoch_accuracies="[]"),
    ]
    results = pd.concat([results, *extra], ignore_index=True)
    agreement = q.epoch_agreement(results)
    # epoch 1: d pairs (1,2) 0, (1,3) 0, (2,3) 0, (1,4) 0, (3,4) 0; e: 1      -> 1/6
    # epoch 2: d pairs (1,2) tie 0.5, (1,3) 1, (2,3) 1, (1,4) 1, (3,4) 1; e: 0 -> 4.5/6
    assert agreement.epoch.tolist() == [1, 2]
    assert agreement.probability.tolist() == pytest.approx([1 / 6, 4.5 / 6])
    assert agreement.pairs.tolist() == [6, 6]


def test_epoch_agreement_skips_repeats_of_one_config():
    results = pd.DataFrame(
        {
            "dataset": "d",
            "strategy": "target",
            "config": ["c1", "c1", "c2"],
            "accuracy": [0.5, 0.6, 0.7],
            "seconds": 1.0,
            "epoch_accuracies": [[0.5, 0.5], [0.6, 0.6], [0.4, 0.7]],
            "trial": [0, 1, 0],
        }
    )
    agreement = q.epoch_agreement(results)
    assert agreement.pairs.tolist() == [2]
    assert agreement.probability.tolist() == [0.0]
    with pytest.raises(ValueError, match="epoch_accuracies"):
        q.epoch_agreement(results.drop(columns="epoch_accuracies"))


def grid_results() -> pd.DataFrame:
    """Two datasets; configs: default, two learning rates, two weight decays; target and two proxies."""
    configs = ["default", "model.lr=0.1", "model.lr=0.01", "model.wd=0.1", "model.wd=0.01"]
    target = {"a": [0.80, 0.70, 0.85, 0.75, 0.78], "b": [0.50, 0.45, 0.40, 0.55, 0.52]}
    good = {"a": [0.60, 0.50, 0.62, 0.55, 0.54], "b": [0.30, 0.28, 0.20, 0.33, 0.36]}
    bad = {"a": [0.60, 0.65, 0.40, 0.62, 0.50], "b": [0.30, 0.35, 0.25, 0.20, 0.28]}
    spec = {}
    for dataset in ("a", "b"):
        spec[(dataset, "target")] = dict(zip(configs, target[dataset], strict=True))
        spec[(dataset, "good")] = dict(zip(configs, good[dataset], strict=True))
        spec[(dataset, "bad")] = dict(zip(configs, bad[dataset], strict=True))
    return make_results(spec, {"target": 10.0, "good": 2.0, "bad": 1.0})


def test_split_half_two_datasets_and_grid():
    results = grid_results()
    split = q.split_half(results)
    assert set(split.columns) >= {"split", "strategy", "metric", "half_a", "half_b", "half_a_name", "half_b_name"}
    assert set(split.strategy) == {"good", "bad"}
    assert set(split.metric) == {"r2", "spearman_good", "cost_adjusted_r2"}
    r2 = split[split.metric == "r2"].set_index(["split", "strategy"])

    def accuracies(dataset: str, strategy: str, keep) -> list[float]:
        d = results[(results.dataset == dataset) & (results.strategy == strategy) & results.config.map(keep)]
        return d.sort_values("config").accuracy.tolist()

    everything, lr = (lambda c: True), (lambda c: c == "default" or c.startswith("model.lr="))
    rest = lambda c: not c.startswith("model.lr=")  # noqa: E731
    for strategy in ("good", "bad"):
        for dataset, half in (("a", "half_a"), ("b", "half_b")):
            pair = (accuracies(dataset, strategy, everything), accuracies(dataset, "target", everything))
            assert r2.loc[("dataset", strategy), half] == pytest.approx(hand_r2([pair]))
        for keep, half in ((lr, "half_a"), (rest, "half_b")):
            pairs = [(accuracies(d, strategy, keep), accuracies(d, "target", keep)) for d in ("a", "b")]
            assert r2.loc[("grid", strategy), half] == pytest.approx(hand_r2(pairs))
    names = split.drop_duplicates("split").set_index("split")[["half_a_name", "half_b_name"]]
    assert names.loc["dataset"].tolist() == ["a", "b"]
    assert names.loc["grid"].tolist() == ["model.lr", "other"]

    correlation = q.split_half_correlation(split).set_index(["split", "metric"])
    g = split[(split.split == "grid") & (split.metric == "r2")]
    assert correlation.loc[("grid", "r2"), "correlation"] == pytest.approx(np.corrcoef(g.half_a, g.half_b)[0, 1])
    assert correlation.loc[("grid", "r2"), "n"] == 2

    one_dataset = q.split_half(results[results.dataset == "a"])
    assert set(one_dataset.split) == {"grid"}


def test_split_half_uses_hyperparameter_column():
    results = grid_results()
    results["hyperparameter"] = results.config.str.split("=").str[0]
    results.loc[results.config == "model.wd=0.1", "hyperparameter"] = "model.lr"  # as if it were in the lr grid
    split = q.split_half(results)
    assert not split[split.split == "grid"].empty
    # three lr-half configs on each dataset vs two others plus default
    r2 = split[(split.split == "grid") & (split.metric == "r2") & (split.strategy == "good")].iloc[0]
    d = results[results.strategy.isin(["good", "target"])]
    lr = d[d.hyperparameter.isin(["model.lr", "default"])]
    pairs = []
    for dataset in ("a", "b"):
        x = lr[(lr.dataset == dataset) & (lr.strategy == "good")].sort_values("config").accuracy.tolist()
        y = lr[(lr.dataset == dataset) & (lr.strategy == "target")].sort_values("config").accuracy.tolist()
        pairs.append((x, y))
    assert r2.half_a == pytest.approx(hand_r2(pairs))


def test_family_column_and_derivation():
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
            ("a", "easiest-0.1"): dict(zip(CONFIGS, [0.1, 0.2, 0.3, 0.4], strict=True)),
            ("a", "half_classes-0.5"): dict(zip(CONFIGS, [0.1, 0.2, 0.3, 0.4], strict=True)),
        }
    )
    assert row(q.proxy_quality(results), "easiest-0.1").family == "easiest"
    results["family"] = np.where(results.strategy == "half_classes-0.5", "classes", None)
    quality = q.proxy_quality(results)
    assert row(quality, "half_classes-0.5").family == "classes"
    assert row(quality, "target").family == "target"


def test_errors():
    results = make_results(
        {
            ("a", "target"): dict(zip(CONFIGS, [0.1, 0.3, 0.2, 0.4], strict=True)),
            ("a", "p"): dict(zip(CONFIGS, [0.1, 0.2, 0.3, 0.4], strict=True)),
        }
    )
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['seconds'\]"):
        q.proxy_quality(results.drop(columns="seconds"))
    with pytest.raises(ValueError, match="no rows of the target strategy 'target'"):
        q.proxy_quality(results[results.strategy != "target"])
    extra = pd.DataFrame([{"dataset": "a", "strategy": "p", "config": "c9", "accuracy": 0.5, "seconds": 1.0}])
    with pytest.raises(ValueError, match="no 'target' run with the same dataset and config.*c9"):
        q.proxy_quality(pd.concat([results, extra], ignore_index=True))
    with pytest.raises(ValueError, match="fewer than 2 configs"):
        q.proxy_quality(results[results.config.isin(["c1"]) | (results.strategy == "target")])
    with pytest.raises(ValueError, match="good_quantile"):
        q.proxy_quality(results, good_quantile=2.0)
    with pytest.raises(ValueError, match="quality lacks"):
        q.table2(results)


def test_table2_markdown():
    quality = q.proxy_quality(grid_results())
    text = q.table2(quality)
    lines = text.splitlines()
    assert lines[0] == "| strategy | r2 | spearman_good | cost_adjusted_r2 | relative_cost | best_match | regret |"
    assert len(lines) == 2 + len(quality)
    assert lines[2].startswith("| target | 1.000 |")
    good = row(quality, "good")
    assert f"| good | {good.r2:.3f} | " in text
    tiny = quality.assign(cost_adjusted_r2=-1e-7, regret=np.nan)
    assert "| 0.000 |" in q.table2(tiny) and "-0.000" not in q.table2(tiny) and "| n/a |" in q.table2(tiny)


def test_import_does_not_load_torch():
    code = "import sys, lightning_proxy.experiments.quality; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_report_writes_everything(tmp_path: Path):
    results = five_proxies()
    results["epoch_accuracies"] = [json.dumps([a - 0.1, a - 0.05, a]) for a in results.accuracy]
    results.to_csv(tmp_path / "results.csv", index=False)
    out = tmp_path / "report"
    quality = q.report(tmp_path / "results.csv", out)
    assert list(quality.strategy)[0] == "target"
    for name in (
        "quality.csv",
        "quality_by_dataset.csv",
        "table2.md",
        "table2.csv",
        "split_half.csv",
        "split_half_correlation.csv",
        "epoch_agreement.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    for name in ("proxy_vs_target.png", "quality_vs_cost.png", "split_half.png", "epoch_agreement.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG), name
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    saved = pd.read_csv(out / "quality.csv")
    np.testing.assert_allclose(saved.r2, quality.r2)
    assert set(pd.read_csv(out / "quality_by_dataset.csv").dataset) == {"a", "b"}
    assert (out / "table2.md").read_text() == q.table2(quality)
    assert pd.read_csv(out / "split_half.csv").split.unique().tolist() == ["dataset", "grid"]


def test_report_one_dataset_without_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    results = grid_results()
    q.report(results[results.dataset == "a"], tmp_path)
    printed = capsys.readouterr().out
    assert "no dataset split" in printed and "epoch_accuracies" in printed
    assert not (tmp_path / "epoch_agreement.csv").exists()
    assert (tmp_path / "split_half.png").read_bytes().startswith(PNG)
    assert set(pd.read_csv(tmp_path / "split_half.csv").split) == {"grid"}


def test_plots_return_their_path(tmp_path: Path):
    results = grid_results()
    path = q.plot_proxy_vs_target(results, tmp_path / "f1.png", strategies=["good"])
    assert path == tmp_path / "f1.png" and path.read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match="not in the results"):
        q.plot_proxy_vs_target(results, tmp_path / "f1.png", strategies=["nope"])
    grid_only = q.split_half(results[results.dataset == "a"])
    assert q.plot_split_half(grid_only, tmp_path / "f3.png").read_bytes().startswith(PNG)
    agreement = pd.DataFrame({"epoch": [1, 2], "probability": [0.7, 0.9], "pairs": [10, 10]})
    assert q.plot_epoch_agreement(agreement, tmp_path / "f4.png").read_bytes().startswith(PNG)
    quality = q.proxy_quality(results)
    assert q.plot_quality_vs_cost(quality, tmp_path / "f2.png").read_bytes().startswith(PNG)


def test_proxy_quality_is_public_at_the_package_level():
    from lightning_proxy.experiments import proxy_quality

    assert proxy_quality is q.proxy_quality


def equal_compute_results() -> pd.DataFrame:
    rows = [
        # strategy, config, accuracy, seconds, pruned
        ("target", "x", 0.90, 10.0, False),
        ("target", "y", 0.80, 10.0, False),
        ("target", "z", 0.70, 10.0, False),
        ("easiest-0.1", "x", 0.50, 1.0, False),
        ("easiest-0.1", "y", 0.60, 1.0, False),
        ("easiest-0.1", "z", 0.40, 1.0, False),
        ("successive_halving-3", "x", 0.88, 10.0, False),
        ("successive_halving-3", "y", 0.85, 10.0, False),
        ("successive_halving-3", "z", 0.95, 1.0, True),  # pruned: its partial accuracy picks nothing
    ]
    frame = pd.DataFrame(rows, columns=["strategy", "config", "accuracy", "seconds", "pruned"])
    frame["family"] = frame.strategy.str.split("-").str[0]
    return frame.assign(dataset="d")


def test_the_hybrid_promotes_exactly_the_top_share():
    results = equal_compute_results()
    assert q.promoted(results, "easiest-0.1", 0.5) == {"d": ["y", "x"]}  # ceil(0.5 * 3) = 2, best first
    assert q.promoted(results, "easiest-0.1", 0.1) == {"d": ["y"]}  # at least one
    assert q.promoted(results, "easiest-0.1", 1.0) == {"d": ["y", "x", "z"]}
    with pytest.raises(ValueError, match="no runs of strategy 'hardest-0.1'"):
        q.promoted(results, "hardest-0.1", 0.5)


def test_equal_compute_regret_and_cost_worked_out_by_hand():
    table = q.equal_compute(equal_compute_results(), promote=[{"strategy": "easiest-0.1", "top": 0.5}])
    table = table.set_index("strategy")
    # the proxy picks y (0.6 on the proxy): 0.9 - 0.8 lost, for 3 s of the target's 30
    assert table.loc["easiest-0.1", "regret"] == pytest.approx(0.1)
    assert table.loc["easiest-0.1", "relative_compute"] == pytest.approx(0.1)
    # the hybrid trains y and x on the target as well: picks x, for 3 + 20 s
    assert table.loc["easiest-0.1+top0.5", "regret"] == pytest.approx(0.0)
    assert table.loc["easiest-0.1+top0.5", "relative_compute"] == pytest.approx(23 / 30)
    assert table.loc["easiest-0.1+top0.5", "kind"] == "hybrid"
    # successive halving picks the best it did not prune (x), for 21 s
    assert table.loc["successive_halving-3", "regret"] == pytest.approx(0.0)
    assert table.loc["successive_halving-3", "relative_compute"] == pytest.approx(0.7)
    assert table.loc["successive_halving-3", "kind"] == "multi_fidelity"
    assert table.loc["target", "regret"] == 0.0 and table.loc["target", "relative_compute"] == 1.0
    assert table.loc["easiest-0.1", "spearman_good"] == pytest.approx(-1.0)  # good x, y: 0.5 < 0.6 but 0.9 > 0.8
