"""The proxy-dataset sweep: strategies, the one-at-a-time grid, workers sharing a study, resume, a real run."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from lightning_proxy.distill import load_synthetic
from lightning_proxy.experiments.strategies import grid_configs, strategies_from
from lightning_proxy.experiments.studies import (
    Plan,
    _grid_objective,
    collect_results,
    grid_study,
    open_storage,
    report_epoch,
    run_grid,
    run_plans,
    run_sampled,
    shared_ranking,
)
from lightning_proxy.experiments.sweep import sweep
from lightning_proxy.selection import load_ranking

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "scripts" / "sweep_worker.py"
TARGET = str(ROOT / "configs" / "sweep_digits_target.yaml")


def test_strategies_name_and_build_each_proxy():
    spec = {
        "random": [0.1],
        "half_classes": [0.5],
        "other_half_classes": [1.0],
        "easiest": [0.25],
        "hardest": [{"fraction": 0.45, "skip": 0.05}],
        "epochs": [1, 5],
    }
    plan = {s.name: s for s in strategies_from(spec, num_classes=10, seed=3)}
    assert list(plan) == [
        "target",
        "random-0.1",
        "half_classes-0.5",
        "other_half_classes-1",
        "easiest-0.25",
        "hardest-0.45-skip0.05",
        "epochs-1",
        "epochs-5",
    ]
    assert plan["target"].overrides == {}
    assert plan["random-0.1"].overrides == {"data.subset.fraction": 0.1, "data.subset.seed": 3}
    assert plan["half_classes-0.5"].overrides["data.subset.classes"] == 5
    assert plan["half_classes-0.5"].overrides["data.subset.other_classes"] is False
    assert plan["other_half_classes-1"].overrides["data.subset.other_classes"] is True
    easy, hard = plan["easiest-0.25"], plan["hardest-0.45-skip0.05"]
    assert easy.needs_ranking and easy.overrides["data.subset.keep"] == "lowest"
    assert hard.overrides["data.subset.keep"] == "highest" and hard.overrides["data.subset.skip"] == 0.05
    assert plan["epochs-5"].overrides == {"trainer.max_epochs": 5} and plan["epochs-5"].epochs == 5


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"tiny": [0.1]}, "unknown strategy 'tiny'"),
        ({"random": [1.5]}, r"fraction must be in \(0, 1\]"),
        ({"random": [{"fraction": 0.5, "skip": 0.1}]}, "easiest, hardest only"),
        ({"epochs": [0.5]}, "whole numbers of epochs"),
        ({"random": [0.1, 0.1]}, "repeat a size"),
        ({"easiest": [{"fraction": 0.5, "band": 1}]}, "unknown keys"),
    ],
)
def test_bad_strategies_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        strategies_from(spec, num_classes=10)


def test_half_the_classes_needs_four():
    with pytest.raises(ValueError, match="at least 4 classes"):
        strategies_from({"half_classes": [1.0]}, num_classes=3)


def test_grid_changes_one_hyperparameter_at_a_time_and_skips_the_defaults():
    grid = {
        "model.lr": [1e-3, 3e-3, 1e-2],  # 3e-3 is the config's own value
        "data.flip_p": [0.0, 0.5],  # read through data.init_args
        "model.arch_kwargs": [{"width": 8}],  # not in the config: every value is a change
    }
    configs = grid_configs(grid, TARGET)
    assert configs == {
        "default": {},
        "model.lr=0.001": {"model.lr": 1e-3},
        "model.lr=0.01": {"model.lr": 1e-2},
        "data.flip_p=0.5": {"data.flip_p": 0.5},
        'model.arch_kwargs={"width":8}': {"model.arch_kwargs": {"width": 8}},
    }
    with pytest.raises(ValueError, match="non-empty list"):
        grid_configs({"model.lr": 0.1}, TARGET)


def _study(url: str, name: str, configs: list[str]) -> optuna.Study:
    return grid_study(name, open_storage(url, heartbeat=1), configs)


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test():
    yield
    while _STARTED:
        worker = _STARTED.pop()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _worker(url: str, log: Path, configs: list[str], seconds: float, go: str = "-", hang: str = "") -> subprocess.Popen:
    args = [sys.executable, str(WORKER), url, "s", str(log), json.dumps(configs), str(seconds), go]
    if hang:
        args.append(hang)
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _STARTED.append(worker)
    return worker


def _events(log: Path) -> list[tuple[str, str, int]]:
    return [(kind, config, int(pid)) for kind, config, pid in (line.split() for line in log.read_text().splitlines())]


def _wait_for(log: Path, line: str, workers: list[subprocess.Popen]) -> int:
    """The pid of the worker that wrote ``line <pid>``."""
    deadline = time.time() + 120
    while not (log.is_file() and any(e[:2] == tuple(line.split()) for e in _events(log))):
        assert time.time() < deadline and all(w.poll() is None for w in workers), f"no worker reached {line!r}"
        time.sleep(0.1)
    return next(pid for kind, config, pid in _events(log) if f"{kind} {config}" == line)


def _fake_training(trained: list[str]):
    def run_config(config, overrides=None, folder=None, **_):
        trained.append(config)
        return {"best_val_acc": 0.5, "seconds": 0.0, "epoch_val_acc": [0.4, 0.5]}

    return run_config


def _complete(study: optuna.Study) -> Counter:
    return Counter(t.params["config"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def test_two_workers_on_one_sqlite_file_never_train_a_config_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    configs = [f"c{i}" for i in range(8)]
    _study(url, "s", configs)  # created once, as the first worker would
    log, go = tmp_path / "log.txt", tmp_path / "go"
    workers = [_worker(url, log, configs, 0.5, str(go)) for _ in range(2)]
    for w in workers:
        assert w.stdout.readline().strip() == "ready"
    go.touch()
    for w in workers:
        assert w.wait(timeout=300) == 0
    events = _events(log)
    starts = Counter(config for kind, config, _ in events if kind == "start")
    assert starts == Counter(configs), "every configuration trains exactly once"
    assert len({pid for *_, pid in events}) == 2, "both workers trained"
    study = optuna.load_study(study_name="s", storage=url)
    assert _complete(study) == Counter(configs)
    assert study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)) == []
    assert sorted(collect_results(url).config) == []  # not a sweep study: it has no strategy


def test_three_workers_one_killed_mid_trial_the_others_retrain_its_configuration(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    configs = [f"c{i}" for i in range(9)]
    _study(url, "s", configs)
    log, go = tmp_path / "log.txt", tmp_path / "go"
    workers = [_worker(url, log, configs, 0.3, str(go), hang="c4") for _ in range(3)]
    for w in workers:
        assert w.stdout.readline().strip() == "ready"
    go.touch()
    victim = _wait_for(log, "start c4", workers)
    os.kill(victim, signal.SIGKILL)
    survivors = [w for w in workers if w.pid != victim]
    for w in survivors:
        assert w.wait(timeout=300) == 0, "the survivors finish, the killed trial included"
    next(w for w in workers if w.pid == victim).wait()
    events = _events(log)
    ends = Counter(config for kind, config, _ in events if kind == "end")
    assert ends == Counter(configs), "every configuration finished once, the killed one by a survivor"
    starts = Counter(config for kind, config, _ in events if kind == "start")
    assert starts == Counter(configs) + Counter(["c4"]), "only the killed configuration trained again"
    study = optuna.load_study(study_name="s", storage=url)
    assert _complete(study) == Counter(configs)
    assert [t.params["config"] for t in study.get_trials(states=(TrialState.FAIL,))] == ["c4"]
    assert study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING)) == []


class _HourAhead(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return super().now(tz) + datetime.timedelta(hours=1)


def test_a_worker_whose_clock_is_an_hour_off_neither_fails_a_live_trial_nor_waits_on_a_dead_one(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    configs = ["c0", "c1"]
    log = tmp_path / "log.txt"
    _study(url, "s", configs)
    worker = _worker(url, log, configs, 0.1, hang="c0")
    assert worker.stdout.readline().strip() == "ready"
    pid = _wait_for(log, "start c0", [worker])
    # this process now runs an hour ahead: the timestamps it writes into the study say so
    monkeypatch.setattr(optuna.storages._rdb.storage, "datetime", _HourAhead)
    study, trained = _study(url, "s", configs), []
    time.sleep(4)  # longer than the grace period: only the heartbeat tells the live trial from a dead one
    assert run_grid(study, configs, _fake_training(trained)) is False, "c0 still trains elsewhere"
    assert "c0" not in trained and study.get_trials(states=(TrialState.RUNNING,))[0].params["config"] == "c0"
    os.kill(pid, signal.SIGKILL)
    worker.wait()
    start = time.time()
    run_plans([Plan("s", functools.partial(run_grid, study, configs, _fake_training(trained)))], poll=0.5)
    assert trained[-1] == "c0" and time.time() - start < 30, "the dead trial is retrained after the grace"
    assert _complete(study) == Counter(configs)


def test_a_trial_of_a_configuration_a_lower_live_trial_holds_stands_down(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 'sweep.db'}", "s", ["c0"])
    first = study.ask()
    assert first.suggest_categorical("config", ["c0"]) == "c0"
    study.enqueue_trial({"config": "c0"})
    second = study.ask()
    with pytest.raises(optuna.TrialPruned, match="trial 0"):
        _grid_objective(second, ["c0"], _fake_training([]))


def test_a_killed_sweep_resumes_without_losing_or_repeating_a_finished_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    configs = [f"c{i}" for i in range(6)]
    log = tmp_path / "log.txt"
    _study(url, "s", configs)
    worker = _worker(url, log, configs, 0.1, hang="c3")
    pid = _wait_for(log, "start c3", [worker])
    os.kill(pid, signal.SIGKILL)
    worker.wait()
    finished_before = {config for kind, config, _ in _events(log) if kind == "end"}
    assert "c3" not in finished_before

    trained: list[str] = []
    study = _study(url, "s", configs)
    run_plans([Plan("s", functools.partial(run_grid, study, configs, _fake_training(trained)))], poll=0.5)
    assert "c3" in trained and not finished_before & set(trained), "finished trials are not trained again"
    assert sorted(trained) == sorted(set(configs) - finished_before)
    assert _complete(study) == Counter(configs)
    assert [t.params["config"] for t in study.get_trials(states=(TrialState.FAIL,))] == ["c3"]
    assert run_grid(study, configs, _fake_training(trained)) is True  # nothing left: a no-op
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == len(configs)


def test_a_configuration_whose_training_raised_is_trained_again_when_the_sweep_restarts(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 'sweep.db'}", "s", ["c0", "c1"])

    def broken(config, **_):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_grid(study, ["c0", "c1"], broken)
    trained: list[str] = []
    assert run_grid(study, ["c0", "c1"], _fake_training(trained)) is True
    assert sorted(trained) == ["c0", "c1"] and _complete(study) == Counter(["c0", "c1"])


def test_a_worker_refuses_a_ranking_other_than_the_one_the_study_recorded(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'sweep.db'}", heartbeat=1)
    ranking = grid_study("s/d/loss_ranking", storage, ["default"])
    path = tmp_path / "loss.npz"
    path.write_bytes(b"the ranking the first worker made")
    made = {"best_val_acc": 0.9, "seconds": 1.0, "ranking": str(path), "sha256": hashlib.sha256(path.read_bytes())}
    made["sha256"] = made["sha256"].hexdigest()
    run_grid(ranking, ["default"], lambda config, **_: made)
    assert shared_ranking(ranking) == str(path)
    calls: list[str] = []
    plan = Plan("s/d/easiest-0.1", lambda: calls.append("trained") or True, ranking)
    path.write_bytes(b"a ranking this worker made on its own")
    with pytest.raises(FileNotFoundError, match=r"loss_ranking is .*loss.npz .*has another file there.*share"):
        run_plans([plan], poll=0.1)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="does not have it"):
        run_plans([plan], poll=0.1)
    assert calls == [], "refused before any training"


def test_a_smarter_sampler_searches_the_same_values_until_n_trials_complete(tmp_path):
    grid = {"model.lr": [1e-3, 1e-2, 1e-1], "model.optimizer": ["adam", "sgd"]}
    study = optuna.create_study(
        storage=open_storage(f"sqlite:///{tmp_path / 'sweep.db'}"),
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="maximize",
    )
    seen: list[tuple[str, dict]] = []

    def run_config(name, overrides=None, folder=None, **_):
        seen.append((name, overrides))
        assert folder.startswith("trial")
        return {"best_val_acc": overrides["model.lr"], "seconds": 0.0, "epoch_val_acc": []}

    assert run_sampled(study, grid, {"model.lr": 1e-2, "model.optimizer": "adam"}, 5, run_config) is True
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    for name, overrides in seen:
        assert overrides["model.lr"] in grid["model.lr"] and overrides["model.optimizer"] in grid["model.optimizer"]
        changed = [f"model.lr={overrides['model.lr']}"] if overrides["model.lr"] != 1e-2 else []
        changed += ["model.optimizer=sgd"] if overrides["model.optimizer"] == "sgd" else []
        assert name == (",".join(changed) or "default")


def _finished(config_folder: str) -> Path:
    """The attempt folder in which a grid point's configuration finished (one per trial that trained it)."""
    (found,) = Path(config_folder).glob("trial*/result.json")
    return found.parent


def test_sweep_on_digits_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = {
        "trainer.max_epochs": 2,
        "trainer.enable_progress_bar": False,
        "trainer.enable_checkpointing": False,
        "trainer.num_sanity_val_steps": 0,
        "data.batch_size": 256,
    }
    settings = {
        "datasets": {"digits": {"config": TARGET, "args": overrides}},
        "grid": {"model.lr": [3e-3, 3e-2], "model.optimizer": ["sgd"]},
        "strategies": {
            "half_classes": [0.5],
            "easiest": [0.25],
            "hardest": [0.25],
            "epochs": [1],
            "successive_halving": [2],
            "distilled": [
                {"method": "distribution_matching", "ipc": 2, "iterations": 3, "epochs": 3},
                {"method": "distribution_matching", "ipc": 2, "iterations": 0, "epochs": 3, "name": "real-ipc2"},
            ],
        },
        "output": "out",
        "study": "t",
        "promote": [{"strategy": "easiest-0.25", "top": 0.5}],
    }
    results = sweep(**settings)
    assert len(results) == 3 * 8 and set(results.config) == {"default", "model.lr=0.03", "model.optimizer=sgd"}
    assert set(results.strategy) == {
        *("target", "half_classes-0.5", "easiest-0.25", "hardest-0.25", "epochs-1", "successive_halving-2"),
        *("distilled-dm-ipc2", "real-ipc2"),
    }
    halving = results[results.strategy == "successive_halving-2"]
    epochs_trained = halving.epoch_accuracies.map(json.loads).map(len)
    assert (epochs_trained[halving.pruned] == 1).all() and (epochs_trained[~halving.pruned] == 2).all()
    compute = pd.read_csv("out/equal_compute.csv").set_index("strategy")
    assert compute.loc["easiest-0.25+top0.5", "kind"] == "hybrid" and Path("out/regret_vs_compute.png").is_file()
    assert results.accuracy.between(0, 1).all() and (results.seconds > 0).all()
    curves = results[~results.pruned].epoch_accuracies.map(json.loads)
    three = {"epochs-1": 1, "distilled-dm-ipc2": 3, "real-ipc2": 3}
    epochs = results[~results.pruned].strategy.map(three).fillna(2)
    assert (curves.map(len) == epochs).all()
    assert np.allclose(results.epoch_accuracies.map(json.loads).map(max), results.accuracy)
    assert results.loc[results.config == "model.lr=0.03", "hyperparameter"].eq("model.lr").all()

    # easiest and hardest trained on the two ends of the default model's loss ranking
    loss = load_ranking("out/digits/loss_ranking/loss.npz")
    assert loss.metadata["statistic"] == "loss" and len(loss.indices) == len(_digits_targets())
    quarter = round(0.25 * len(loss.indices))
    for strategy, keep in (("easiest-0.25", "lowest"), ("hardest-0.25", "highest")):
        result = json.loads((_finished(f"out/digits/{strategy}/default") / "result.json").read_text())
        assert result["train_examples"] == quarter
        config = yaml.safe_load((_finished(f"out/digits/{strategy}/default") / "config.yaml").read_text())
        subset = config["data"]["init_args"]["subset"]
        assert subset["keep"] == keep and subset["ranking"].endswith("loss_ranking/loss.npz")
    # the distilled strategy: one synthetic set, made once; each run's cost carries a third of its making time
    made = load_synthetic("out/digits/distilled-dm-ipc2/synthetic.npz")
    assert made.metadata["iterations"] == 3 and len(made) == 20
    distilled = results[results.strategy == "distilled-dm-ipc2"].set_index("config")
    for config in distilled.index:
        run = json.loads((_finished(f"out/digits/distilled-dm-ipc2/{config}") / "result.json").read_text())
        assert run["train_examples"] == 20
        assert distilled.seconds[config] == pytest.approx(run["seconds"] + made.metadata["seconds"] / 3)
    config = yaml.safe_load((_finished("out/digits/distilled-dm-ipc2/default") / "config.yaml").read_text())
    assert config["data"]["init_args"]["synthetic"].endswith("distilled-dm-ipc2/synthetic.npz")
    half = json.loads((_finished("out/digits/half_classes-0.5/default") / "result.json").read_text())
    assert half["train_examples"] == round(0.5 * np.isin(_digits_targets(), _half_classes(0)).sum())

    assert Path("out/results.csv").is_file() and Path("out/table2.md").is_file()
    again = sweep(**settings, report=False)
    assert sorted(again.trial) == sorted(results.trial), "a finished sweep started again trains nothing"
    assert collect_results("sqlite:///out/sweep.db", "other").empty
    changed = {**settings["strategies"], "distilled": [{"method": "distribution_matching", "ipc": 2, "iterations": 4}]}
    with pytest.raises(ValueError, match="distilled-dm-ipc2 of study .* was made with .*another --study"):
        sweep(**{**settings, "strategies": changed}, report=False)


def _digits_targets() -> np.ndarray:
    from lightning_proxy.datamodules import DigitsDataModule

    return DigitsDataModule().targets


def _half_classes(seed: int) -> list[int]:
    return sorted(np.random.default_rng(seed).permutation(10)[:5].tolist())


def test_a_lower_trial_that_looks_after_a_higher_one_began_training_stands_down(tmp_path):
    study = _study(f"sqlite:///{tmp_path / 'sweep.db'}", "s", ["c0"])
    lower = study.ask()  # the grid's trial, its configuration not suggested yet
    study.enqueue_trial({"config": "c0"})
    higher = study.ask()
    seen: list[str] = []

    def training(config, **_):
        # while the higher trial trains, the lower one's worker suggests c0 and looks
        with pytest.raises(optuna.TrialPruned, match=f"trial {higher.number}"):
            _grid_objective(lower, ["c0"], _fake_training(seen))
        return {"best_val_acc": 0.5, "seconds": 0.0, "epoch_val_acc": [0.5]}

    assert _grid_objective(higher, ["c0"], training) == 0.5
    assert seen == [] and lower.number < higher.number


# validation accuracy after each of 3 epochs, trained in this order
EPOCH_TABLE = {
    "a": [0.5, 0.6, 0.7],
    "b": [0.6, 0.7, 0.8],
    "c": [0.4, 0.9, 0.95],  # a late bloomer: successive halving cannot know
    "d": [0.7, 0.75, 0.8],
}


def _table_training(table, epochs_run):
    """A 'training' that reports the table's accuracies epoch by epoch and stops when pruned."""

    def run_config(config, trial=None, **_):
        seen = []
        for epoch, accuracy in enumerate(table[config], start=1):
            seen.append(accuracy)
            if report_epoch(trial, epoch, accuracy):
                break
        epochs_run[config] = len(seen)
        return {"best_val_acc": max(seen), "seconds": float(len(seen)), "epoch_val_acc": seen, "pruned": len(seen) < 3}

    return run_config


def test_successive_halving_prunes_what_its_rungs_say_and_keeps_the_epochs(tmp_path):
    # rungs at epochs 1, 3 (min_resource 1, reduction factor 3). At epoch 1 a trial goes on when its accuracy is
    # at least the k-th best of all reported there so far, k = max(1, n // 3): a 0.5 of [0.5]: on; b 0.6 of
    # [0.5, 0.6]: best, on; c 0.4 of [0.5, 0.6, 0.4]: not the best, pruned after 1 epoch; d 0.7: best, on.
    (strategy,) = [s for s in strategies_from({"successive_halving": [3]}, 10) if s.family == "successive_halving"]
    assert strategy.name == "successive_halving-3"
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    study = grid_study("s", open_storage(url, heartbeat=1), list(EPOCH_TABLE), pruner=strategy.make_pruner(3))
    for config in EPOCH_TABLE:
        study.enqueue_trial({"config": config})
    epochs_run: dict[str, int] = {}
    assert run_grid(study, list(EPOCH_TABLE), _table_training(EPOCH_TABLE, epochs_run)) is True
    assert epochs_run == {"a": 3, "b": 3, "c": 1, "d": 3}
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert [t.params["config"] for t in pruned] == ["c"] and pruned[0].user_attrs["seconds"] == 1.0
    assert run_grid(study, list(EPOCH_TABLE), _table_training(EPOCH_TABLE, {})) is True  # a pruned one is settled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.set_user_attr("strategy", "successive_halving-3")
        for key, value in {"dataset": "d", "family": "successive_halving", "size": 1.0, "epochs": None}.items():
            study.set_user_attr(key, value)
    results = collect_results(url).set_index("config")
    assert results.loc["c", "pruned"] and results.loc["c", "accuracy"] == 0.4  # its best reported accuracy
    assert not results.loc["d", "pruned"] and results.loc["d", "accuracy"] == 0.8


def test_a_grid_key_that_is_no_option_is_refused_before_the_storage_or_any_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"grid configuration model.nope=1 on dataset digits: .*model.nope"):
        sweep(datasets={"digits": TARGET}, grid={"model.nope": [1]}, output=str(out))
    assert not out.exists()


def test_a_sweep_resumed_with_other_trainings_is_refused_with_the_first_difference(tmp_path):
    grid, out = {"model.lr": [1e-2]}, str(tmp_path / "out")
    quick = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 2, "trainer.enable_progress_bar": False}
    sweep(datasets={"digits": TARGET}, grid=grid, output=out, args=quick, report=False)
    with pytest.raises(ValueError, match=r"trained with args.trainer.max_epochs = 1, and this sweep asks for 2"):
        sweep(datasets={"digits": TARGET}, grid=grid, output=out, args={**quick, "trainer.max_epochs": 2})
