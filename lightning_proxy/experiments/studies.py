"""How a sweep's workers share its studies, on Optuna's own machinery: storage, grid studies, claims, results.

Every (dataset, strategy) of a sweep is an Optuna study over the same configurations. Trial k of a grid study
is grid point k (GridSampler); ``study.optimize`` beats each trial's heartbeat, and a trial silent for three
heartbeats, by the database server's clock, is failed and queued again (``RetryHeartbeatStaleTrialCallback``).
A configuration trained twice by a rare race stands down or counts once. Maker studies (a loss ranking, a
synthetic set) record the file they made and its sha256, which every worker checks before training on it.
A :class:`Plan` is one study's work; :func:`run_plans` works on them all until each is complete, whichever
worker trains it. What a trial trains is the sweep's: a plan's work calls back into it with the trial, and
reads back the result's best validation accuracy (or a maker's file); a pruner hears each epoch through
:func:`pruning_callback`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from lightning_proxy.experiments.storage import RetryingStorage, open_storage, ride_out, unavailable
from lightning_proxy.experiments.strategies import config_name

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
    """One trial of ``study``. A trial that trained to its end but was failed as stale meanwhile (its heartbeat
    came late, after an outage) cannot be told; its result stays in its own run folder, where its retry
    reads it back, and this worker goes on."""
    ended: list[int] = []

    def tracked(trial: Any) -> float:
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            ended.append(trial.number)
            raise
        ended.append(trial.number)
        return value

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`GridSampler` is re-evaluating")  # a rare race: stood down
            study.optimize(tracked, n_trials=1)
    except Exception as error:
        if (gone := unavailable(error)) is not None:
            raise gone from None
        if not ended or study.get_trials(deepcopy=False)[ended[0]].state != TrialState.FAIL:
            raise
        print(
            f"[sweep] {study.study_name} trial {ended[0]} was failed as stale while it trained (its heartbeat came "
            "late); its retry reads its result back",
            flush=True,
        )


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
    "examples_seen",
    "val_acc",
    "ranking",
    "synthetic",
    "sha256",
    "pruned",
    "shared_seconds",
    "matching_loss",
)


def pruning_callback(trial: Any) -> Any:
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


def sha256_of(path: Path) -> str:
    """The file's sha256, read once per version of the file (every trial of a proxy checks its ranking)."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
    found = Path(path).is_file() and sha256_of(Path(path)) == digest
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


def run_plans(plans: list[Plan], poll: float, storage: Any = None) -> None:
    """Work on every study until each is complete, whichever worker trains it; while only other workers'
    trials are left, look again every ``poll`` seconds (a dead worker's trial is then failed and retrained,
    a finished one lets this worker stop). With a :class:`RetryingStorage`, an outage between trials is
    ridden out as the storage's own calls are."""

    def step(plan: Plan) -> bool:
        if plan.waits_for is not None and _shared_file(plan.waits_for) is None:
            return False  # its ranking or synthetic set is made (here or elsewhere) first
        if not plan.said:
            print(f"[sweep] {plan.label}", flush=True)
            plan.said = True
        return plan.work()

    while True:
        pending = False
        for plan in plans:
            if isinstance(storage, RetryingStorage):
                pending |= not ride_out(functools.partial(step, plan), storage.url, storage.window)
            else:
                pending |= not step(plan)
        if not pending:
            return
        time.sleep(poll)


def study_name(prefix: str, dataset: str, strategy: str) -> str:
    return f"{prefix}/{dataset}/{strategy}"


def sampler_of(spec: dict[str, Any] | None) -> Any:
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
