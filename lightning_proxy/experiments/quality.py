"""Proxy quality: how well results on a cheap proxy task predict results on the full (target) task.

The metrics of "proxy datasets for hyperparameter search" (section 3.2, Table 2, Figures 1-4), computed from
a results table with one row per training run (columns ``dataset``, ``strategy``, ``config``, ``accuracy``,
``seconds``; optional ``family``, ``hyperparameter``, ``epoch_accuracies``, ``trial``). The strategy named
``target`` is the full task; every other strategy is a proxy whose configurations are matched with the
target's by ``(dataset, config)``. Repeat runs of one ``(dataset, strategy, config)`` are averaged.

Only numpy, pandas, scipy and matplotlib (its Agg canvas, no pyplot state): importable without torch.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_proxy.experiments.plots import new_figure
from lightning_proxy.files import save_figure, write_csv, write_text

REQUIRED = ("dataset", "strategy", "config", "accuracy", "seconds")
METRICS = ("r2", "spearman_good", "cost_adjusted_r2")
TABLE2 = ("strategy", "r2", "spearman_good", "cost_adjusted_r2", "relative_cost", "best_match", "regret")
SPLITS = ("dataset", "grid")
FAMILY_COLORS = {
    "target": "black",
    "random": "tab:green",
    "half_classes": "tab:orange",
    "other_half_classes": "tab:brown",
    "easiest": "tab:red",
    "hardest": "tab:blue",
    "epochs": "tab:purple",
}
MULTI_FIDELITY = ("successive_halving", "hyperband")  # families that search the target task with a pruner
KIND_MARKERS = {"target": "*", "proxy": "o", "multi_fidelity": "s", "hybrid": "D"}


# ----------------------------------------------------------------------------------------------- tables


def _runs(results: pd.DataFrame) -> pd.DataFrame:
    """Validated copy of the results, with ``family`` and ``hyperparameter`` filled in where absent."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}; load it with pd.read_csv")
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(
            f"results lack the column(s) {missing}; a results table needs {list(REQUIRED)} "
            f"(one row per training run), it has {list(results.columns)}"
        )
    runs = results.copy()
    for column in ("dataset", "strategy", "config"):
        runs[column] = runs[column].astype(str)
    for column in ("accuracy", "seconds"):
        runs[column] = pd.to_numeric(runs[column], errors="coerce")
    failed = runs.accuracy.isna()
    if failed.any():
        warnings.warn(f"{int(failed.sum())} run(s) without an accuracy are left out", stacklevel=3)
        runs = runs[~failed]
    derived_family = runs.strategy.str.split("-", n=1).str[0]
    runs["family"] = runs["family"].fillna(derived_family).astype(str) if "family" in runs else derived_family
    derived_hp = runs.config.where(runs.config == "default", runs.config.str.split("=", n=1).str[0])
    if "hyperparameter" in runs:
        runs["hyperparameter"] = runs["hyperparameter"].fillna(derived_hp).astype(str)
    else:
        runs["hyperparameter"] = derived_hp
    return runs


def _matched(results: pd.DataFrame, target: str = "target") -> pd.DataFrame:
    """One row per (dataset, strategy, config) with its proxy and target accuracy, seconds and z-scores.

    Repeat runs are averaged first. ``zx``/``zy`` are the proxy/target accuracies z-scored (ddof=0) within
    the (dataset, strategy) over the configurations both have, so a dataset's accuracy scale cancels out
    (footnote 9); a constant set of accuracies gets z = 0.
    """
    runs = _runs(results)
    mean = (
        runs.groupby(["dataset", "strategy", "config"], sort=True)
        .agg(
            accuracy=("accuracy", "mean"),
            seconds=("seconds", "mean"),
            family=("family", "first"),
            hyperparameter=("hyperparameter", "first"),
        )
        .reset_index()
    )
    reference = mean[mean.strategy == target]
    if reference.empty:
        raise ValueError(
            f"no rows of the target strategy {target!r} (strategies: {sorted(mean.strategy.unique())}); "
            f"the full task's runs are the reference, so run it or pass target= with its name"
        )
    reference = reference[["dataset", "config", "accuracy", "seconds"]].rename(
        columns={"accuracy": "target", "seconds": "target_seconds"}
    )
    both = mean.merge(reference, on=["dataset", "config"], how="left", validate="many_to_one")
    orphans = both[both.target.isna()]
    if not orphans.empty:
        examples = orphans[["strategy", "dataset", "config"]].head(5).to_dict("records")
        raise ValueError(
            f"{len(orphans)} proxy run(s) have no {target!r} run with the same dataset and config, e.g. {examples}; "
            f"run the target for those configs or drop those rows"
        )
    both = both.rename(columns={"accuracy": "proxy", "seconds": "proxy_seconds"})
    sizes = both.groupby(["dataset", "strategy"]).size()
    small = sizes[sizes < 2]
    if not small.empty:
        raise ValueError(
            f"fewer than 2 configs matched with the target for (dataset, strategy) {list(small.index)}; "
            f"a correlation needs at least 2 configurations: run more configs or drop those rows"
        )
    group = both.groupby(["dataset", "strategy"])
    both["zx"] = _zscore(both.proxy, group)
    both["zy"] = _zscore(both.target, group)
    return both


def _zscore(values: pd.Series, group: Any) -> pd.Series:
    mean = group[values.name].transform("mean")
    std = group[values.name].transform(lambda v: v.std(ddof=0))
    return ((values - mean) / std.where(std > 0)).fillna(0.0)


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    """r² of the no-intercept regression y = beta x; 0 when x is constant, NaN when y is."""
    sxx, syy = float(np.dot(x, x)), float(np.dot(y, y))
    if sxx == 0:
        return 0.0
    if syy == 0:
        return float("nan")
    beta = float(np.dot(x, y)) / sxx
    return 1.0 - float(np.sum((y - beta * x) ** 2)) / syy


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return round(float(spearmanr(x, y).statistic), 12)  # two ranks give 0.9999999999999999, not 1


def _best(frame: pd.DataFrame, column: str) -> str:
    """The config with the highest ``column``; ties go to the config name that sorts first."""
    return str(frame.sort_values([column, "config"], ascending=[False, True]).config.iloc[0])


def _strategy_row(g: pd.DataFrame, good_quantile: float) -> dict[str, Any]:
    good_x: list[np.ndarray] = []
    good_y: list[np.ndarray] = []
    matches: list[float] = []
    regrets: list[float] = []
    for _, d in g.groupby("dataset"):
        proxy = d.proxy.to_numpy()
        good = proxy >= np.quantile(proxy, good_quantile)
        good_x.append(d.zx.to_numpy()[good])
        good_y.append(d.zy.to_numpy()[good])
        proxy_best, target_best = _best(d, "proxy"), _best(d, "target")
        by_config = d.set_index("config").target
        matches.append(float(proxy_best == target_best))
        regrets.append(float(by_config[target_best] - by_config[proxy_best]))
    return {
        "strategy": g.strategy.iloc[0],
        "family": g.family.iloc[0],
        "r2": _r2(g.zx.to_numpy(), g.zy.to_numpy()),
        "spearman_good": _spearman(np.concatenate(good_x), np.concatenate(good_y)),
        "relative_cost": g.proxy_seconds.mean() / g.target_seconds.mean(),
        "best_match": float(np.mean(matches)),
        "regret": float(np.mean(regrets)),
        "n_configs": len(g),
        "n_datasets": g.dataset.nunique(),
        "mean_accuracy": g.proxy.mean(),
        "seconds": g.proxy_seconds.mean(),
    }


def _cost_degree(relative_cost: np.ndarray) -> int:
    return max(0, min(3, len(relative_cost) - 2, len(np.unique(relative_cost)) - 1))


def _cost_fit(relative_cost: Sequence[float], r2: Sequence[float], degree: int | None = None) -> np.poly1d | None:
    x, y = np.asarray(relative_cost, dtype=float), np.asarray(r2, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return None
    x, y = x[keep], y[keep]
    return np.poly1d(np.polyfit(x, y, _cost_degree(x) if degree is None else degree))


def cost_adjusted_r2(r2: Sequence[float], relative_cost: Sequence[float], degree: int | None = None) -> np.ndarray:
    """r2 minus a polynomial fit of r2 on relative cost: quality beyond what a proxy's cost alone buys.

    Least squares (``np.polyfit``) over the finite points. The paper's degree is 3; by default it is lowered to
    ``min(3, n - 2, distinct costs - 1)`` (at least 0, a constant) so that a handful of strategies keeps a
    residual degree of freedom and the fit is never rank-deficient. NaN where r2 or the cost is NaN.
    """
    fit = _cost_fit(relative_cost, r2, degree)
    r2 = np.asarray(r2, dtype=float)
    if fit is None:
        return np.full(len(r2), np.nan)
    return r2 - fit(np.asarray(relative_cost, dtype=float))


def _quality(matched: pd.DataFrame, good_quantile: float, target: str) -> pd.DataFrame:
    rows = [_strategy_row(g, good_quantile) for _, g in matched.groupby("strategy", sort=True)]
    quality = pd.DataFrame(rows)
    quality.loc[quality.strategy == target, ["r2", "relative_cost"]] = 1.0
    quality["cost_adjusted_r2"] = cost_adjusted_r2(quality.r2, quality.relative_cost)
    first = ["strategy", "family", "r2", "spearman_good", "cost_adjusted_r2", "relative_cost", "best_match", "regret"]
    quality = quality[first + [c for c in quality.columns if c not in first]]
    quality["_reference"] = quality.strategy != target
    quality = quality.sort_values(["_reference", "relative_cost", "strategy"], ascending=[True, False, True])
    return quality.drop(columns="_reference").reset_index(drop=True)


def proxy_quality(
    results: pd.DataFrame, good_quantile: float = 0.5, by_dataset: bool = False, target: str = "target"
) -> pd.DataFrame:
    """One row per strategy: how well its accuracies predict the target's over the same configurations.

    Columns: ``r2`` (no-intercept regression of target on proxy accuracy, both z-scored within each dataset and
    strategy, pooled over datasets; a strategy with constant proxy accuracies gets r2 = 0; the target 1),
    ``spearman_good`` (Spearman over the configs at or above the ``good_quantile`` quantile of the strategy's
    proxy accuracies on each dataset, pooled on the z-scores; NaN with fewer than 2 or constant),
    ``cost_adjusted_r2`` (see :func:`cost_adjusted_r2`, fitted across the strategies of this table),
    ``relative_cost`` (mean seconds of the strategy's runs over those of the target's runs of the same
    (dataset, config)), ``best_match`` (share of datasets where the proxy's best config is the target's;
    ties go to the config name that sorts first), ``regret`` (mean over datasets of the target accuracy lost
    by taking the proxy's best config instead of the target's best, both among the matched configs),
    ``n_configs`` (matched, summed over datasets), ``n_datasets``, ``family``, ``mean_accuracy`` (proxy),
    ``seconds`` (mean run time). Sorted with the target first, then by relative_cost descending, then name.

    With ``by_dataset`` one row per (dataset, strategy), every metric computed on that dataset alone.
    """
    if not 0.0 <= good_quantile <= 1.0:
        raise ValueError(f"good_quantile must be in [0, 1], got {good_quantile}")
    matched = _matched(results, target)
    if not by_dataset:
        return _quality(matched, good_quantile, target)
    parts = [
        _quality(d, good_quantile, target).assign(dataset=name) for name, d in matched.groupby("dataset", sort=True)
    ]
    quality = pd.concat(parts, ignore_index=True)
    return quality[["dataset"] + [c for c in quality.columns if c != "dataset"]]


def _curve(value: Any) -> list[float] | None:
    """Per-epoch accuracies from a JSON list string (or a list); None when there are none."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else None
    if isinstance(value, list | tuple | np.ndarray) and len(value):
        return [float(v) for v in value]
    return None


def epoch_agreement(results: pd.DataFrame, strategy: str = "target") -> pd.DataFrame:
    """Figure 4: how often the run ahead after epoch k is still ahead at the end (early stopping's odds).

    Over all pairs of runs of different configs within a dataset: for k = 1..E-1 (E the shortest run's
    number of epochs) the share of pairs whose leader after epoch k has the higher final ``accuracy``; a tie
    at epoch k counts 0.5, pairs tied at the end are left out. Columns ``epoch``, ``probability``, ``pairs``.
    """
    runs = _runs(results)
    if "epoch_accuracies" not in runs:
        raise ValueError("results lack the column 'epoch_accuracies' (JSON list of per-epoch validation accuracies)")
    runs = runs[runs.strategy == strategy]
    curves = runs.epoch_accuracies.map(_curve)
    runs, curves = runs[curves.notna()], curves[curves.notna()]
    if runs.empty:
        raise ValueError(f"no runs of strategy {strategy!r} with epoch_accuracies")
    epochs = min(len(c) for c in curves)
    if epochs < 2:
        raise ValueError(f"the shortest run of {strategy!r} has {epochs} epoch(s); agreement needs at least 2")
    scores = [[] for _ in range(epochs - 1)]
    for _, d in runs.assign(curve=curves).groupby("dataset"):
        acc = np.array([c[:epochs] for c in d.curve])
        final = d.accuracy.to_numpy(dtype=float)
        config = d.config.to_numpy()
        i, j = np.triu_indices(len(d), k=1)
        keep = (config[i] != config[j]) & (final[i] != final[j])
        i, j = i[keep], j[keep]
        lead_end = np.sign(final[i] - final[j])
        for k in range(epochs - 1):
            lead = np.sign(acc[i, k] - acc[j, k])
            scores[k].append(np.where(lead == 0, 0.5, (lead == lead_end).astype(float)))
    rows = []
    for k, parts in enumerate(scores, start=1):
        s = np.concatenate(parts)
        rows.append({"epoch": k, "probability": float(s.mean()) if len(s) else float("nan"), "pairs": len(s)})
    return pd.DataFrame(rows, columns=["epoch", "probability", "pairs"])


def split_half(
    results: pd.DataFrame, good_quantile: float = 0.5, target: str = "target", grid_key: str = "model.lr"
) -> pd.DataFrame:
    """Figure 3: the metrics measured on two independent halves, to see whether proxy quality transfers.

    ``split="dataset"``: the first two datasets (in name order), each alone; no rows with one dataset.
    ``split="grid"``: the configs whose ``hyperparameter`` is ``grid_key`` against all the others, the
    ``default`` config in both; no rows when either half has nothing but the default. The target (metrics
    fixed by construction) is left out. Long format: ``split``, ``strategy``, ``metric``, ``half_a``,
    ``half_b``, ``half_a_name``, ``half_b_name``. A half whose metrics cannot be computed skips its split
    with a warning.
    """
    runs = _runs(results)
    halves: list[tuple[str, str, pd.DataFrame, str, pd.DataFrame]] = []
    datasets = sorted(runs.dataset.unique())
    if len(datasets) >= 2:
        a, b = datasets[:2]
        halves.append(("dataset", a, runs[runs.dataset == a], b, runs[runs.dataset == b]))
    default = runs.hyperparameter == "default"
    in_grid = runs.hyperparameter == grid_key
    rest = ~in_grid & ~default
    if in_grid.any() and rest.any():
        halves.append(("grid", grid_key, runs[in_grid | default], "other", runs[rest | default]))
    rows = []
    for split, name_a, part_a, name_b, part_b in halves:
        try:
            qa = proxy_quality(part_a, good_quantile, target=target)
            qb = proxy_quality(part_b, good_quantile, target=target)
        except ValueError as error:
            warnings.warn(f"split {split!r} skipped: {error}", stacklevel=2)
            continue
        both = qa.merge(qb, on="strategy", suffixes=("_a", "_b"))
        both = both[both.strategy != target]
        for metric in METRICS:
            for _, row in both.iterrows():
                rows.append(
                    {
                        "split": split,
                        "strategy": row.strategy,
                        "metric": metric,
                        "half_a": row[f"{metric}_a"],
                        "half_b": row[f"{metric}_b"],
                        "half_a_name": name_a,
                        "half_b_name": name_b,
                    }
                )
    columns = ["split", "strategy", "metric", "half_a", "half_b", "half_a_name", "half_b_name"]
    return pd.DataFrame(rows, columns=columns)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def split_half_correlation(split_df: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of half_a vs half_b per (split, metric): high means the metric transfers.

    Columns ``split``, ``metric``, ``correlation`` (NaN with fewer than 2 finite pairs or a constant half),
    ``n`` (strategies with both halves finite).
    """
    rows = []
    for (split, metric), g in split_df.groupby(["split", "metric"], sort=False):
        x, y = g.half_a.to_numpy(dtype=float), g.half_b.to_numpy(dtype=float)
        n = int((np.isfinite(x) & np.isfinite(y)).sum())
        rows.append({"split": split, "metric": metric, "correlation": _pearson(x, y), "n": n})
    return pd.DataFrame(rows, columns=["split", "metric", "correlation", "n"])


# ----------------------------------------------------------------------------------- at equal compute


def promoted(results: pd.DataFrame, strategy: str, top: float) -> dict[str, list[str]]:
    """The hybrid's first rung: per dataset, the ``top`` share (at least one) of the configurations by their
    accuracy on proxy ``strategy`` (ties by name), which it then trains on the target task."""
    if not 0 < top <= 1:
        raise ValueError(f"promote top must be a share in (0, 1], got {top}")
    runs = _runs(results)
    proxy = runs[runs.strategy == strategy].groupby(["dataset", "config"], as_index=False).accuracy.mean()
    if proxy.empty:
        raise ValueError(f"promote: no runs of strategy {strategy!r} (strategies: {sorted(runs.strategy.unique())})")
    out = {}
    for dataset, d in proxy.groupby("dataset"):
        ranked = d.sort_values(["accuracy", "config"], ascending=[False, True]).config.tolist()
        out[str(dataset)] = ranked[: max(1, int(np.ceil(top * len(ranked))))]
    return out


def equal_compute(
    results: pd.DataFrame,
    promote: Sequence[dict[str, Any]] = (),
    target: str = "target",
    good_quantile: float = 0.5,
    quality: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every strategy as a way to pick a configuration, against what it cost: one row per strategy.

    ``total_seconds`` is the time of all its runs over the grid (pruned runs count what they trained),
    ``relative_compute`` that over the target's, ``regret`` the target accuracy of the target's best
    configuration minus that of the strategy's pick (its best configuration; under a pruner the best that
    was not pruned), averaged over datasets, and ``spearman_good`` as in :func:`proxy_quality`. Each
    ``promote`` entry ``{strategy, top}`` adds a hybrid ``<strategy>+top<top>``: every configuration on the
    proxy, the :func:`promoted` share on the target task, the best of those on the target picked, its
    cost the proxy's runs plus the promoted target runs. ``quality``: :func:`proxy_quality` of the same
    results, when already computed.
    """
    runs = _runs(results)
    runs["pruned"] = runs["pruned"].fillna(False).astype(bool) if "pruned" in runs else False
    mean = runs.groupby(["dataset", "strategy", "config"], as_index=False).agg(
        accuracy=("accuracy", "mean"), seconds=("seconds", "mean"), pruned=("pruned", "any"), family=("family", "first")
    )
    reference = mean[mean.strategy == target].set_index(["dataset", "config"])
    if reference.empty:
        raise ValueError(f"no runs of the target strategy {target!r}: the regret is measured on the target task")
    best = reference.accuracy.groupby(level="dataset").max()
    if quality is None:
        quality = proxy_quality(results, good_quantile, target=target)
    spearman = quality.set_index("strategy").spearman_good

    def regret(picks: dict[str, str]) -> float:
        return float(np.mean([best[d] - reference.accuracy[(d, c)] for d, c in picks.items()]))

    rows = []
    for strategy, g in mean.groupby("strategy", sort=False):
        picks = {}
        for dataset, d in g.groupby("dataset"):
            finished = d[~d.pruned] if (~d.pruned).any() else d
            picks[str(dataset)] = _best(finished, "accuracy")
        family = str(g.family.iloc[0])
        kind = "target" if strategy == target else "multi_fidelity" if family in MULTI_FIDELITY else "proxy"
        rows.append(
            {
                "strategy": strategy,
                "kind": kind,
                "total_seconds": float(g.seconds.sum()),
                "regret": regret(picks),
                "spearman_good": spearman.get(strategy, np.nan),
            }
        )
    for spec in promote:
        top, name = float(spec["top"]), str(spec["strategy"])
        chosen = promoted(results, name, top)
        proxy_seconds = mean[mean.strategy == name].seconds.sum()
        target_seconds = sum(reference.seconds[(d, c)] for d, configs in chosen.items() for c in configs)
        picks = {d: max(configs, key=lambda c, d=d: (reference.accuracy[(d, c)], c)) for d, configs in chosen.items()}
        rows.append(
            {
                "strategy": f"{name}+top{top:g}",
                "kind": "hybrid",
                "total_seconds": float(proxy_seconds + target_seconds),
                "regret": regret(picks),
                "spearman_good": np.nan,
            }
        )
    table = pd.DataFrame(rows)
    reference_seconds = float(table.loc[table.strategy == target, "total_seconds"].iloc[0])
    table["relative_compute"] = table.total_seconds / reference_seconds
    columns = ["strategy", "kind", "relative_compute", "regret", "spearman_good", "total_seconds"]
    return table[columns].sort_values(["relative_compute", "strategy"]).reset_index(drop=True)


def table2(quality: pd.DataFrame) -> str:
    """The quality table as markdown (the paper's Table 2), numbers to 3 decimals, in the table's order."""
    columns = (["dataset"] if "dataset" in quality else []) + list(TABLE2)
    missing = [c for c in columns if c not in quality]
    if missing:
        raise ValueError(f"quality lacks the column(s) {missing}; pass the table proxy_quality returns")
    return markdown(quality[columns])


def markdown(table: pd.DataFrame) -> str:
    """A table as markdown, numbers to 3 decimals (names left-aligned, numbers right)."""
    columns = list(table.columns)

    def cell(value: Any) -> str:
        if isinstance(value, float | np.floating):
            return "n/a" if np.isnan(value) else f"{round(float(value), 3) + 0.0:.3f}"  # no "-0.000"
        return str(value)

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c in ("dataset", "strategy", "kind") else "---:" for c in columns) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- figures


def _family_color(family: str, index: int) -> str:
    return FAMILY_COLORS.get(family, f"C{index % 10}")


def plot_proxy_vs_target(
    results: pd.DataFrame, path: str | Path, strategies: Sequence[str] | None = None, target: str = "target"
) -> Path:
    """Figure 1: z-scored target vs proxy accuracy per strategy, by dataset, with the regression line and r²."""
    matched = _matched(results, target)
    if strategies is None:
        quality = _quality(matched, 0.5, target)
        strategies = list(quality[quality.strategy != target].sort_values("relative_cost").strategy[:4])
    strategies = list(strategies) or [target]
    unknown = sorted(set(strategies) - set(matched.strategy))
    if unknown:
        raise ValueError(f"strategies {unknown} are not in the results ({sorted(matched.strategy.unique())})")
    datasets = sorted(matched.dataset.unique())
    cols = min(2, len(strategies))
    rows = -(-len(strategies) // cols)
    fig, axes = new_figure(rows, cols, (4.2 * cols, 3.8 * rows))
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        g = matched[matched.strategy == strategy]
        for i, dataset in enumerate(datasets):
            d = g[g.dataset == dataset]
            ax.scatter(d.zx, d.zy, s=18, color=f"C{i % 10}", label=dataset, alpha=0.8)
        x, y = g.zx.to_numpy(), g.zy.to_numpy()
        sxx = float(np.dot(x, x))
        beta = float(np.dot(x, y)) / sxx if sxx else 0.0
        line = np.linspace(min(x.min(), -1), max(x.max(), 1), 2)
        ax.plot(line, beta * line, color="k", linewidth=1)
        ax.set_title(f"{strategy}: r² = {_r2(x, y):.2f}")
        ax.set_xlabel("proxy accuracy (z)")
        ax.set_ylabel("target accuracy (z)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(strategies) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_quality_vs_cost(quality: pd.DataFrame, path: str | Path) -> Path:
    """Figure 2: r2 and spearman_good against relative cost by family; the cubic fit on the r2 panel."""
    fig, axes = new_figure(1, 2, (11, 4.4))
    families = list(dict.fromkeys(quality.family))
    for ax, metric in zip(axes[0], ("r2", "spearman_good"), strict=True):
        for i, family in enumerate(families):
            g = quality[quality.family == family]
            ax.scatter(g.relative_cost, g[metric], color=_family_color(family, i), label=family, s=28)
        for _, row in quality.iterrows():
            if np.isfinite(row[metric]):
                ax.annotate(
                    row.strategy,
                    (row.relative_cost, row[metric]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlabel("relative cost (proxy time / target time)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fit = _cost_fit(quality.relative_cost, quality.r2)
    if fit is not None:
        costs = quality.relative_cost.to_numpy(dtype=float)
        grid = np.linspace(np.nanmin(costs), np.nanmax(costs), 100)
        axes[0, 0].plot(grid, fit(grid), color="gray", linewidth=1, label=f"fit (degree {fit.order})")
        r2 = quality.r2.to_numpy(dtype=float)
        low, high = np.nanmin(r2), np.nanmax(r2)
        margin = 0.1 * max(high - low, 0.1)
        axes[0, 0].set_ylim(low - margin, high + margin)  # a cubic through few points can swing far off
    axes[0, 0].set_title("r² of target on proxy accuracy")
    axes[0, 1].set_title("Spearman over good configurations")
    axes[0, 0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_regret_vs_compute(table: pd.DataFrame, path: str | Path) -> Path:
    """Regret of each strategy's pick against its total compute over the grid, the proxies, the
    multi-fidelity searches and the hybrids side by side (from :func:`equal_compute`)."""
    fig, axes = new_figure(1, 1, (7.5, 4.8))
    ax = axes[0, 0]
    for i, (kind, g) in enumerate(table.groupby("kind", sort=False)):
        ax.scatter(g.relative_compute, g.regret, marker=KIND_MARKERS.get(kind, "o"), s=40, color=f"C{i}", label=kind)
    for k, row in enumerate(table.sort_values("relative_compute").itertuples()):  # staggered: ties are common
        at = (row.relative_compute, row.regret)
        ax.annotate(row.strategy, at, fontsize=7, xytext=(3, 4 + 9 * (k % 3)), textcoords="offset points")
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.2)
    ax.set_xlabel("compute over the whole grid (x the target task's)")
    ax.set_ylabel("regret (target accuracy lost by the pick)")
    ax.set_title("Picking a configuration: regret against compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_split_half(split_df: pd.DataFrame, path: str | Path) -> Path:
    """Figure 3: each metric on one half against the other half, per split, with their correlation."""
    fig, axes = new_figure(len(METRICS), len(SPLITS), (4.2 * len(SPLITS), 3.4 * len(METRICS)))
    correlation = split_half_correlation(split_df).set_index(["split", "metric"]).correlation
    for r, metric in enumerate(METRICS):
        for c, split in enumerate(SPLITS):
            ax = axes[r, c]
            g = split_df[(split_df.split == split) & (split_df.metric == metric)]
            if g.empty:
                ax.text(
                    0.5, 0.5, f"no {split} split in these results", ha="center", va="center", transform=ax.transAxes
                )
                ax.set_title(f"{metric}, by {split}")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.scatter(g.half_a, g.half_b, s=22)
            for _, row in g.iterrows():
                ax.annotate(
                    row.strategy, (row.half_a, row.half_b), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
            ax.set_title(f"{metric}, by {split}: r = {correlation.get((split, metric), np.nan):.2f}")
            ax.set_xlabel(str(g.half_a_name.iloc[0]))
            ax.set_ylabel(str(g.half_b_name.iloc[0]))
            ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_epoch_agreement(agreement: pd.DataFrame, path: str | Path) -> Path:
    """Figure 4: probability that the leader after epoch k is the leader at the end."""
    fig, axes = new_figure(1, 1, (6, 4))
    ax = axes[0, 0]
    from matplotlib.ticker import MaxNLocator

    ax.plot(agreement.epoch, agreement.probability, marker="o")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0.5, color="gray", linestyle=":", linewidth=1, label="chance")
    ax.set_ylim(0.4, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("P(ahead after epoch k is ahead at the end)")
    ax.set_title("Intermediate vs final accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- report


def report(
    results: pd.DataFrame | str | Path,
    output_dir: str | Path,
    good_quantile: float = 0.5,
    target: str = "target",
    promote: Sequence[dict[str, Any]] = (),
) -> pd.DataFrame:
    """Every table and figure of the paper's analysis for one results table, written into ``output_dir``.

    ``quality.csv``, ``quality_by_dataset.csv``, ``table2.md``, ``table2.csv``, ``split_half.csv``,
    ``split_half_correlation.csv``, ``epoch_agreement.csv`` (with epoch_accuracies) and the PNGs
    ``proxy_vs_target.png``, ``quality_vs_cost.png``, ``split_half.png``, ``epoch_agreement.png``, and
    :func:`equal_compute` (with the ``promote`` hybrids) as ``equal_compute.csv`` / ``.md`` and
    ``regret_vs_compute.png``; each file written atomically. What the data cannot support is skipped with
    a printed note. Returns the pooled table.
    """
    if not isinstance(results, pd.DataFrame):
        results = pd.read_csv(results)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    quality = proxy_quality(results, good_quantile, target=target)
    write_csv(out / "quality.csv", quality)
    write_csv(out / "quality_by_dataset.csv", proxy_quality(results, good_quantile, by_dataset=True, target=target))
    write_text(out / "table2.md", table2(quality))
    write_csv(out / "table2.csv", quality[list(TABLE2)])
    split = split_half(results, good_quantile, target=target)
    needs = {"dataset": "two datasets", "grid": "configs of model.lr and of other hyperparameters"}
    for name in SPLITS:
        if not (split.split == name).any():
            print(f"note: no {name} split in split_half.csv (it needs {needs[name]})")
    write_csv(out / "split_half.csv", split)
    write_csv(out / "split_half_correlation.csv", split_half_correlation(split))
    plot_split_half(split, out / "split_half.png")
    if (quality.strategy != target).any():
        plot_proxy_vs_target(results, out / "proxy_vs_target.png", target=target)
    else:
        print("note: no proxy strategy besides the target; proxy_vs_target.png not written")
    plot_quality_vs_cost(quality, out / "quality_vs_cost.png")
    compute = equal_compute(results, promote, target, good_quantile, quality)
    write_csv(out / "equal_compute.csv", compute)
    write_text(out / "equal_compute.md", markdown(compute))
    plot_regret_vs_compute(compute, out / "regret_vs_compute.png")
    if "epoch_accuracies" in results:
        try:
            agreement = epoch_agreement(results, target)
        except ValueError as error:
            print(f"note: epoch agreement skipped: {error}")
        else:
            write_csv(out / "epoch_agreement.csv", agreement)
            plot_epoch_agreement(agreement, out / "epoch_agreement.png")
    else:
        print("note: no epoch_accuracies column; epoch_agreement not written")
    return quality
