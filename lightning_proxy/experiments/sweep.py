"""Proxy datasets for hyperparameter search (000 paper): one grid of configurations on the target and every proxy.

A *strategy* is a cheaper version of the target task: a random fraction over all classes, half the classes
(or the other half) and a random fraction of them, the easiest or hardest fraction by the per-example loss
of a model trained with the default configuration on everything (optionally after dropping a band at that
end), or fewer epochs. ``target`` is the task itself. Every (dataset, strategy) is an Optuna study over the
same configurations: the defaults, then one hyperparameter changed at a time (GridSampler), or any other
Optuna sampler over the same values for a smarter search.

Storage is SQLite in the output folder by default and any database URL Optuna accepts, so that workers on
many machines share one sweep: start ``lightning-proxy sweep`` on each, one worker per device (a trial
trains in one process; ``CUDA_VISIBLE_DEVICES=i`` gives worker i its GPU). A trial records the best validation
accuracy at any epoch, every epoch's accuracy and the wall time. A worker claims a configuration through the
database (the lowest-numbered live trial of a configuration owns it; the others stand down before
training), so no configuration is trained twice; a killed worker's trial is failed (at once on its own
machine, after the heartbeat's grace period elsewhere) and its configuration trained again, while finished
trials are never repeated.

    lightning-proxy sweep --config configs/sweep_digits.yaml
    lightning-proxy report --storage sqlite:///runs/sweep_digits/sweep.db
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import importlib
import json
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from lightning_proxy.experiments.runs import train
from lightning_proxy.files import write_csv

if TYPE_CHECKING:  # the training layer imports Lightning: only when a run really trains
    from lightning_proxy.training import Training

FAMILIES = ("random", "half_classes", "other_half_classes", "easiest", "hardest", "epochs")
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
]


@dataclass
class Strategy:
    """A proxy of the target task: its name (``easiest-0.1``), family, and the overrides that build it."""

    name: str
    family: str
    size: float = 1.0
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    needs_ranking: bool = False


@dataclass
class Dataset:
    """A dataset of the sweep: the target task's training config and overrides applied to every run."""

    name: str
    config: str
    args: dict[str, Any]

    def training(self, overrides: dict[str, Any] | None = None) -> Training:
        from lightning_proxy.training import Training

        return Training(self.config, {**self.args, **(overrides or {})}, f"datasets.{self.name} (with args)")


def _size_text(value: float) -> str:
    return f"{value:g}"


def strategies_from(spec: dict[str, list[Any]] | None, num_classes: int, seed: int = 0) -> list[Strategy]:
    """``{"random": [0.1, 0.5], "hardest": [{"fraction": 0.5, "skip": 0.05}], "epochs": [1, 5]}`` -> strategies.

    Sizes are shares of the (class-restricted) pool, or ``{fraction, skip}`` for a band of a loss ranking;
    ``epochs`` lists epoch counts. ``half_classes`` draws ``num_classes // 2`` classes with ``seed``;
    ``other_half_classes`` keeps the rest. The target comes first.
    """
    out = [Strategy("target", "target")]
    for family, sizes in (spec or {}).items():
        if family not in FAMILIES:
            raise ValueError(f"unknown strategy {family!r}; choose from {list(FAMILIES)}")
        for size in sizes:
            if family == "epochs":
                if not isinstance(size, int) or size < 1:
                    raise ValueError(f"strategy epochs takes whole numbers of epochs >= 1, got {size!r}")
                out.append(Strategy(f"epochs-{size}", family, epochs=size, overrides={"trainer.max_epochs": size}))
                continue
            band = size if isinstance(size, dict) else {"fraction": size}
            unknown = set(band) - {"fraction", "skip"}
            if unknown:
                raise ValueError(f"strategy {family} size {size!r}: unknown keys {sorted(unknown)} (fraction, skip)")
            fraction, skip = float(band["fraction"]), float(band.get("skip", 0.0))
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"strategy {family}: fraction must be in (0, 1], got {fraction}")
            if skip and family not in ("easiest", "hardest"):
                raise ValueError(f"strategy {family}: skip drops a band of the loss ranking (easiest, hardest only)")
            name = f"{family}-{_size_text(fraction)}" + (f"-skip{_size_text(skip)}" if skip else "")
            overrides: dict[str, Any] = {"data.subset.fraction": fraction, "data.subset.seed": seed}
            if family in ("half_classes", "other_half_classes"):
                if num_classes < 4:
                    raise ValueError(f"half the classes needs at least 4 classes, the dataset has {num_classes}")
                overrides["data.subset.classes"] = num_classes // 2
                overrides["data.subset.other_classes"] = family == "other_half_classes"
            if family in ("easiest", "hardest"):
                overrides["data.subset.keep"] = "lowest" if family == "easiest" else "highest"
                overrides["data.subset.skip"] = skip
            out.append(Strategy(name, family, fraction, None, overrides, family in ("easiest", "hardest")))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"strategies repeat a size: {names}")
    return out


def _lookup(tree: Any, key: str) -> Any:
    """The value at a dotted key of a training config, looking through ``init_args``; KeyError if absent."""
    node = tree
    for part in key.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def config_name(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"


def grid_configs(grid: dict[str, list[Any]], config: str) -> dict[str, dict[str, Any]]:
    """The configurations: ``default`` (the training config as it is) and one per value that differs from it.

    A value equal to the config's own is the default and is not repeated.
    """
    defaults = config_defaults(grid, config)
    configs: dict[str, dict[str, Any]] = {"default": {}}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key} must be a non-empty list of values, got {values!r}")
        for value in values:
            if key not in defaults or value != defaults[key]:  # not in the config: every value is a change
                configs[config_name(key, value)] = {key: value}
    return configs


def config_defaults(grid: dict[str, list[Any]], config: str) -> dict[str, Any]:
    """The training config's own value of every grid key it sets (through ``init_args``)."""
    tree = yaml.safe_load(Path(config).read_text()) or {}
    defaults = {}
    for key in grid:
        with contextlib.suppress(KeyError):
            defaults[key] = _lookup(tree, key)
    return defaults


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name).strip("_") or "default"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock held while the block runs (released by the OS if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- Optuna ---------------------------------------------------------------------------------------------


def open_storage(url: str, heartbeat: int = 60) -> Any:
    """An Optuna RDB storage with heartbeats, so a trial whose worker died is failed and its config retried."""
    engine_kwargs = {"connect_args": {"timeout": 300}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=3 * heartbeat
        )


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler for an ask-and-tell loop that itself decides when the grid is done (no ``study.stop()``)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        pass


def _config_of(trial: Any) -> str | None:
    return trial.params.get("config", trial.system_attrs.get("fixed_params", {}).get("config"))


class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds on a thread while training runs."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> _Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


# A live worker signs its trial moments after creating it; an unsigned trial this old lost its worker.
_UNSIGNED_GRACE = 30.0


def reclaim_dead_trials(study: Any, unsigned_grace: float = _UNSIGNED_GRACE) -> None:
    """Fail trials whose worker died: on this machine at once (its pid is gone), elsewhere by heartbeat.

    A worker that died between creating its trial and signing it left neither a pid nor a heartbeat: that
    trial is failed once it is ``unsigned_grace`` seconds old.
    """
    host, now = socket.gethostname(), datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("pid") is None:
            dead = (now - trial.datetime_start).total_seconds() > unsigned_grace
        else:
            dead = attrs.get("host") == host and not _pid_alive(int(attrs["pid"]))
        if dead:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _ask(study: Any) -> Any:
    """``study.ask()``; this loop records the heartbeats itself (Optuna expects them from ``optimize`` only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask()


def _owner(study: Any, trial: Any, config: str, grace: float = _UNSIGNED_GRACE) -> int | None:
    """The trial that owns ``config`` if it is not ``trial``: a finished one, or a live one numbered lower.

    ``trial`` has written its configuration before it looks. Trial numbers follow the order in which the
    database created the trials, so every lower-numbered trial already exists; one that has not yet written
    its configuration is waited for (it does so at once, or its dead worker's trial is reclaimed, an
    unsigned one after ``grace`` seconds). Of two live trials of one configuration the higher-numbered
    therefore always stands down, and the lower-numbered, which may look first and see no rival, trains:
    no configuration trains twice.
    """
    while True:
        undecided = False
        for other in study.get_trials(deepcopy=False):
            if other.number == trial.number:
                continue
            other_config = _config_of(other)
            if other_config is None:
                undecided |= other.state == TrialState.RUNNING and other.number < trial.number
                continue
            if other_config != config:
                continue
            if other.state == TrialState.COMPLETE:
                return other.number
            if other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number:
                return other.number
        if not undecided:
            return None
        time.sleep(0.2)
        reclaim_dead_trials(study, grace)


def run_grid_study(
    study: Any,
    configs: list[str],
    run_config: Callable[[str, Any], dict[str, Any]],
    heartbeat: int = 60,
) -> None:
    """Train every configuration of ``configs`` once in ``study``; return when every one is trained or training."""
    while True:
        reclaim_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        taken = {_config_of(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.RUNNING)}
        todo = [c for c in configs if c not in taken]
        if not todo:
            return
        queued = {_config_of(t) for t in trials if t.state == TrialState.WAITING}
        tried = {_config_of(t) for t in trials}
        if todo[0] in tried and todo[0] not in queued:  # GridSampler counts a failed config as visited
            study.enqueue_trial({"config": todo[0]})
        trial = _ask(study)
        _sign(trial)
        with _Heartbeat(study._storage, trial._trial_id, heartbeat):
            config = trial.suggest_categorical("config", configs)
            owner = _owner(study, trial, config)
            if owner is not None:
                trial.set_user_attr("stood_down_for", owner)
                study.tell(trial, state=TrialState.PRUNED)
                continue
            _train_trial(study, trial, config, run_config)


def run_sampled_study(
    study: Any,
    grid: dict[str, list[Any]],
    defaults: dict[str, Any],
    n_trials: int,
    run_config: Callable[[str, Any], dict[str, Any]],
    heartbeat: int = 60,
) -> None:
    """A smarter search: the study's sampler picks a value of every grid key, until ``n_trials`` complete."""
    while True:
        reclaim_dead_trials(study)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if len(done) >= n_trials:
            return
        trial = _ask(study)
        values = {
            key: json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in vs])) for key, vs in grid.items()
        }
        changed = {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}
        name = ",".join(config_name(k, v) for k, v in changed.items()) or "default"
        _sign(trial)
        with _Heartbeat(study._storage, trial._trial_id, heartbeat):
            _train_trial(study, trial, name, run_config, overrides=values, folder=f"trial{trial.number}")


def _sign(trial: Any) -> None:
    """Record which process runs ``trial``, so that a worker on the same machine can tell when it died."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def _train_trial(
    study: Any,
    trial: Any,
    config: str,
    run_config: Callable[..., dict[str, Any]],
    overrides: dict[str, Any] | None = None,
    folder: str | None = None,
) -> None:
    """Train ``trial`` (signed, its heartbeat beating) and tell the study its best validation accuracy."""
    trial.set_user_attr("config", config)
    try:
        result = run_config(config, overrides=overrides, folder=folder)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    for key in ("seconds", "epoch_val_acc", "train_examples", "val_acc"):
        trial.set_user_attr(key, result.get(key))
    study.tell(trial, result["best_val_acc"])
    print(
        f"[sweep] {study.study_name} trial {trial.number} {config}: best val acc {result['best_val_acc']:.4f}, "
        f"{result['seconds']:.1f} s",
        flush=True,
    )


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


def loss_ranking(dataset: Dataset, folder: Path, seed: int) -> Path:
    """Per-example loss of the default configuration trained on everything (the easiest/hardest proxies' ranking)."""
    scores = {
        "class_path": "lightning_proxy.callbacks.PostTrainingScores",
        "init_args": {"statistics": ["loss"], "embeddings": False},
    }
    with _locked(folder / ".lock"):  # one worker trains it; the others wait and read its result
        train(folder, dataset.training(), callbacks=[scores], seed=seed)
    path = folder / "loss.npz"
    if not path.is_file():
        raise FileNotFoundError(f"the ranking run in {folder} finished without writing loss.npz; delete the folder")
    return path


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
) -> pd.DataFrame:
    """Train the grid on every dataset's target task and on each proxy strategy; then report proxy quality.

    Args:
        datasets: name -> the target task's training config (a ``lightning-proxy fit`` YAML), or
            ``{config: path, args: {override: value}}``.
        grid: override key -> values, each changed alone from the training config's own value, e.g.
            ``{"model.lr": [1e-3, 1e-2], "model.optimizer": ["sgd", "rmsprop"]}``.
        strategies: family -> sizes: ``random``, ``half_classes``, ``other_half_classes``, ``easiest``,
            ``hardest`` take shares of the pool (or ``{fraction, skip}`` for a band); ``epochs`` takes epoch
            counts. The target task is always included.
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
    """
    if sampler is not None and not n_trials:
        raise ValueError("a sampler searches for n_trials trials per study: give n_trials too")
    sets = _datasets(datasets, args)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out / 'sweep.db'}"
    rdb = open_storage(url, heartbeat)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for dataset in sets:
        plan = strategies_from(strategies, _num_classes(dataset) if strategies else 0, seed)
        configs = grid_configs(grid, dataset.config)
        ranking = None
        if any(s.needs_ranking for s in plan):
            ranking = loss_ranking(dataset, out / dataset.name / "loss_ranking", seed)
        for strategy in plan:
            overrides = {**dataset.args, **strategy.overrides}
            if strategy.needs_ranking:
                overrides["data.subset.ranking"] = str(ranking)

            run_config = functools.partial(
                _run_config, dataset=dataset, strategy=strategy, base=overrides, configs=configs, out=out, seed=seed
            )

            study_obj = optuna.create_study(
                study_name=study_name(study, dataset.name, strategy.name),
                storage=rdb,
                sampler=_sampler(sampler, list(configs), seed),
                direction="maximize",
                load_if_exists=True,
            )
            for key, value in {
                "dataset": dataset.name,
                "strategy": strategy.name,
                "family": strategy.family,
                "size": strategy.size,
                "epochs": strategy.epochs,
                "configs": {name: _hyperparameter(changes) for name, changes in configs.items()},
            }.items():
                study_obj.set_user_attr(key, value)
            print(f"[sweep] {dataset.name} / {strategy.name}: {len(configs)} configurations", flush=True)
            if sampler is None:
                run_grid_study(study_obj, list(configs), run_config, heartbeat)
            else:
                defaults = config_defaults(grid, dataset.config)
                run_sampled_study(study_obj, grid, defaults, n_trials, run_config, heartbeat)
    results = collect_results(rdb, study)
    if report and len(results):
        from lightning_proxy.experiments.quality import report as quality_report

        write_csv(out / "results.csv", results)
        quality_report(results, out)
    return results


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
) -> dict[str, Any]:
    """Train configuration ``name`` of ``strategy`` in its own folder (a finished one is read back, not retrained)."""
    changes = overrides if overrides is not None else configs[name]
    where = out / dataset.name / strategy.name / _slug(folder or name)
    one_process = {"trainer.devices": 1, "trainer.num_nodes": 1}  # parallelism is one worker per device
    run = dataset.training({**base, **changes, **one_process})
    return train(where, run, seed=seed, configuration=name, strategy=strategy.name)


def _hyperparameter(changes: dict[str, Any]) -> str:
    return next(iter(changes), "default")


def _sampler(spec: dict[str, Any] | None, configs: list[str], seed: int) -> Any:
    if spec is None:
        return GridSampler({"config": configs}, seed=seed)
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def collect_results(storage: Any, prefix: str | None = None) -> pd.DataFrame:
    """One row per completed trial of every sweep study in ``storage`` (the columns of :data:`RESULT_COLUMNS`)."""
    rdb = storage if not isinstance(storage, str) else open_storage(storage)
    rows = []
    for summary in optuna.get_all_study_summaries(rdb, include_best_trial=False):
        attrs = summary.user_attrs
        if "strategy" not in attrs or (prefix and not summary.study_name.startswith(f"{prefix}/")):
            continue
        study_obj = optuna.load_study(study_name=summary.study_name, storage=rdb)
        configs = attrs.get("configs", {})
        for trial in study_obj.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            config = trial.user_attrs.get("config") or _config_of(trial)
            rows.append(
                {
                    "dataset": attrs["dataset"],
                    "strategy": attrs["strategy"],
                    "family": attrs["family"],
                    "size": attrs["size"],
                    "epochs": attrs["epochs"],
                    "config": config,
                    "hyperparameter": configs.get(config, config.split("=")[0] if "=" in config else "default"),
                    "accuracy": trial.value,
                    "seconds": trial.user_attrs.get("seconds"),
                    "epoch_accuracies": json.dumps(trial.user_attrs.get("epoch_val_acc") or []),
                    "trial": trial.number,
                }
            )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def sweep_report(
    storage: str | None = None,
    results: str | None = None,
    study: str | None = None,
    output: str | None = None,
    good_quantile: float = 0.5,
) -> pd.DataFrame:
    """Proxy-quality report (000 paper Table 2, Figures 1-4) of a sweep's storage or of a results table.

    Args:
        storage: the sweep's Optuna storage URL (``sqlite:///.../sweep.db``).
        results: a results table instead (CSV: dataset, strategy, config, accuracy, seconds).
        study: only studies named ``<study>/...`` (default: every sweep study).
        output: folder of the report (default: beside the storage or the table).
        good_quantile: good configurations have a proxy accuracy at or above this quantile.
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
    quality = quality_report(table, out, good_quantile=good_quantile)
    print(table2(quality))
    return quality
