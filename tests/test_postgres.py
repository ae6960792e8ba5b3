"""Sweeps on a real PostgreSQL server (the tests' own, see ``postgres.py``): workers started at once on a
fresh database, a database that stops and comes back, and bad storage URLs refused in a line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lightning_proxy.experiments.storage import check_storage, open_storage
from lightning_proxy.experiments.studies import grid_study

WORKER = Path(__file__).parent / "scripts" / "sweep_worker.py"
ROOT = Path(__file__).parents[1]


class Workers:
    """Fake-training sweep workers (``scripts/sweep_worker.py``) on one study, released at the same moment."""

    def __init__(self, tmp_path: Path, url: str, configs: list[str], seconds: float, runs: bool = False) -> None:
        self.url, self.configs, self.log, self.go = url, configs, tmp_path / "log.txt", tmp_path / "go"
        self.runs = tmp_path / "runs" if runs else None
        self.seconds, self.started = seconds, []

    def start(self, count: int, **env: str) -> list[subprocess.Popen]:
        args = [sys.executable, str(WORKER), self.url, "s", str(self.log), json.dumps(self.configs)]
        args += [str(self.seconds), str(self.go), "-", *([str(self.runs)] if self.runs else [])]
        for _ in range(count):
            worker = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
            )
            self.started.append(worker)
        for worker in self.started[-count:]:
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        self.go.touch()
        return self.started[-count:]

    def events(self) -> list[tuple[str, str, int]]:
        if not self.log.is_file():
            return []
        return [(k, c, int(p)) for k, c, p in (line.split() for line in self.log.read_text().splitlines())]

    def wait_for_ends(self, count: int) -> None:
        deadline = time.time() + 120
        while sum(kind == "end" for kind, *_ in self.events()) < count:
            assert time.time() < deadline, "the workers stopped finishing trials"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> list[tuple[int, str]]:
        return [(w.wait(timeout=timeout), w.stderr.read()) for w in self.started]

    def kill(self) -> None:
        for worker in self.started:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


@pytest.fixture
def workers(tmp_path):
    made: list[Workers] = []

    def make(*args, **kwargs) -> Workers:
        made.append(Workers(tmp_path, *args, **kwargs))
        return made[-1]

    yield make
    for group in made:
        group.kill()


def _complete_once(url: str, configs: list[str]) -> None:
    study = optuna.load_study(study_name="s", storage=url)
    complete = Counter(t.params["config"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert complete == Counter(configs), "every grid point COMPLETE exactly once"
    assert study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING)) == []


@pytest.mark.parametrize("count", [2, 3])
def test_workers_started_at_once_on_a_fresh_database_all_get_through(postgres, workers, count):
    url, configs = postgres.database(), [f"c{i}" for i in range(6)]
    group = workers(url, configs, 0.1)
    group.start(count)
    for code, stderr in group.finish():
        assert code == 0, stderr
    _complete_once(url, configs)
    assert len({pid for *_, pid in group.events()}) >= 2, "more than one worker trained"


def test_a_worker_rides_out_its_database_stopping_for_8_seconds(postgres, workers):
    url, configs = postgres.database(), [f"c{i}" for i in range(10)]
    group = workers(url, configs, 0.5)
    (worker,) = group.start(1)
    group.wait_for_ends(3)
    postgres.stop()
    time.sleep(8)
    postgres.start()
    code, stderr = group.finish()[0]
    assert code == 0, stderr
    assert "lost the database" in stderr and "Traceback" not in stderr
    _complete_once(url, configs)


def test_two_workers_with_trials_longer_than_three_heartbeats_survive_a_1_s_outage(postgres, workers):
    url, configs = postgres.database(), [f"c{i}" for i in range(6)]
    group = workers(url, configs, 4.0, runs=True)
    group.start(2)
    time.sleep(6)  # both mid-trial, past three heartbeats
    postgres.stop()
    time.sleep(1)
    postgres.start()
    results = group.finish()
    for code, stderr in results:  # both survive, or one stops with one line
        assert code == 0 or len(stderr.strip().splitlines()) == 1, stderr
    assert any(code == 0 for code, _ in results)
    for writers in (group.runs).glob("*/*/writers"):
        assert len(set(writers.read_text().split())) == 1, f"{writers.parent} was written by two attempts"
    _complete_once(url, configs)


def test_a_worker_past_its_outage_window_stops_with_one_line_and_a_restart_finishes(postgres, workers, tmp_path):
    url, configs = postgres.database(), [f"c{i}" for i in range(4)]
    group = workers(url, configs, 1.5, runs=True)
    (worker,) = group.start(1, SWEEP_OUTAGE="2")
    group.wait_for_ends(1)
    postgres.stop()
    code, stderr = group.finish(timeout=60)[0]
    postgres.start()
    assert code != 0
    last = stderr.strip().splitlines()[-1]
    assert "unreachable for 2 s" in last and "rerun the same command" in last and "Traceback" not in stderr
    kept = sorted(p.parent.parent.name for p in group.runs.glob("*/*/result.json"))
    restart = workers(url, configs, 0.1, runs=True)
    restart.go, restart.log = tmp_path / "go2", tmp_path / "log2.txt"
    restart.start(1)
    assert restart.finish()[0][0] == 0
    retrained = {config for kind, config, _ in restart.events() if kind == "start"}
    assert kept and not retrained & set(kept), "trainings finished before the outage are read back"
    _complete_once(url, configs)


def test_the_storage_opened_by_many_at_once_in_one_process_too(postgres):
    url = postgres.database()
    import threading

    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            grid_study("s", open_storage(url, heartbeat=1), ["c0"])
        except BaseException as error:  # noqa: BLE001 (collected for the assertion)
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]


def test_a_missing_driver_is_named_with_the_extra_that_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"lightning-proxy\[postgres\]"):
        check_storage("postgresql://someone@127.0.0.1:5432/sweeps")


BAD_URLS = [
    ("postgresql://nobody@127.0.0.1:1/none", "cannot connect"),
    ("sqlite:////nonexistent/dir/x.db", "/nonexistent/dir does not exist"),
    ("foo://bar", "knows no database 'foo'"),
    ("not a url", "is not a database URL"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_a_bad_storage_url_is_one_line_in_seconds_before_any_folder(tmp_path, url, message):
    out = tmp_path / "out"
    command = ["lightning-proxy", "sweep", "--config", "configs/sweep_digits.yaml", "--storage", url]
    start = time.time()
    done = subprocess.run([*command, "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and time.time() - start < 10
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not out.exists(), "nothing is made for a sweep that cannot start"


def test_a_report_of_a_mistyped_sqlite_path_makes_no_database(tmp_path):
    path = tmp_path / "swep.db"
    command = ["lightning-proxy", "report", "--storage", f"sqlite:///{path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and f"no database at {path}" in done.stderr.strip().splitlines()[-1]
    assert not path.exists()


def test_two_sweep_commands_share_one_postgresql_sweep(postgres, tmp_path):
    url, out = postgres.database(), tmp_path / "out"
    command = ["lightning-proxy", "sweep", "--config", "configs/sweep_digits.yaml", "--strategies", "null"]
    command += ["--grid", '{"model.lr": [0.001, 0.01], "model.label_smoothing": [0.1]}', "--promote", "[]"]
    command += ["--storage", url, "--output", str(out), "--study", "pg", "--heartbeat", "2"]
    command += [
        "--args",
        '{"trainer.max_epochs": 1, "trainer.limit_train_batches": 3, "trainer.enable_progress_bar": false}',
    ]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    study = optuna.load_study(study_name="pg/digits/target", storage=url)
    configs = ["default", "model.lr=0.001", "model.lr=0.01", "model.label_smoothing=0.1"]
    assert sorted(t.params["config"] for t in study.get_trials(states=(TrialState.COMPLETE,))) == sorted(configs)
    attempts = [p.parent for p in out.glob("digits/target/*/trial*/result.json")]
    assert len(attempts) == 4 and len({p.parent for p in attempts}) == 4, "one finished attempt per configuration"
