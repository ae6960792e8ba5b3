"""Core-set selection via proxy (SVP section 3.3, Figures 2-3), end to end and resumable.

For every seed: train the proxy on the whole pool with the callbacks that record what the methods read;
let each method (:mod:`lightning_proxy.methods`: forgetting, entropy or any statistic, k-centers, CCS, D2,
random) choose a subset of each size from those records; train the target on every subset and on
everything (whose own records give the oracle's subsets). Every result stands beside random at the same
size and seed; the report gives the paired difference. Every training is a
:class:`~lightning_proxy.training.Training` run in its own folder, skipped when its result exists, so a
killed experiment resumes at the first unfinished training.

    lightning-proxy coreset --config configs/coreset_digits.yaml
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_proxy.experiments.compare import compare_pair, compare_rankings, plot_heatmap
from lightning_proxy.experiments.plots import plot_error_curves
from lightning_proxy.experiments.runs import (
    ERROR_TEXT,
    ERRORS,
    Progress,
    check_choices,
    errors_of,
    proxy_and_target,
    read_result,
    run_files,
    seeds_or_default,
    train,
    write_report,
)
from lightning_proxy.files import remove_orphans, write_atomically
from lightning_proxy.methods import EMBEDDINGS, Records, SelectionMethod, build_method, callbacks_for, class_shares

DEFAULT_METHODS = ["forgetting", "entropy", "kcenters", "random"]
THIN = 0.5  # a class kept at less than this share of its share of the pool is reported
UNINFORMED = 0.01  # a proxy less than this much better than the largest class's rate is reported


def coreset(
    proxy_config: str,
    target_config: str,
    output: str = "runs/coreset",
    proxy_args: dict[str, Any] | None = None,
    target_args: dict[str, Any] | None = None,
    data_args: dict[str, Any] | None = None,
    methods: list[str | dict[str, Any]] | None = None,
    fractions: list[float] | None = None,
    seeds: list[int] | None = None,
    oracle: bool = True,
    kcenters_start: float = 1,
    error: str = "best",
    score_augmented: bool = False,
    balanced: bool = False,
    retrain_changed: bool = False,
) -> pd.DataFrame:
    """Core-set selection via proxy: train the proxy, let each method choose subsets, train the target on each.

    Args:
        proxy_config: training config of the proxy (a ``lightning-proxy fit`` YAML).
        target_config: training config of the target.
        output: folder of the runs and the results (``results.csv``, ``summary.csv``, ``summary.txt``,
            ``coreset.png``, ``ranking_correlation.png``).
        proxy_args: overrides of the proxy's config, by the fit command's keys without dashes, e.g.
            ``{"model.arch": "preact_resnet8", "trainer.max_epochs": 5}``.
        target_args: overrides of the target's config.
        data_args: overrides applied to both, e.g. ``{"data.root": "/data/cifar"}``.
        methods: ``random``, ``kcenters``, ``ccs`` (AUM strata), ``d2`` (D2-Pruning) or a statistic the
            callbacks record, hardest or most uncertain first (``forgetting``, ``entropy``,
            ``least_confidence``, ``margin``, ``loss``, ``el2n``, ``aum``); a method with options as
            ``{name: ccs, statistic: forgetting, cutoff: 0.1}``. Default: forgetting, entropy, kcenters, random.
        fractions: subset sizes as shares of the pool (default 0.3, 0.5, 0.7, 0.9); a subset has exactly
            ``round(fraction * pool)`` examples.
        seeds: one proxy, selection and target per seed (default [0]).
        oracle: also train the target on subsets its own run chooses by the statistic methods (from its run on
            everything; its rankings are compared with the proxy's in any case).
        kcenters_start: random points k-centers starts from, which stay in every subset: a count, or a
            share of the pool below 1 (SVP: 1,000 on CIFAR; default 1, one seeded point).
        error: which validation error the tables report: ``best`` over epochs (SVP's) or ``final``; results.csv
            keeps both.
        score_augmented: the proxy scores (entropy, ...) and k-centers' embeddings come from one training-
            augmented view of each example, as SVP's; default un-augmented (reproducible rankings).
        balanced: every method keeps each class's share of the pool (class quotas that add up to the size).
        retrain_changed: resumed into an output whose finished trainings had another configuration, train
            them again (default: refuse, naming the first differing key).
    """
    chosen = [build_method(m, {"kcenters": {"start": kcenters_start}}) for m in methods or DEFAULT_METHODS]
    if len({m.name for m in chosen}) != len(chosen):
        raise ValueError(f"methods name one method twice: {[m.name for m in chosen]}")
    check_choices([error], ERRORS, "error")
    fractions = sorted(fractions or [0.3, 0.5, 0.7, 0.9])
    if bad := [f for f in fractions if not 0 < f <= 1]:
        raise ValueError(f"fractions must lie in (0, 1], got {bad}")
    seeds = seeds_or_default(seeds)
    proxy_training, target_training = proxy_and_target(proxy_config, target_config, proxy_args, target_args, data_args)
    targets = proxy_training.datamodule().targets
    oracles = [m for m in chosen if m.oracle] if oracle else []
    proxy_needs = set().union(*(m.needs() for m in chosen))
    full_needs = set().union(*(m.needs() for m in chosen if m.oracle)) - {EMBEDDINGS}
    out = Path(output)
    remove_orphans(out)
    again = {"retrain_changed": retrain_changed}
    rows, correlations = [], []
    runs = [(m.name, m, "proxy") for m in chosen] + [(f"oracle_{m.name}", m, "full") for m in oracles]
    progress = Progress(len(seeds) * (2 + len(runs) * len(fractions)))
    for seed in seeds:
        base, label = out / f"seed{seed}", f" seed {seed}" if len(seeds) > 1 else ""
        proxy_callbacks = callbacks_for(proxy_needs, score_augmented)
        proxy = train(
            base / "proxy", proxy_training, proxy_callbacks, seed, (progress, f"proxy{label}"), **again, role="proxy"
        )
        _warn_if_uninformed(errors_of(proxy, error)["val_error"], targets, seed)
        # the target on everything: the baseline, and its own records (for the correlations and the oracle)
        full_callbacks = callbacks_for(full_needs, score_augmented)
        full = train(
            base / "full", target_training, full_callbacks, seed, (progress, f"full{label}"), **again, role="full"
        )
        everything = {"seed": seed, "method": "full", "fraction": 1.0, **_row(full, error), "min_class_share": 1.0}
        rows.append({**everything, "end_to_end_seconds": full["seconds"]})
        records = {
            "proxy": Records(run_files(base / "proxy", proxy), targets, base / "proxy"),
            "full": Records(run_files(base / "full", full), targets, base / "full"),
        }
        for name, method, scorer in runs:
            overhead = full["seconds"] if scorer == "full" else proxy["seconds"] * (name != "random")
            for fraction in fractions:
                folder = base / name / f"{fraction:g}"
                indices, selection = _subset(method, records[scorer], fraction, seed, balanced, folder)
                shares = class_shares(indices, targets)
                _warn_if_thin(name, fraction, seed, shares)
                subset = {"data.subset.indices": str(folder / "subset.npy")}
                result = train(
                    folder,
                    target_training.with_overrides(subset),
                    [],
                    seed,
                    (progress, f"{name} {fraction:g}{label}"),
                    **again,
                    role=name,
                    fraction=fraction,
                    selection_seconds=selection,
                )
                rows.append(
                    {
                        "seed": seed,
                        "method": name,
                        "fraction": fraction,
                        **_row(result, error),
                        "min_class_share": min(shares.values()),
                        "proxy_seconds": proxy["seconds"] if scorer == "proxy" and name != "random" else 0.0,
                        "selection_seconds": selection,
                        "end_to_end_seconds": overhead + selection + result["seconds"],
                    }
                )
        statistics = sorted(full_needs & proxy_needs)
        correlations += _correlations(records, statistics, seed, out if seed == seeds[0] else None)
    return report(out, pd.DataFrame(rows), pd.DataFrame(correlations), error, kcenters_start, score_augmented, balanced)


def _subset(
    method: SelectionMethod, records: Records, fraction: float, seed: int, balanced: bool, folder: Path
) -> tuple[np.ndarray, float]:
    """The method's subset of ``round(fraction * pool)`` examples, written as ``subset.npy`` in the target's run
    folder (what its ``data.subset.indices`` reads), and the seconds the choice took; a finished run's subset is
    read back, not chosen again."""
    done = read_result(folder)
    if done is not None and "selection_seconds" in done and (folder / "subset.npy").is_file():
        return np.load(folder / "subset.npy"), float(done["selection_seconds"])
    size = round(fraction * len(records.targets))
    began = time.perf_counter()
    indices = method.subset(records, size, seed, balanced)
    seconds = time.perf_counter() - began
    write_atomically(folder / "subset.npy", lambda tmp: np.save(tmp, indices.astype(np.int64)))
    return indices, seconds


def _warn_if_uninformed(proxy_error: float | None, targets: np.ndarray, seed: int) -> None:
    """Say so when the proxy is within a point of always predicting the pool's largest class: its records then
    rank by little more than chance, and no method chosen from them can be expected to beat random."""
    prior = 1.0 - np.bincount(targets).max() / len(targets)
    if proxy_error is not None and proxy_error > prior - UNINFORMED:
        warnings.warn(
            f"the proxy (seed {seed}) has a validation error of {proxy_error:.1%}, no better than always predicting "
            f"the largest class ({prior:.1%}): it has learned too little for its rankings to mean much; train it "
            "longer or with larger steps (proxy_args, e.g. trainer.max_epochs or model.lr)",
            stacklevel=3,
        )


def _warn_if_thin(name: str, fraction: float, seed: int, shares: dict[int, float]) -> None:
    """Say so when a subset keeps a class at less than half of its share of the pool (or drops it)."""
    thin = {c: share for c, share in shares.items() if share < THIN}
    if thin:
        worst = min(thin, key=thin.get)
        warnings.warn(
            f"{name} at {fraction:g} (seed {seed}) keeps {len(thin)} class(es) at less than half of their share of "
            f"the pool (class {worst}: {thin[worst]:.2f} of its share); balanced: true keeps every class's share",
            stacklevel=3,
        )


def _correlations(
    records: dict[str, Records], statistics: list[str], seed: int, heatmap_in: Path | None
) -> list[dict[str, Any]]:
    """Proxy against target ranking of each statistic; with ``heatmap_in``, SVP's Figure 3 of all of them."""
    proxy, full = records["proxy"], records["full"]
    pairs = [{"seed": seed, "statistic": m, **compare_pair(proxy.ranking(m), full.ranking(m))} for m in statistics]
    if heatmap_in is not None and statistics:
        names = [f"{who} {m}" for who in ("proxy", "target") for m in statistics]
        chosen = [proxy.ranking(m) for m in statistics] + [full.ranking(m) for m in statistics]
        plot_heatmap(compare_rankings(chosen, names), names, heatmap_in / "ranking_correlation.png")
    return pairs


def _row(result: dict[str, Any], error: str) -> dict[str, Any]:
    return {
        **errors_of(result, error),
        "train_examples": result["train_examples"],
        "examples_seen": result.get("examples_seen"),
        "seconds": result["seconds"],
    }


def report(
    out: Path,
    results: pd.DataFrame,
    correlations: pd.DataFrame,
    error: str = "best",
    kcenters_start: float = 1,
    score_augmented: bool = False,
    balanced: bool = False,
) -> pd.DataFrame:
    """Write results.csv (every training), summary.csv/.txt (mean and std over seeds, and the paired difference
    against random at the same size and seed) and the figures."""
    full_seconds = results.loc[results.method == "full", "seconds"].mean()
    random = results[results.method == "random"].set_index(["fraction", "seed"]).val_error
    paired = results.join(random.rename("random_error"), on=["fraction", "seed"])
    paired["vs_random"] = paired.val_error - paired.random_error
    summary = (
        paired.groupby(["method", "fraction"], sort=False)
        .agg(
            error_mean=("val_error", "mean"),
            error_std=("val_error", "std"),
            vs_random_mean=("vs_random", "mean"),
            vs_random_std=("vs_random", "std"),
            examples=("train_examples", "mean"),
            examples_seen=("examples_seen", "mean"),
            min_class_share=("min_class_share", "min"),
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
        f"error: {ERROR_TEXT[error]}; kcenters_start: {kcenters_start:g}; score_augmented: {score_augmented}; "
        f"balanced: {balanced}\nvs_random: the error minus random's at the same size and seed (negative: better "
        "than random); min_class_share: the smallest class's share of a subset over its share of the pool",
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
