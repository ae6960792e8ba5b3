"""Proxy datasets for hyperparameter search (000 paper): one grid of configurations on the target and every proxy.

The strategies (cheaper versions of the target task, and multi-fidelity searches of it) and the grid are
:mod:`lightning_proxy.experiments.strategies`; ``target`` is the task itself, and the easiest/hardest
proxies rank by the per-example loss of the default configuration trained on everything. Every (dataset,
strategy) is an Optuna study over the same configurations (GridSampler), or any other Optuna sampler over
the same values for a smarter search.

Storage is SQLite in the output folder by default and any database URL Optuna accepts, so that workers on many
machines share one sweep: start ``lightning-proxy sweep`` on each, one worker per device (a trial trains in one
process; ``CUDA_VISIBLE_DEVICES=i`` gives worker i its GPU). How the workers share the studies is
:mod:`~lightning_proxy.experiments.studies`; here the sweep builds them, works on them, and reports. A finished
training's ``result.json`` is read back rather than retrained. The loss ranking of the easiest/hardest proxies
is a study of its own, trained once per dataset, and so is each distilled strategy's synthetic set; the file's
path and sha256 are recorded there and checked by every worker that trains on it. A trial records the best
validation accuracy at any epoch, every epoch's accuracy and the wall time; a distilled strategy's trials add an
equal share of the distillation's time (its seconds over the grid's configurations), so its relative cost counts
the distillation once.

    lightning-proxy sweep --config configs/sweep_digits.yaml
    lightning-proxy report --storage sqlite:///runs/sweep_digits/sweep.db
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import yaml

from lightning_proxy.experiments.runs import RESULT, train
from lightning_proxy.experiments.storage import WINDOW, check_storage, open_storage
from lightning_proxy.experiments.strategies import (
    Strategy,
    config_defaults,
    grid_configs,
    lookup,
    strategies_from,
)
from lightning_proxy.experiments.studies import (
    Plan,
    collect_results,
    grid_study,
    pruning_callback,
    run_grid,
    run_plans,
    run_sampled,
    sampler_of,
    sha256_of,
    shared_ranking,
    shared_synthetic,
    study_name,
)
from lightning_proxy.files import write_csv

if TYPE_CHECKING:  # the training layer imports Lightning: only when a run really trains
    from lightning_proxy.training import Training


@dataclass
class Dataset:
    """A dataset of the sweep: the target task's training config and overrides applied to every run."""

    name: str
    config: str
    args: dict[str, Any]

    def training(self, overrides: dict[str, Any] | None = None) -> Training:
        from lightning_proxy.training import Training

        return Training(self.config, {**self.args, **(overrides or {})}, f"datasets.{self.name} (with args)")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("_") or "default"


# --- the sweep ------------------------------------------------------------------------------------------


def _datasets(datasets: dict[str, str | dict[str, Any]], args: dict[str, Any] | None) -> list[Dataset]:
    out = []
    for name, spec in datasets.items():
        spec = {"config": spec} if isinstance(spec, str) else dict(spec)
        if "config" not in spec:
            raise ValueError(f"datasets.{name} needs a training config: {{config: path, args: {{...}}}}")
        if not Path(spec["config"]).is_file():
            raise FileNotFoundError(f"datasets.{name}: training config {spec['config']} does not exist")
        out.append(Dataset(name, spec["config"], {**(args or {}), **(spec.get("args") or {})}))
    return out


def _num_classes(dataset: Dataset) -> int:
    """The dataset's class count, from the datamodule the training config builds (no data is read)."""
    return int(dataset.training().datamodule().num_base_classes)


def loss_ranking(config: str, *, dataset: Dataset, folder: Path, seed: int, **_: Any) -> dict[str, Any]:
    """The easiest/hardest proxies' ranking: per-example loss of the default configuration trained on everything,
    its path and sha256 in the result (and so in the ranking study's trial)."""
    scores = {
        "class_path": "lightning_proxy.callbacks.PostTrainingScores",
        "init_args": {"statistics": ["loss"], "embeddings": False},
    }
    result = train(folder, dataset.training(), callbacks=[scores], seed=seed)
    path = folder / "loss.npz"
    if not path.is_file():
        raise FileNotFoundError(f"the ranking run in {folder} finished without writing loss.npz; delete the folder")
    return {**result, "ranking": str(path), "sha256": sha256_of(path)}


def synthetic_set(
    config: str, *, dataset: Dataset, strategy: Strategy, folder: Path, seed: int, **_: Any
) -> dict[str, Any]:
    """A distilled strategy's synthetic set, made from the default configuration's training (its pool and
    architecture): its path, sha256, making time and final matching loss in the result."""
    from lightning_proxy.datamodules.synthetic import load_synthetic
    from lightning_proxy.distill.matching import distill

    path = distill(dataset.training(), folder / "synthetic.npz", seed=seed, progress=False, **strategy.distill)
    made = load_synthetic(path).metadata
    loss = made["loss"] if made["loss"] is not None else float("nan")  # none: iterations 0, the real images
    return {"synthetic": str(path), "sha256": sha256_of(path), "seconds": made["seconds"], "matching_loss": loss}


def sweep(
    datasets: dict[str, str | dict[str, Any]],
    grid: dict[str, list[Any]],
    strategies: dict[str, list[Any]] | None = None,
    output: str = "runs/sweep",
    storage: str | None = None,
    study: str = "sweep",
    args: dict[str, Any] | None = None,
    sampler: dict[str, Any] | None = None,
    n_trials: int | None = None,
    seed: int = 0,
    heartbeat: int = 60,
    outage: float = WINDOW,
    poll: float = 1.0,
    report: bool = True,
    promote: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Train the grid on every dataset's target task and on each proxy strategy; then report proxy quality.

    Args:
        datasets: name -> the target task's training config (a ``lightning-proxy fit`` YAML), or
            ``{config: path, args: {override: value}}``.
        grid: override key -> values, each changed alone from the training config's own value, e.g.
            ``{"model.lr": [1e-3, 1e-2], "model.optimizer": ["sgd", "rmsprop"]}``.
        strategies: family -> sizes: ``random``, ``half_classes``, ``other_half_classes``, ``easiest``,
            ``hardest`` take shares of the pool (or ``{fraction, skip}`` for a band); ``epochs`` takes epoch
            counts; ``distilled`` takes distillations, ``{method, ipc, iterations, ..., epochs}``;
            ``successive_halving`` and ``hyperband`` take reduction factors (multi-fidelity search of
            the target task with Optuna's pruners). The target task is always included.
        output: folder of the runs, the default SQLite storage, ``results.csv`` and the report.
        storage: an Optuna storage URL (e.g. ``postgresql://...`` for workers on many machines); default
            ``sqlite:///<output>/sweep.db``.
        study: prefix of the study names (``<study>/<dataset>/<strategy>``).
        args: overrides applied to every run (e.g. ``{"trainer.accelerator": "gpu"}``).
        sampler: an Optuna sampler for a smarter search instead of the grid, as ``{class_path, init_args}``
            (e.g. ``optuna.samplers.TPESampler``); it picks a value of every grid key, ``n_trials`` times.
        n_trials: completed trials per study with ``sampler``.
        seed: seed of every training, of the random subsets and of the class draw.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for 3 of them is failed.
        outage: seconds a worker waits for its database to come back (every call retried with backoff)
            before it stops; its finished trainings are read back when it is started again.
        poll: seconds between looks at the storage while only other workers' trials are left.
        report: write ``results.csv`` and the proxy-quality report when this worker is done.
        promote: hybrids for the report, ``[{strategy: easiest-0.1, top: 0.25}]``: every configuration on that
            proxy, the top share of them on the target task (whose runs the sweep has), the best picked.
    """
    if sampler is not None and not n_trials:
        raise ValueError("a sampler searches for n_trials trials per study: give n_trials too")
    if heartbeat < 1 or outage < 0 or poll <= 0:
        raise ValueError(
            f"--heartbeat {heartbeat}, --outage {outage}, --poll {poll}: give a heartbeat of 1 s or more, "
            "an outage of 0 s or more and a positive poll"
        )
    if storage is not None:
        check_storage(storage)  # before anything heavy is imported or any folder made
    sets = _datasets(datasets, args)
    checked = [_checked(dataset, grid, strategies, seed, promote or []) for dataset in sets]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out / 'sweep.db'}"
    rdb = open_storage(url, heartbeat, window=outage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = Studies(rdb, study, out, grid, strategies, seed, sampler, n_trials)
    plans = [plan for dataset, setup in zip(sets, checked, strict=True) for plan in studies.plans(dataset, *setup)]
    run_plans(plans, poll=min(poll, heartbeat), storage=rdb)
    results = collect_results(rdb, study)
    if report and len(results):
        from lightning_proxy.experiments.quality import report as quality_report

        write_csv(out / "results.csv", results)
        quality_report(results, out, promote=promote or [])
    return results


def _checked(
    dataset: Dataset,
    grid: dict[str, list[Any]],
    strategies: dict[str, list[Any]] | None,
    seed: int,
    promote: list[dict[str, Any]],
) -> tuple[list[Strategy], dict[str, dict[str, Any]]]:
    """``dataset``'s strategies and grid configurations, every one parsed as the training it will be, and the
    hybrids, so that a bad key or value is refused before the storage is opened or anything trains."""
    built = strategies_from(strategies, _num_classes(dataset) if strategies else 0, seed)
    for spec in promote:
        if set(spec) != {"strategy", "top"} or spec["strategy"] not in {s.name for s in built}:
            raise ValueError(f"promote {spec!r}: give {{strategy, top}} with one of {[s.name for s in built]}")
    configs = grid_configs(grid, dataset.config)
    for name, changes in configs.items():
        try:
            dataset.training(changes).resolved  # noqa: B018 (parsing is the check)
        except (ValueError, TypeError) as error:
            raise ValueError(f"grid configuration {name} on dataset {dataset.name}: {error}") from None
    return built, configs


@dataclass(frozen=True)
class Studies:
    """The studies of a sweep in one storage: for each dataset, its makers (the loss ranking, each distilled
    set) and one study per strategy over the grid, each with the :class:`Plan` this worker runs on it."""

    storage: Any
    prefix: str
    out: Path
    grid: dict[str, list[Any]]
    strategies: dict[str, list[Any]] | None
    seed: int
    sampler: dict[str, Any] | None
    n_trials: int | None

    def plans(self, dataset: Dataset, strategies: list[Strategy], configs: dict[str, dict[str, Any]]) -> list[Plan]:
        """Every study of ``dataset``, created or loaded, with the work on it."""
        plans, ranking = [], None
        if any(s.needs_ranking for s in strategies):
            ranking = self.maker(dataset, "loss_ranking")
            make = functools.partial(
                loss_ranking, dataset=dataset, folder=self.out / dataset.name / "loss_ranking", seed=self.seed
            )
            work = functools.partial(run_grid, ranking, ["default"], make)
            plans.append(Plan(f"{dataset.name} / loss ranking", work))
        for strategy in strategies:
            maker = ranking if strategy.needs_ranking else None
            if strategy.distill is not None:
                maker = self.maker(dataset, f"{strategy.name}/synthetic")
                _same_distillation(maker, strategy)
                folder = self.out / dataset.name / strategy.name
                make = functools.partial(
                    synthetic_set, dataset=dataset, strategy=strategy, folder=folder, seed=self.seed
                )
                label = f"{dataset.name} / {strategy.name}: the synthetic set"
                plans.append(Plan(label, functools.partial(run_grid, maker, ["default"], make)))
            plans.append(self.strategy_plan(dataset, strategy, configs, maker))
        return plans

    def maker(self, dataset: Dataset, name: str) -> Any:
        """The one-trial study that makes a file the strategies of ``dataset`` train on."""
        return grid_study(study_name(self.prefix, dataset.name, name), self.storage, ["default"], self.seed)

    def strategy_plan(
        self, dataset: Dataset, strategy: Strategy, configs: dict[str, dict[str, Any]], maker: Any
    ) -> Plan:
        """The study of one (dataset, strategy) over the grid (or a sampler's search), waiting for its ``maker``."""
        run_config = functools.partial(
            _run_config,
            dataset=dataset,
            strategy=strategy,
            base={**dataset.args, **strategy.overrides},
            configs=configs,
            out=self.out,
            seed=self.seed,
            made_by=maker,
            share_over=self.n_trials if self.sampler is not None else len(configs),
        )
        name = study_name(self.prefix, dataset.name, strategy.name)
        pruner = strategy.make_pruner(_max_epochs(dataset)) if strategy.pruner else None
        study = grid_study(name, self.storage, list(configs), self.seed, sampler_of(self.sampler), pruner)
        _same_trainings(study, dataset, {**dataset.args, **strategy.overrides}, self.seed)
        for key, value in {
            "dataset": dataset.name,
            "strategy": strategy.name,
            "family": strategy.family,
            "size": strategy.size,
            "epochs": strategy.epochs,
            "configs": {name: _hyperparameter(changes) for name, changes in configs.items()},
            "search": "grid" if self.sampler is None else "sampled",
        }.items():
            study.set_user_attr(key, value)
        if self.sampler is None:
            work = functools.partial(run_grid, study, list(configs), run_config)
        else:
            defaults = config_defaults(self.grid, dataset.config)
            work = functools.partial(run_sampled, study, self.grid, defaults, self.n_trials, run_config)
        return Plan(f"{dataset.name} / {strategy.name}: {len(configs)} configurations", work, maker)


def _same_trainings(study: Any, dataset: Dataset, overrides: dict[str, Any], seed: int) -> None:
    """A study resumed by a worker whose trainings differ (another training config file, overrides or seed)
    is refused with the first difference: its finished trials would be read back as the new ones."""
    asked = {"config": dataset.config, "config_sha256": sha256_of(Path(dataset.config)), "seed": seed}
    asked |= {f"args.{key}": value for key, value in overrides.items()}
    asked = json.loads(json.dumps(asked, default=str))  # as the storage keeps it
    recorded = study.user_attrs.get("trains")
    if recorded is None:
        study.set_user_attr("trains", asked)
        return
    for key in [*asked, *(k for k in recorded if k not in asked)]:
        if recorded.get(key) != asked.get(key):
            raise ValueError(
                f"study {study.study_name} trained with {key} = {recorded.get(key)!r}, and this sweep asks for "
                f"{asked.get(key)!r}: give another --study (and --output), or put it back"
            )


def _same_distillation(maker: Any, strategy: Strategy) -> None:
    """A distilled strategy's study keeps the options it was made with: other options under the same name are
    refused rather than read back as finished."""
    options = {**strategy.distill, "epochs": strategy.epochs}
    recorded = maker.user_attrs.get("distill")
    if recorded is None:
        maker.set_user_attr("distill", options)
    elif recorded != options:
        raise ValueError(
            f"strategy {strategy.name} of study {maker.study_name} was made with {recorded}, and the config asks for "
            f"{options}: give the sweep another --study and --output for the new options, or put them back"
        )


def _run_config(
    name: str,
    overrides: dict[str, Any] | None = None,
    folder: str | None = None,
    *,
    dataset: Dataset,
    strategy: Strategy,
    base: dict[str, Any],
    configs: dict[str, dict[str, Any]],
    out: Path,
    seed: int,
    made_by: Any = None,
    share_over: int = 1,
    trial: Any = None,
) -> dict[str, Any]:
    """Train configuration ``name`` of ``strategy`` in its own folder (a finished one is read back, not retrained).

    ``made_by`` is the study that made the file it trains on (the loss ranking, the synthetic set), whose
    making time a distilled run carries ``1 / share_over`` of (the grid's configurations, or a sampler's
    trials). Under a
    pruner the fit reports every epoch to ``trial`` and stops when pruned (``pruned`` in the result).
    """
    changes = overrides if overrides is not None else configs[name]
    where = out / dataset.name / strategy.name / _slug(folder or name)
    if folder is None:  # a grid point: trained by any trial of the study (a sampler's trial has its own folder)
        where = _attempt_folder(where, trial)
    one_process = {"trainer.devices": 1, "trainer.num_nodes": 1}  # parallelism is one worker per device
    data, share = {}, 0.0
    if made_by is not None and strategy.distill is not None:
        path, seconds = shared_synthetic(made_by)
        data, share = {"data.synthetic": path}, seconds / share_over
    elif made_by is not None:
        data = {"data.subset.ranking": shared_ranking(made_by)}
    run = dataset.training({**base, **data, **changes, **one_process})
    if strategy.pruner is None or trial is None:
        result = train(where, run, seed=seed, configuration=name, strategy=strategy.name)
        if not share:
            return result
        return {**result, "seconds": result["seconds"] + share, "shared_seconds": share}
    pruning = pruning_callback(trial)
    result = train(where, run, seed=seed, configuration=name, strategy=strategy.name, extra_callbacks=[pruning])
    if not pruning.reported:  # read back from an earlier attempt: tell the pruner what it saw
        for epoch, accuracy in enumerate(result["epoch_val_acc"], start=1):
            trial.report(accuracy, step=epoch)
    return {**result, "pruned": len(result["epoch_val_acc"]) < _max_epochs(dataset, changes)}


def _attempt_folder(config_folder: Path, trial: Any) -> Path:
    """The folder a trial trains its configuration in: a finished attempt's (read back, not retrained), else
    its own (``trial<number>``), so that a retry never writes where an attempt still running may write."""
    done = next(iter(sorted(config_folder.glob(f"*/{RESULT}"))), None)
    if done is not None:
        return done.parent
    if (config_folder / RESULT).is_file():  # one folder per configuration, as earlier sweeps kept them
        return config_folder
    return config_folder / (f"trial{trial.number}" if trial is not None else "run")


def _max_epochs(dataset: Dataset, changes: dict[str, Any] | None = None) -> int:
    """The target task's epochs for a configuration (what a pruner's largest rung is)."""
    merged = {**dataset.args, **(changes or {})}
    if "trainer.max_epochs" in merged:
        return int(merged["trainer.max_epochs"])
    return int(lookup(yaml.safe_load(Path(dataset.config).read_text()) or {}, "trainer.max_epochs"))


def _hyperparameter(changes: dict[str, Any]) -> str:
    return next(iter(changes), "default")


def sweep_report(
    storage: str | None = None,
    results: str | None = None,
    study: str | None = None,
    output: str | None = None,
    good_quantile: float = 0.5,
    promote: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Proxy-quality report (000 paper Table 2, Figures 1-4) of a sweep's storage or of a results table.

    Args:
        storage: the sweep's Optuna storage URL (``sqlite:///.../sweep.db``).
        results: a results table instead (CSV: dataset, strategy, config, accuracy, seconds).
        study: only studies named ``<study>/...`` (default: every sweep study).
        output: folder of the report (default: beside the storage or the table).
        good_quantile: good configurations have a proxy accuracy at or above this quantile.
        promote: hybrids for the compute comparison, ``[{strategy: easiest-0.1, top: 0.25}]``.
    """
    from lightning_proxy.experiments.quality import report as quality_report
    from lightning_proxy.experiments.quality import table2

    if (storage is None) == (results is None):
        raise ValueError("give one of --storage (a sweep's database URL) or --results (a results CSV)")
    if results is not None:
        if not Path(results).is_file():
            raise FileNotFoundError(f"--results {results} does not exist")
        table, out = pd.read_csv(results), Path(output or Path(results).parent)
    else:
        check_storage(storage, must_exist=True)
        if output is None and not storage.startswith("sqlite:///"):
            raise ValueError("give --output for a storage that is not a SQLite file")
        out = Path(output or Path(storage.removeprefix("sqlite:///")).parent)
        table = collect_results(storage, study)
        if table.empty:
            where = f" under study {study}" if study else ""
            raise SystemExit(f"no completed sweep trials in {storage}{where}")
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "results.csv", table)
    quality = quality_report(table, out, good_quantile=good_quantile, promote=promote or [])
    print(table2(quality))
    return quality
