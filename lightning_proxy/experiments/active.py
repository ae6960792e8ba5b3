"""Batch active learning via proxy (SVP section 3.2, Tables 1 and 3, Figure 6), resumable round by round.

The labelled set starts as a seeded random share of the pool and grows each round by a batch that the
selector picks: each round the selector (the small proxy, or the target itself as SVP's baseline) is
trained from scratch on all labelled data, scores the unlabelled pool, and least confidence or greedy
k-centers on its penultimate features (started from the labelled set) picks the next batch; random
selection is the third baseline. At each budget of interest the target is trained on the labelled set.

Indices: the *dataset index* of an example is its position in the full training set (what the datamodule,
the callbacks and the ranking files use); the active-learning *pool* is a sorted array of dataset indices
(all of them, or a subset chosen with ``data_args``, e.g. ``data.subset.fraction``). Labelled sets are
always kept as dataset indices; k-centers works on pool positions and maps them back through the pool.

After every round the loop's ``state.json`` (labelled dataset indices in the order added, the rounds and
their timings) is written atomically; every training (a fit config plus overrides) is skipped when its
result exists, so a killed experiment resumes at the last finished round and ends with the same labelled
set. Under DDP every rank runs this driver and computes the same selection from the same files.

    lightning-proxy active --config configs/active_digits.yaml
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_proxy.experiments.plots import plot_error_curves
from lightning_proxy.experiments.runs import (
    ERROR_TEXT,
    ERRORS,
    Progress,
    check_choices,
    errors_of,
    flat,
    proxy_and_target,
    run_files,
    seeds_or_default,
    train,
    write_report,
    written,
)
from lightning_proxy.files import remove_orphans, write_atomically, write_json
from lightning_proxy.methods import EMBEDDINGS, UNCERTAINTY, Records, SelectionMethod, build_method, callbacks_for
from lightning_proxy.selection.ranking import load_ranking
from lightning_proxy.training import Training

DEFAULT_METHODS = ["least_confidence", "entropy", "kcenters", "random"]
SEEDINGS = ("per_training", "fixed")
SELECTORS = ("proxy", "target")
STATE = "state.json"


# --- the schedule ----------------------------------------------------------------------------------------
def as_size(amount: float | int, pool_size: int, what: str) -> int:
    """A share of the pool (a float in (0, 1]) or a count (an int >= 1) as a number of examples."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ValueError(f"{what} must be a share of the pool in (0, 1] or a count of examples, got {amount!r}")
    if isinstance(amount, float):
        if not 0.0 < amount <= 1.0:
            raise ValueError(f"{what} {amount} as a share of the pool must lie in (0, 1]; give a count as an int")
        return max(1, round(amount * pool_size))
    if amount < 1:
        raise ValueError(f"{what} must be a positive count, got {amount}")
    if amount > pool_size:
        raise ValueError(f"{what} {amount} exceeds the pool of {pool_size} examples")
    return amount


def labelled_sizes(pool_size: int, schedule: Sequence[float | int], budget: float | int) -> list[int]:
    """Labelled-set size after each round: ``schedule[0]`` first, then each later step, the last one repeated.

    Steps are shares of the pool (floats) or counts (ints). Shares accumulate before rounding, so
    ``[0.02, 0.08, 0.1]`` gives exactly 2 %, 10 %, 20 %, ... of the pool; the sizes stop at ``budget``
    and never exceed the pool. Every round adds at least one example.
    """
    if not schedule:
        raise ValueError("schedule needs at least the initial labelled share, e.g. [0.02, 0.08, 0.1]")
    final = as_size(budget, pool_size, "the largest budget")
    share, count, sizes = 0.0, 0, []
    for k in range(pool_size + len(schedule)):
        step = schedule[min(k, len(schedule) - 1)]
        as_size(step, pool_size, f"schedule step {k}")  # validates
        if isinstance(step, float):
            share += step
        else:
            count += step
        size = min(final, round(min(share, 1.0) * pool_size) + count)
        size = max(size, sizes[-1] + 1 if sizes else 1)
        sizes.append(size)
        if size >= final:
            return sizes
    raise AssertionError("unreachable: every round adds an example")


def save_indices(path: Path, indices: np.ndarray) -> Path:
    """Atomically, as a ``.npy`` that ``data.subset.indices`` reads."""
    write_atomically(path, lambda tmp: np.save(tmp, np.asarray(indices, dtype=np.int64)))
    return path


# --- the experiment --------------------------------------------------------------------------------------
def read_pool(training: Training) -> tuple[np.ndarray, int, str]:
    """The active-learning pool (sorted dataset indices: the training subset of ``training``), N, fingerprint."""
    datamodule = training.datamodule()
    datamodule.setup("fit")
    return np.asarray(datamodule.train_indices, dtype=np.int64), datamodule.pool_size, datamodule.fingerprint


class Loop:
    """One active-learning run (a seed, a selector, a method): rounds until the last size, resumable."""

    def __init__(
        self,
        folder: Path,
        method: SelectionMethod,
        selector: str | None,
        training: Training,
        pool: np.ndarray,
        sizes: list[int],
        seed: int,
        identity: dict[str, Any],
        seeding: str = "per_training",
        score_augmented: bool = False,
        retrain_changed: bool = False,
    ) -> None:
        self.folder, self.method, self.selector, self.training = folder, method, selector, training
        self.pool, self.sizes, self.seed, self.seeding = pool, sizes, seed, seeding
        self.score_augmented, self.retrain_changed = score_augmented, retrain_changed
        self.identity = identity
        self.state = self._load()

    def _load(self) -> dict[str, Any]:
        path = self.folder / STATE
        if not path.is_file():
            initial = np.random.default_rng(self.seed).choice(self.pool, self.sizes[0], replace=False)
            state = {**self.identity, "labelled": initial.tolist(), "rounds": [{"size": self.sizes[0]}]}
            write_json(path, state)
            return state
        state = json.loads(path.read_text())
        changed = [k for k, v in self.identity.items() if state.get(k) != v]
        if changed:
            raise ValueError(
                f"{path} was made with other settings ({', '.join(changed)} differ): use another output folder, "
                "or delete it to start this loop again"
            )
        return state

    @property
    def labelled(self) -> np.ndarray:
        return np.asarray(self.state["labelled"], dtype=np.int64)

    def labelled_file(self, size: int) -> Path:
        path = self.folder / f"labelled_{size}.npy"
        if not path.is_file():
            save_indices(path, self.labelled[:size])
        return path

    def run_folder(self, who: str, size: int) -> Path:
        return self.folder / f"{who}_{size}"

    def training_seed(self, who: str, size: int) -> int:
        """The seed of ``who``'s training on ``size`` labelled examples: with ``per_training`` (SVP seeds once,
        so every fit starts from new weights) one derived from the loop's seed, its role and size; with
        ``fixed`` the loop's seed for every fit."""
        if self.seeding == "fixed":
            return self.seed
        role = {"proxy": 1, "target": 2}[who]
        return int(np.random.SeedSequence([self.seed, role, size]).generate_state(1)[0] >> 1)

    def run(self, progress: Progress | None = None) -> None:
        for r in range(len(self.state["rounds"]), len(self.sizes)):
            have, want = self.sizes[r - 1], self.sizes[r]
            labelled = self.labelled[:have]
            train_seconds = fit_seconds = scoring_seconds = 0.0
            files: dict[str, Path] = {}
            if self.method.needs():
                # score what the method needs: the unlabelled pool, plus the labelled set for k-centers' start
                needs = self.method.needs()
                scored = self.pool if EMBEDDINGS in needs else np.setdiff1d(self.pool, labelled)
                scored_file = save_indices(self.folder / f"scored_{have}.npy", scored)
                selector_run = self.run_folder(self.selector, have)
                result = train(
                    selector_run,
                    self.training.with_overrides({"data.subset.indices": str(self.labelled_file(have))}),
                    callbacks_for(needs, self.score_augmented, scored=str(scored_file)),
                    self.training_seed(self.selector, have),
                    None if progress is None else (progress, f"{self.folder.name} selector, {have} labelled"),
                    retrain_changed=self.retrain_changed,
                    role=f"{self.selector} selector",
                    labelled=have,
                )
                train_seconds = result["seconds"]
                fit_seconds = result.get("train_seconds", train_seconds)
                files = run_files(selector_run, result)
                statistic = next(name for name in files if name != EMBEDDINGS)  # of the scoring pass
                scored_with = load_ranking(written(selector_run, result, statistic)).metadata
                scoring_seconds = float(scored_with.get("scoring_seconds", 0.0))
            start = time.perf_counter()
            unlabelled = len(self.pool) - len(labelled)
            if want - have > unlabelled:
                raise ValueError(f"cannot label {want - have} more: only {unlabelled} pool examples are unlabelled")
            records = Records(files, None, self.folder)
            batch = self.method.next_batch(records, self.pool, labelled, want - have, self.seed * 1_000_003 + r)
            select_seconds = time.perf_counter() - start
            self.state["labelled"] = [*labelled.tolist(), *batch.tolist()]
            self.state["rounds"].append(
                {
                    "size": want,
                    "selector_seconds": train_seconds,
                    "selector_train_seconds": fit_seconds,
                    "scoring_seconds": scoring_seconds,
                    "selection_seconds": select_seconds,
                }
            )
            write_json(self.folder / STATE, self.state)

    def selection_seconds(self, size: int, wall: bool = False) -> float:
        """Data-selection time up to ``size``, every round so far: SVP's definition (the selector's training
        epochs, its scoring pass and the selection), or with ``wall`` the selector's whole fit (sanity pass,
        validation, loading) and the selection."""
        keys = ("selector_seconds",) if wall else ("selector_train_seconds", "scoring_seconds")
        return sum(
            sum(r.get(k, 0.0) for k in keys) + r.get("selection_seconds", 0.0)
            for r in self.state["rounds"]
            if r["size"] <= size
        )


def active(
    proxy_config: str,
    target_config: str,
    output: str = "runs/active",
    proxy_args: dict[str, Any] | None = None,
    target_args: dict[str, Any] | None = None,
    data_args: dict[str, Any] | None = None,
    methods: list[str] | None = None,
    selectors: list[str] | None = None,
    schedule: list[float | int] | None = None,
    budgets: list[float | int] | None = None,
    seeds: list[int] | None = None,
    error: str = "best",
    seeding: str = "per_training",
    score_augmented: bool = False,
    retrain_changed: bool = False,
) -> pd.DataFrame:
    """Batch active learning via proxy: grow labelled sets round by round, train the target at each budget.

    Args:
        proxy_config: training config of the proxy selector (a ``lightning-proxy fit`` YAML).
        target_config: training config of the target (also the selector in SVP's baseline).
        output: folder of the runs and the results (``results.csv``, ``summary.csv``, ``summary.txt``,
            ``active.png``).
        proxy_args: overrides of the proxy's config, by the fit command's keys without dashes, e.g.
            ``{"model.arch": "preact_resnet8", "trainer.max_epochs": 5}``.
        target_args: overrides of the target's config.
        data_args: overrides of both; ``data.subset.*`` here chooses the active-learning pool (e.g.
            ``data.subset.fraction: 0.5``, or ``data.subset.classes``), which may be part of the dataset.
        methods: ``least_confidence``, ``entropy``, ``margin`` (the most uncertain first), ``kcenters``, ``random``
            (default: least confidence, entropy, k-centers, random).
        selectors: ``proxy`` and/or ``target`` (default both; random selection needs no selector).
        schedule: the initial labelled share, then the growth per round, the last step repeated; floats
            are shares of the pool, ints counts (default ``[0.02, 0.08, 0.1]``: 2 %, 10 %, 20 %, ...).
        budgets: labelled-set sizes at which the target is trained and evaluated, shares or counts; each
            must be a size the schedule reaches (default 0.1, 0.2, 0.3, 0.4, 0.5).
        seeds: one initial set, selector and target initialisation per seed (default ``[0]``).
        error: which validation error the tables report: ``best`` over epochs (SVP's) or ``final``;
            results.csv keeps both.
        seeding: ``per_training`` (SVP's: each round's selector and each target start from new weights, a
            seed derived from the loop's seed, role and size, recorded in results.csv) or ``fixed`` (one seed
            for every fit of a loop).
        score_augmented: the selector scores one training-augmented view of each unlabelled example (and
            k-centers embeds one), as SVP; default un-augmented (reproducible selections).
        retrain_changed: resumed into an output whose finished trainings had another configuration, train
            them again (default: refuse, naming the first differing key).
    """
    chosen = [build_method(m) for m in methods or DEFAULT_METHODS]
    if passive := [m.name for m in chosen if not m.active]:
        known = [*UNCERTAINTY, "kcenters", "random"]
        raise ValueError(f"methods {passive} pick no active-learning batch; choose from {known}")
    selectors = check_choices(selectors or SELECTORS, SELECTORS, "selectors")
    schedule = list(schedule or [0.02, 0.08, 0.1])
    budgets = list(budgets or [0.1, 0.2, 0.3, 0.4, 0.5])
    seeds = seeds_or_default(seeds)
    check_choices([error], ERRORS, "error")
    check_choices([seeding], SEEDINGS, "seeding")
    # the pool: the target's training subset under data_args; runs on a labelled set keep the pool's class
    # restriction (and its label mapping), not its sampling rule
    data = flat(data_args)
    kept = {"data.subset.classes", "data.subset.other_classes", "data.subset.seed"}
    run_data = {k: v for k, v in data.items() if not k.startswith("data.subset.") or k in kept}
    proxy, target = proxy_and_target(proxy_config, target_config, proxy_args, target_args, run_data)
    trainings = {"proxy": proxy, "target": target}
    pool, dataset_size, fingerprint = read_pool(Training(target_config, {**data, **flat(target_args)}, "data_args"))
    budget_sizes = {b: as_size(b, len(pool), "budget") for b in budgets}
    sizes = labelled_sizes(len(pool), schedule, max(budget_sizes.values()))
    if missing := [b for b, s in budget_sizes.items() if s not in sizes]:
        raise ValueError(f"budgets {missing} are not labelled-set sizes the schedule {schedule} reaches: {sizes}")
    out = Path(output)
    remove_orphans(out)
    rows = []
    loops = [(m, None) for m in chosen if not m.needs()]  # random: no selector
    loops += [(m, s) for s in selectors for m in chosen if m.needs()]
    rounds = sum(len(sizes) - 1 for m, s in loops if s is not None) + len(loops) * len(budget_sizes)
    progress = Progress(len(seeds) * rounds)
    for seed in seeds:
        for method, selector in loops:
            name = method.name if selector is None else f"{selector}_{method.name}"
            identity = {"pool_size": len(pool), "dataset_size": dataset_size, "fingerprint": fingerprint}
            identity |= {"pool_head": pool[:8].tolist(), "sizes": sizes, "seed": seed, "method": method.name}
            identity |= {"seeding": seeding, "score_augmented": score_augmented}
            training = trainings[selector or "target"]
            folder = out / f"seed{seed}" / name
            options = {"seeding": seeding, "score_augmented": score_augmented, "retrain_changed": retrain_changed}
            loop = Loop(folder, method, selector, training, pool, sizes, seed, identity, **options)
            loop.run(progress)
            for budget, size in budget_sizes.items():
                # with the target as selector, its round on this labelled set is already this training
                result = train(
                    loop.run_folder("target", size),
                    trainings["target"].with_overrides({"data.subset.indices": str(loop.labelled_file(size))}),
                    [],
                    loop.training_seed("target", size),
                    (progress, f"{name} target, {size} labelled" + (f", seed {seed}" if len(seeds) > 1 else "")),
                    retrain_changed=retrain_changed,
                    role="target",
                    labelled=size,
                )
                rows.append(
                    {
                        "seed": seed,
                        "selector": selector or "none",
                        "method": method.name,
                        "budget": budget,
                        "labelled": size,
                        **errors_of(result, error),
                        "training_seed": result["seed"],
                        "selection_seconds": loop.selection_seconds(size),
                        "selection_wall_seconds": loop.selection_seconds(size, wall=True),
                        "target_seconds": result["seconds"],
                        "examples_seen": result.get("examples_seen"),
                    }
                )
    return report(
        out,
        pd.DataFrame(rows),
        f"error: {ERROR_TEXT[error]}; seeding: {seeding}; score_augmented: {score_augmented}",
    )


def report(out: Path, results: pd.DataFrame, settings: str = "") -> pd.DataFrame:
    """Write results.csv, summary.csv/.txt (mean and std over seeds, selection speed-ups) and active.png."""
    summary = (
        results.groupby(["selector", "method", "budget", "labelled"], sort=False)
        .agg(
            error_mean=("val_error", "mean"),
            error_std=("val_error", "std"),
            selection_seconds=("selection_seconds", "mean"),
            selection_wall_seconds=("selection_wall_seconds", "mean"),
            target_seconds=("target_seconds", "mean"),
            seeds=("seed", "count"),
        )
        .reset_index()
    )
    # SVP's data-selection speed-up: the target as selector over the proxy, same method and budget
    by_target = summary[summary.selector == "target"].set_index(["method", "budget"]).selection_seconds
    key = list(zip(summary.method, summary.budget, strict=True))
    summary["selection_speedup"] = [
        by_target.get(k, np.nan) / s if sel == "proxy" and s > 0 else np.nan
        for k, s, sel in zip(key, summary.selection_seconds, summary.selector, strict=True)
    ]
    write_report(
        out,
        "Active learning via proxy: target top-1 validation error (mean and std over seeds)\n"
        f"{settings}\nselection_seconds: SVP's (the selector's training epochs, its scoring pass and the "
        "selection; selection_wall_seconds: its whole fits)",
        results,
        summary,
        [lambda: plot_errors(summary, out / "active.png")],
    )
    return summary


def plot_errors(summary: pd.DataFrame, path: Path) -> None:
    """Error against the labelled budget, one line per selector and method, random dashed (SVP Figure 6)."""
    curves = []
    for (selector, method), group in summary.groupby(["selector", "method"], sort=False):
        label = method if selector == "none" else f"{method} ({selector} selects)"
        style = {"linestyle": "--", "color": "gray"} if method == "random" else {"marker": "o"}
        if selector == "target":
            style["linestyle"] = ":"
        curves.append((label, group.labelled, group, style))
    plot_error_curves(curves, path, "labelled examples", "Active learning via proxy")
