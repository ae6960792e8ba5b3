"""Proxy datasets for hyperparameter search (000 paper): one grid of configurations on the target and every proxy.

The strategies (cheaper versions of the target task, and multi-fidelity searches of it) and the grid are
:mod:`lightning_proxy.experiments.strategies`; ``target`` is the task itself, and the easiest/hardest
proxies rank by the per-example loss of the default configuration trained on everything. Every (dataset,
strategy) is an Optuna study over the same configurations (GridSampler), or any other Optuna sampler over
the same values for a smarter search.

Storage is SQLite in the output folder by default and any database URL Optuna accepts, so that workers on
many machines share one sweep: start ``lightning-proxy sweep`` on each, one worker per device (a trial
trains in one process; ``CUDA_VISIBLE_DEVICES=i`` gives worker i its GPU). Optuna is the engine: trial k of a
study is grid point k, ``study.optimize`` beats the heartbeat, a trial silent for three heartbeats (by the
database server's clock) is failed and queued again, and a finished training's ``result.json`` is read back rather
than retrained. The loss ranking of the easiest/hardest proxies is a study of its own, trained once per
dataset, and so is each distilled strategy's synthetic set; the file's path and sha256 are recorded there and
checked by every worker that trains on it. A trial records the best validation accuracy at any epoch, every
epoch's accuracy and the wall time; a distilled strategy's trials add an equal share of the distillation's
time (its seconds over the grid's configurations), so its relative cost counts the distillation once.

    lightning-proxy sweep --config configs/sweep_digits.yaml
    lightning-proxy report --storage sqlite:///runs/sweep_digits/sweep.db
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from lightning_proxy.experiments.runs import train
from lightning_proxy.experiments.strategies import (
    Strategy,
    config_defaults,
    config_name,
    grid_configs,
    lookup,
    strategies_from,
)
from lightning_proxy.files import write_csv

if TYPE_CHECKING:  # the training layer imports Lightning: only when a run really trains
    from lightning_proxy.training import Training

RESULT_COLUMNS = [
    "dataset",
    "strategy",
    "family",
    "size",
    "epochs",
    "config",
    "hyperparameter",
    "accuracy",
    "seconds",
    "epoch_accuracies",
    "trial",
    "pruned",
]


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


# --- Optuna ---------------------------------------------------------------------------------------------
RETRIES = 3  # a trial whose worker died is queued again this many times


def open_storage(url: str, heartbeat: int = 60) -> Any:
    """Optuna's RDB storage with heartbeats: a trial silent for three of them, by the database's clock, is
    failed and queued again (``RetryHeartbeatStaleTrialCallback``), so a killed worker's configuration is retrained."""
    engine_kwargs = {"connect_args": {"timeout": 300}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat,
            grace_period=3 * heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
        )


def grid_study(
    name: str, storage: Any, configs: list[str], seed: int = 0, sampler: Any = None, pruner: Any = None
) -> Any:
    """The study of one (dataset, strategy): Optuna's GridSampler gives trial k grid point k (of a seeded order)."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler or optuna.samplers.GridSampler({"config": configs}, seed=seed),
        direction="maximize",
        load_if_exists=True,
        pruner=pruner,
    )


def config_of(trial: Any) -> str | None:
    """A trial's configuration, suggested or queued with it (None: a trial just asked, not suggested yet)."""
    return trial.params.get("config", trial.system_attrs.get("fixed_params", {}).get("config"))


def _fail_stale_trials(study: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _optimize_one(study: Any, objective: Callable[[Any], float]) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`GridSampler` is re-evaluating")  # a rare race: stood down
        study.optimize(objective, n_trials=1)


def _state(trial: Any) -> TrialState | str:
    """A trial's state, where a pruner's PRUNED (the configuration is settled) differs from standing down."""
    return "stood_down" if "stood_down_for" in trial.user_attrs else trial.state


SETTLED = (TrialState.COMPLETE, TrialState.PRUNED)
UNDER_WAY = (*SETTLED, TrialState.RUNNING, TrialState.WAITING)


def run_grid(study: Any, configs: list[str], run_config: Callable[..., dict[str, Any]]) -> bool:
    """Train this study's configurations that nobody has (``study.optimize``, a trial at a time); True when
    every one is complete, False when some still train elsewhere.

    A configuration whose trials all failed (a training that raised, or a worker dead past its retries) is
    queued again. A trial stands down (PRUNED, ``stood_down_for``) when another trial of its configuration
    is settled, trains already, or is live and numbered lower: of trials queued twice at once, one trains.
    """
    objective = functools.partial(_grid_objective, configs=configs, run_config=run_config)
    while True:
        _fail_stale_trials(study)  # by the database's clock; their retries are queued as WAITING trials
        states: dict[str | None, set[TrialState]] = {}
        for trial in study.get_trials(deepcopy=False):
            states.setdefault(config_of(trial), set()).add(_state(trial))
        todo = [c for c in configs if not states.get(c, set()) & set(UNDER_WAY)]
        waiting = any(TrialState.WAITING in s for s in states.values())
        if not todo and not waiting:
            return all(states[c] & set(SETTLED) for c in configs)
        if todo and not waiting and todo[0] in states:  # tried and failed: the grid counts it as visited
            study.enqueue_trial({"config": todo[0]})
        _optimize_one(study, objective)


def _grid_objective(trial: Any, configs: list[str], run_config: Callable[..., dict[str, Any]]) -> float:
    config = trial.suggest_categorical("config", configs)
    for other in trial.study.get_trials(deepcopy=False, states=(*SETTLED, TrialState.RUNNING)):
        if other.number == trial.number or config_of(other) != config or _state(other) == "stood_down":
            continue
        if other.state != TrialState.RUNNING or other.number < trial.number or "training" in other.user_attrs:
            trial.set_user_attr("stood_down_for", other.number)
            raise optuna.TrialPruned(f"configuration {config} is trial {other.number}'s")
    trial.set_user_attr("training", True)
    return _trained(trial, config, run_config)


def run_sampled(
    study: Any,
    grid: dict[str, list[Any]],
    defaults: dict[str, Any],
    n_trials: int,
    run_config: Callable[..., dict[str, Any]],
) -> bool:
    """A smarter search: the study's sampler picks a value of every grid key, until ``n_trials`` complete."""

    def objective(trial: Any) -> float:
        values = {
            key: json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in vs])) for key, vs in grid.items()
        }
        changed = {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}
        name = ",".join(config_name(k, v) for k, v in changed.items()) or "default"
        return _trained(trial, name, run_config, overrides=values, folder=f"trial{trial.number}")

    while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < n_trials:
        _optimize_one(study, objective)
    return True


def _trained(trial: Any, config: str, run_config: Callable[..., dict[str, Any]], **kwargs: Any) -> float:
    """Train ``config`` for ``trial`` (a finished training is read back) and return its best validation accuracy;
    a training its study's pruner stopped keeps its epochs and time and ends the trial PRUNED."""
    trial.set_user_attr("config", config)
    result = run_config(config, trial=trial, **kwargs)
    for key in RECORDED:
        if key in result:
            trial.set_user_attr(key, result[key])
    if result.get("pruned"):
        how, value = f"pruned after {len(result['epoch_val_acc'])} epochs", result["best_val_acc"]
    elif "matching_loss" in result:  # a synthetic set made; its value a finite number, or Optuna fails the trial
        how, value = "matching loss", result["matching_loss"]
        if not math.isfinite(value):
            how, value = "real images, no matching (iterations 0)", 0.0
    else:
        how, value = "best val acc", result["best_val_acc"]
    name = f"{trial.study.study_name} trial {trial.number} {config}"
    print(f"[sweep] {name}: {how} {value:.4f}, {result['seconds']:.1f} s", flush=True)
    if result.get("pruned"):
        raise optuna.TrialPruned(f"pruned after {len(result['epoch_val_acc'])} epochs")
    return value


RECORDED = (
    "seconds",
    "epoch_val_acc",
    "train_examples",
    "val_acc",
    "ranking",
    "synthetic",
    "sha256",
    "pruned",
    "shared_seconds",
    "matching_loss",
)


def _pruning(trial: Any) -> Any:
    """A callback that reports each validation epoch's accuracy to ``trial`` and stops the fit when its
    study's pruner says so (Lightning finishes the epoch)."""
    from lightning.pytorch.callbacks import Callback

    class Pruning(Callback):
        def __init__(self) -> None:
            self.reported = 0

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            accuracy = trainer.callback_metrics.get("val/acc")
            if trainer.sanity_checking or accuracy is None:
                return
            self.reported = trainer.current_epoch + 1
            if report_epoch(trial, self.reported, float(accuracy)):
                trainer.should_stop = True

    return Pruning()


def report_epoch(trial: Any, epoch: int, accuracy: float) -> bool:
    """Tell ``trial`` its validation accuracy after ``epoch`` epochs (the resource); True when its pruner stops it."""
    trial.report(accuracy, step=epoch)
    return trial.should_prune()


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
    return {**result, "ranking": str(path), "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    """The file's sha256, read once per version of the file (every trial of a proxy checks its ranking)."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
    return {"synthetic": str(path), "sha256": _sha256(path), "seconds": made["seconds"], "matching_loss": loss}


MADE_FILES = {"ranking": "loss ranking", "synthetic": "synthetic set"}  # what a maker study records, by key


def _shared_file(study: Any) -> dict[str, Any] | None:
    """What a maker study (a loss ranking, a synthetic set) recorded of the file it made (None: not made yet).

    A worker whose file at that path is missing or differs refuses: one study must not mix trials made on
    different files.
    """
    made = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not made:
        return None
    key = next(k for k in MADE_FILES if k in made[0].user_attrs)
    path, digest, what = made[0].user_attrs[key], made[0].user_attrs["sha256"], MADE_FILES[key]
    found = Path(path).is_file() and _sha256(Path(path)) == digest
    if not found:
        problem = "has another file there" if Path(path).is_file() else "does not have it"
        raise FileNotFoundError(
            f"the {what} of study {study.study_name} is {path} (sha256 {digest[:12]}...), and this worker "
            f"{problem}: run every worker in one output folder on a filesystem they share, or copy that file "
            "to the same path before starting"
        )
    return made[0].user_attrs


def shared_ranking(study: Any) -> str | None:
    """The loss ranking a dataset's proxies train on, as the ranking study recorded it (None: not made yet)."""
    made = _shared_file(study)
    return None if made is None else made["ranking"]


def shared_synthetic(study: Any) -> tuple[str, float] | None:
    """A distilled strategy's synthetic set and its making time, as its study recorded them (None: not made yet)."""
    made = _shared_file(study)
    return None if made is None else (made["synthetic"], float(made["seconds"]))


@dataclass
class Plan:
    """One study of a sweep: what this worker runs on it (True once all its trials are complete), and the
    study making the file it trains on (a loss ranking, a synthetic set) that it waits for."""

    label: str
    work: Callable[[], bool]
    waits_for: Any = None
    said: bool = False


def run_plans(plans: list[Plan], poll: float) -> None:
    """Work on every study until each is complete, whichever worker trains it; while only other workers'
    trials are left, look again every ``poll`` seconds (a dead worker's trial is then failed and retrained)."""
    while True:
        pending = False
        for plan in plans:
            if plan.waits_for is not None and _shared_file(plan.waits_for) is None:
                pending = True  # its ranking or synthetic set is made (here or elsewhere) first
                continue
            if not plan.said:
                print(f"[sweep] {plan.label}", flush=True)
                plan.said = True
            pending |= not plan.work()
        if not pending:
            return
        time.sleep(poll)


def study_name(prefix: str, dataset: str, strategy: str) -> str:
    return f"{prefix}/{dataset}/{strategy}"


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
        report: write ``results.csv`` and the proxy-quality report when this worker is done.
        promote: hybrids for the report, ``[{strategy: easiest-0.1, top: 0.25}]``: every configuration on that
            proxy, the top share of them on the target task (whose runs the sweep has), the best picked.
    """
    if sampler is not None and not n_trials:
        raise ValueError("a sampler searches for n_trials trials per study: give n_trials too")
    sets = _datasets(datasets, args)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out / 'sweep.db'}"
    rdb = open_storage(url, heartbeat)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plans = []
    for dataset in sets:
        plan = strategies_from(strategies, _num_classes(dataset) if strategies else 0, seed)
        for spec in promote or []:  # before anything trains
            if set(spec) != {"strategy", "top"} or spec["strategy"] not in {s.name for s in plan}:
                raise ValueError(f"promote {spec!r}: give {{strategy, top}} with one of {[s.name for s in plan]}")
        configs = grid_configs(grid, dataset.config)
        ranking = None
        if any(s.needs_ranking for s in plan):
            ranking = grid_study(study_name(study, dataset.name, "loss_ranking"), rdb, ["default"], seed)
            make = functools.partial(
                loss_ranking, dataset=dataset, folder=out / dataset.name / "loss_ranking", seed=seed
            )
            plans.append(
                Plan(f"{dataset.name} / loss ranking", functools.partial(run_grid, ranking, ["default"], make))
            )
        for strategy in plan:
            maker = None
            if strategy.distill is not None:
                maker_name = study_name(study, dataset.name, f"{strategy.name}/synthetic")
                maker = grid_study(maker_name, rdb, ["default"], seed)
                _same_distillation(maker, strategy)
                folder = out / dataset.name / strategy.name
                make = functools.partial(synthetic_set, dataset=dataset, strategy=strategy, folder=folder, seed=seed)
                label = f"{dataset.name} / {strategy.name}: the synthetic set"
                plans.append(Plan(label, functools.partial(run_grid, maker, ["default"], make)))
            else:
                maker = ranking if strategy.needs_ranking else None
            run_config = functools.partial(
                _run_config,
                dataset=dataset,
                strategy=strategy,
                base={**dataset.args, **strategy.overrides},
                configs=configs,
                out=out,
                seed=seed,
                made_by=maker,
                share_over=n_trials if sampler is not None else len(configs),
            )
            name = study_name(study, dataset.name, strategy.name)
            pruner = strategy.make_pruner(_max_epochs(dataset)) if strategy.pruner else None
            study_obj = grid_study(name, rdb, list(configs), seed, _sampler(sampler), pruner)
            for key, value in {
                "dataset": dataset.name,
                "strategy": strategy.name,
                "family": strategy.family,
                "size": strategy.size,
                "epochs": strategy.epochs,
                "configs": {name: _hyperparameter(changes) for name, changes in configs.items()},
                "search": "grid" if sampler is None else "sampled",
            }.items():
                study_obj.set_user_attr(key, value)
            if sampler is None:
                work = functools.partial(run_grid, study_obj, list(configs), run_config)
            else:
                defaults = config_defaults(grid, dataset.config)
                work = functools.partial(run_sampled, study_obj, grid, defaults, n_trials, run_config)
            label = f"{dataset.name} / {strategy.name}: {len(configs)} configurations"
            plans.append(Plan(label, work, maker))
    run_plans(plans, poll=heartbeat)
    results = collect_results(rdb, study)
    if report and len(results):
        from lightning_proxy.experiments.quality import report as quality_report

        write_csv(out / "results.csv", results)
        quality_report(results, out, promote=promote or [])
    return results


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
    pruning = _pruning(trial)
    result = train(where, run, seed=seed, configuration=name, strategy=strategy.name, extra_callbacks=[pruning])
    if not pruning.reported:  # read back from an earlier attempt: tell the pruner what it saw
        for epoch, accuracy in enumerate(result["epoch_val_acc"], start=1):
            trial.report(accuracy, step=epoch)
    return {**result, "pruned": len(result["epoch_val_acc"]) < _max_epochs(dataset, changes)}


def _max_epochs(dataset: Dataset, changes: dict[str, Any] | None = None) -> int:
    """The target task's epochs for a configuration (what a pruner's largest rung is)."""
    merged = {**dataset.args, **(changes or {})}
    if "trainer.max_epochs" in merged:
        return int(merged["trainer.max_epochs"])
    return int(lookup(yaml.safe_load(Path(dataset.config).read_text()) or {}, "trainer.max_epochs"))


def _hyperparameter(changes: dict[str, Any]) -> str:
    return next(iter(changes), "default")


def _sampler(spec: dict[str, Any] | None) -> Any:
    if spec is None:
        return None
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def collect_results(storage: Any, prefix: str | None = None) -> pd.DataFrame:
    """One row per configuration of every sweep study in ``storage``, from its first complete trial (a sampled
    study: every complete trial), with the columns of :data:`RESULT_COLUMNS`."""
    rdb = storage if not isinstance(storage, str) else open_storage(storage)
    rows = []
    for summary in optuna.get_all_study_summaries(rdb, include_best_trial=False):
        attrs = summary.user_attrs
        if "strategy" not in attrs or (prefix and not summary.study_name.startswith(f"{prefix}/")):
            continue
        study_obj = optuna.load_study(study_name=summary.study_name, storage=rdb)
        configs, seen = attrs.get("configs", {}), set()
        for trial in study_obj.get_trials(deepcopy=False, states=SETTLED):
            if _state(trial) == "stood_down" or (trial.state == TrialState.PRUNED and not trial.intermediate_values):
                continue
            config = trial.user_attrs.get("config") or config_of(trial)
            if config in seen and attrs.get("search") == "grid":
                continue  # a rare duplicate of a grid point (two workers at once): its first trial counts
            seen.add(config)
            rows.append(
                {
                    "dataset": attrs["dataset"],
                    "strategy": attrs["strategy"],
                    "family": attrs["family"],
                    "size": attrs["size"],
                    "epochs": attrs["epochs"],
                    "config": config,
                    "hyperparameter": configs.get(config, config.split("=")[0] if "=" in config else "default"),
                    "accuracy": trial.value if trial.value is not None else max(trial.intermediate_values.values()),
                    "seconds": trial.user_attrs.get("seconds"),
                    "epoch_accuracies": json.dumps(trial.user_attrs.get("epoch_val_acc") or []),
                    "trial": trial.number,
                    "pruned": trial.state == TrialState.PRUNED,
                }
            )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


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
