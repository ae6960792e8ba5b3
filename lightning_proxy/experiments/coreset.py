"""Core-set selection via proxy (SVP section 3.3, Figures 2-3), end to end and resumable.

For every seed: train the proxy on the whole pool with the per-example callbacks; turn its forgetting
events, entropy (or any statistic it wrote) and greedy k-centers on its embeddings into subsets of each
size; train the target on every subset, on a random subset of the same size, and on everything (whose own
rankings are the oracle). Every training is a :class:`~lightning_proxy.training.Training` run in its own
folder, skipped when its result exists, so a killed experiment resumes at the first unfinished training.

    lightning-proxy coreset --config configs/coreset_digits.yaml
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_proxy.callbacks import EL2N, SCORES, AreaUnderMargin, ForgettingEvents
from lightning_proxy.experiments.compare import compare_pair, compare_rankings, plot_heatmap
from lightning_proxy.experiments.plots import plot_error_curves
from lightning_proxy.experiments.runs import (
    ERROR_TEXT,
    ERRORS,
    Progress,
    check_choices,
    errors_of,
    proxy_and_target,
    run_files,
    seeds_or_default,
    train,
    write_report,
    written,
)
from lightning_proxy.selection.ranking import Ranking, load_ranking, save_ranking

EPOCH_STATISTICS = {cls.statistic: cls for cls in (ForgettingEvents, EL2N, AreaUnderMargin)}
KNOWN_METHODS = ("random", "kcenters", *EPOCH_STATISTICS, *SCORES)


def callbacks_for(statistics: set[str], embeddings: bool, augment: bool = False) -> list[dict[str, Any]]:
    """The per-example callbacks (as ``class_path`` dicts) that write ``statistics`` into the run's folder."""
    out = [
        {"class_path": f"{cls.__module__}.{cls.__name__}"}
        for name, cls in EPOCH_STATISTICS.items()
        if name in statistics
    ]
    scores = [s for s in SCORES if s in statistics]
    if scores or embeddings:
        init = {"statistics": scores or ["entropy"], "embeddings": embeddings, "augment": augment}
        out.append({"class_path": "lightning_proxy.callbacks.PostTrainingScores", "init_args": init})
    return out


def k_centers_ranking(
    embeddings_file: Path, reference: Ranking, budget_fraction: float, seed: int, start: float = 1
) -> Path:
    """Greedy k-centers on the proxy's embeddings, saved beside them as a ranking: the first chosen scores highest.

    ``start`` random points (a count, or a share of the pool when below 1), drawn with ``seed``, come first
    and stay in every subset; greedy farthest-first traversal from them chooses the rest. SVP starts from
    1,000 random points; ``1`` is the classic start from one seeded point. ``reference`` (a ranking of the
    scoring pass that made the embeddings) gives the provenance.
    """
    path = embeddings_file.parent / "kcenters.npz"
    if path.is_file():
        return path
    from lightning_proxy.selection.kcenters import greedy_k_centers

    embeddings = np.load(embeddings_file, mmap_mode="r")
    budget = math.ceil(budget_fraction * len(embeddings))
    count = min(budget, kcenters_start_count(start, len(embeddings)))
    began = time.perf_counter()
    if count == 1:
        order = greedy_k_centers(np.asarray(embeddings), budget, seed=seed).numpy()
    else:
        first = np.random.default_rng(seed).choice(len(embeddings), count, replace=False)
        rest = greedy_k_centers(np.asarray(embeddings), budget - count, start=first).numpy() if budget > count else []
        order = np.concatenate([first, rest]).astype(np.int64)
    seconds = time.perf_counter() - began
    kept = {k: v for k, v in reference.metadata.items() if k not in ("statistic", "direction", "format")}
    metadata = {**kept, "budget": budget, "kcenters_seed": seed, "kcenters_start": count, "seconds": seconds}
    return save_ranking(path, Ranking.from_order(order, reference, "kcenters", **metadata))


def kcenters_start_count(start: float, pool_size: int) -> int:
    """``kcenters_start`` as a number of points: a count (>= 1), or a share of the pool (in (0, 1))."""
    if start <= 0 or (start >= 1 and start != int(start)):
        raise ValueError(f"kcenters_start must be a count >= 1 or a share of the pool in (0, 1), got {start}")
    return int(start) if start >= 1 else max(1, round(start * pool_size))


def keep_for(ranking: Ranking) -> str:
    """Which end SVP keeps: the hardest or most uncertain examples (k-centers: the first chosen), per the direction."""
    return "lowest" if ranking.metadata.get("direction") == "higher_is_easier" else "highest"


def coreset(
    proxy_config: str,
    target_config: str,
    output: str = "runs/coreset",
    proxy_args: dict[str, Any] | None = None,
    target_args: dict[str, Any] | None = None,
    data_args: dict[str, Any] | None = None,
    methods: list[str] | None = None,
    fractions: list[float] | None = None,
    seeds: list[int] | None = None,
    oracle: bool = True,
    kcenters_start: float = 1,
    error: str = "best",
    score_augmented: bool = False,
) -> pd.DataFrame:
    """Core-set selection via proxy: train the proxy, select subsets by each method, train the target on each.

    Args:
        proxy_config: training config of the proxy (a ``lightning-proxy fit`` YAML).
        target_config: training config of the target.
        output: folder of the runs and the results (``results.csv``, ``summary.csv``, ``summary.txt``,
            ``coreset.png``, ``ranking_correlation.png``).
        proxy_args: overrides of the proxy's config, by the fit command's keys without dashes, e.g.
            ``{"model.arch": "preact_resnet8", "trainer.max_epochs": 5}``.
        target_args: overrides of the target's config.
        data_args: overrides applied to both, e.g. ``{"data.root": "/data/cifar"}``.
        methods: ``random``, ``kcenters`` or a statistic the callbacks write (``forgetting``, ``entropy``,
            ``least_confidence``, ``margin``, ``loss``, ``el2n``, ``aum``). Default: forgetting, entropy,
            kcenters, random.
        fractions: subset sizes as shares of the pool (default 0.3, 0.5, 0.7, 0.9).
        seeds: one proxy, k-centers start and target per seed (default [0]).
        oracle: also train the target on subsets chosen by its own rankings (from its run on everything;
            those rankings are compared with the proxy's in any case).
        kcenters_start: random points k-centers starts from, which stay in every subset: a count, or a
            share of the pool below 1 (SVP: 1,000 on CIFAR; default 1, one seeded point).
        error: which validation error the tables report: ``best`` over epochs (SVP's) or ``final``; results.csv
            keeps both.
        score_augmented: the proxy scores (entropy, ...) and k-centers' embeddings come from one training-
            augmented view of each example, as SVP's; default un-augmented (reproducible rankings).
    """
    methods = check_choices(methods or ["forgetting", "entropy", "kcenters", "random"], KNOWN_METHODS, "methods")
    check_choices([error], ERRORS, "error")
    kcenters_start_count(kcenters_start, 1)  # a bad value is refused before anything trains
    fractions = sorted(fractions or [0.3, 0.5, 0.7, 0.9])
    if bad := [f for f in fractions if not 0 < f <= 1]:
        raise ValueError(f"fractions must lie in (0, 1], got {bad}")
    proxy_training, target_training = proxy_and_target(proxy_config, target_config, proxy_args, target_args, data_args)
    out = Path(output)
    statistics = {m for m in methods if m not in ("random", "kcenters")}
    rows, correlations = [], []
    seeds = seeds_or_default(seeds)
    subset_methods = [*methods, *(f"oracle_{m}" for m in sorted(statistics) if oracle)]
    progress = Progress(len(seeds) * (2 + len(subset_methods) * len(fractions)))
    for seed in seeds:
        base, label = out / f"seed{seed}", f" seed {seed}" if len(seeds) > 1 else ""
        kcenters = "kcenters" in methods
        proxy_callbacks = callbacks_for(statistics, kcenters, score_augmented)
        proxy = train(base / "proxy", proxy_training, proxy_callbacks, seed, (progress, f"proxy{label}"), role="proxy")
        # the target on everything: the baseline, and its own rankings (for the correlations and the oracle)
        full_callbacks = callbacks_for(statistics, False, score_augmented)
        full = train(base / "full", target_training, full_callbacks, seed, (progress, f"full{label}"), role="full")
        everything = {"seed": seed, "method": "full", "fraction": 1.0, **_row(full, error)}
        rows.append({**everything, "end_to_end_seconds": full["seconds"]})
        rankings = _rankings(base, proxy, full, sorted(statistics), kcenters and (max(fractions), seed, kcenters_start))
        for method in subset_methods:
            path, ranking = rankings.get(method, (None, None))
            selection = float(ranking.metadata["seconds"]) if method == "kcenters" else 0.0
            uses_proxy = method in statistics or method == "kcenters"
            # the oracle trains the target on everything first
            overhead = full["seconds"] if method.startswith("oracle_") else (proxy["seconds"] + selection) * uses_proxy
            for fraction in fractions:
                subset: dict[str, Any] = {"data.subset.fraction": fraction, "data.subset.seed": seed}
                if ranking is not None:
                    subset |= {"data.subset.ranking": str(path), "data.subset.keep": keep_for(ranking)}
                result = train(
                    base / method / f"{fraction:g}",
                    target_training.with_overrides(subset),
                    [],
                    seed,
                    (progress, f"{method} {fraction:g}{label}"),
                    role=method,
                    fraction=fraction,
                )
                rows.append(
                    {
                        "seed": seed,
                        "method": method,
                        "fraction": fraction,
                        **_row(result, error),
                        "proxy_seconds": proxy["seconds"] if uses_proxy else 0.0,
                        "selection_seconds": selection,
                        "end_to_end_seconds": overhead + result["seconds"],
                    }
                )
        correlations += _correlations(rankings, sorted(statistics), seed, out if seed == seeds[0] else None)
    return report(out, pd.DataFrame(rows), pd.DataFrame(correlations), error, kcenters_start, score_augmented)


def _rankings(
    base: Path, proxy: dict[str, Any], full: dict[str, Any], statistics: list[str], kcenters: Any
) -> dict[str, tuple[Path, Ranking]]:
    """Every ranking a subset is chosen by, read once: the proxy's, the target's own (``oracle_<statistic>``) and,
    with ``kcenters`` = ``(budget fraction, seed, start)``, greedy k-centers on the proxy's embeddings."""
    files = {m: written(base / "proxy", proxy, m) for m in statistics}
    files |= {f"oracle_{m}": written(base / "full", full, m) for m in statistics}
    if kcenters:
        scored = next(name for name in SCORES if name in run_files(base / "proxy", proxy))  # the embeddings' pass
        reference = load_ranking(written(base / "proxy", proxy, scored))
        embeddings = written(base / "proxy", proxy, "embeddings")
        files["kcenters"] = k_centers_ranking(embeddings, reference, *kcenters)
    return {name: (path, load_ranking(path)) for name, path in files.items()}


def _correlations(
    rankings: dict[str, tuple[Path, Ranking]], statistics: list[str], seed: int, heatmap_in: Path | None
) -> list[dict[str, Any]]:
    """Proxy against target ranking of each statistic; with ``heatmap_in``, SVP's Figure 3 of all of them."""
    pairs = [
        {"seed": seed, "statistic": m, **compare_pair(rankings[m][1], rankings[f"oracle_{m}"][1])} for m in statistics
    ]
    if heatmap_in is not None and statistics:
        names = [f"{who} {m}" for who in ("proxy", "target") for m in statistics]
        chosen = [rankings[m][1] for m in statistics] + [rankings[f"oracle_{m}"][1] for m in statistics]
        plot_heatmap(compare_rankings(chosen, names), names, heatmap_in / "ranking_correlation.png")
    return pairs


def _row(result: dict[str, Any], error: str) -> dict[str, Any]:
    return {**errors_of(result, error), "train_examples": result["train_examples"], "seconds": result["seconds"]}


def report(
    out: Path,
    results: pd.DataFrame,
    correlations: pd.DataFrame,
    error: str = "best",
    kcenters_start: float = 1,
    score_augmented: bool = False,
) -> pd.DataFrame:
    """Write results.csv (every training), summary.csv/.txt (mean and std over seeds) and the figures."""
    full_seconds = results.loc[results.method == "full", "seconds"].mean()
    summary = (
        results.groupby(["method", "fraction"], sort=False)
        .agg(
            error_mean=("val_error", "mean"),
            error_std=("val_error", "std"),
            examples=("train_examples", "mean"),
            target_seconds=("seconds", "mean"),
            end_to_end_seconds=("end_to_end_seconds", "mean"),
            seeds=("seed", "count"),
        )
        .reset_index()
    )
    summary["speedup"] = full_seconds / summary["end_to_end_seconds"]
    extra = [("Proxy vs target rankings of the same statistic:", "ranking_correlation.csv", correlations)]
    write_report(
        out,
        "Core-set selection via proxy: target top-1 validation error (mean and std over seeds)\n"
        f"error: {ERROR_TEXT[error]}; kcenters_start: {kcenters_start:g}; score_augmented: {score_augmented}",
        results,
        summary,
        [lambda: plot_errors(summary, out / "coreset.png")],
        extra if len(correlations) else [],
    )
    return summary


def plot_errors(summary: pd.DataFrame, path: Path) -> None:
    """Error against subset size, one line per method, random dashed, everything dotted (SVP Figure 2)."""
    curves = [
        (
            method,
            100 * group.fraction,
            group,
            {"linestyle": "--", "color": "gray"} if method == "random" else {"marker": "o"},
        )
        for method, group in summary[summary.method != "full"].groupby("method", sort=False)
    ]
    full = summary[summary.method == "full"]
    reference = ("full data", full.error_mean.iloc[0]) if len(full) else None
    plot_error_curves(curves, path, "subset size (% of the training pool)", "Core-set selection via proxy", reference)
