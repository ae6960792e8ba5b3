"""A sweep worker whose 'training' appends to a log: for the tests of sharing and resuming a study.

    python sweep_worker.py STORAGE_URL STUDY LOG CONFIGS_JSON SECONDS [GO_FILE] [HANG_CONFIG] [RUNS_FOLDER]

Each training writes ``start <config> <pid>`` and ``end <config> <pid>`` lines; the first worker to train
HANG_CONFIG sleeps for an hour after its start line (the test kills it there; a retry trains normally);
GO_FILE, when given, is waited for first so that several workers start at the same moment. With RUNS_FOLDER,
each training happens in the folder the sweep gives its trial, where it appends its pid to ``writers`` as it
starts and ends and writes ``result.json`` last, as a real training does.
"""

import functools
import json
import os
import sys
import time
from pathlib import Path

from lightning_proxy.experiments.runs import read_result
from lightning_proxy.experiments.storage import open_storage
from lightning_proxy.experiments.studies import Plan, grid_study, run_grid, run_plans
from lightning_proxy.experiments.sweep import _attempt_folder
from lightning_proxy.files import write_json


def main() -> None:
    url, name, log, configs, seconds = sys.argv[1:6]
    go = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    hang = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] != "-" else None
    runs = Path(sys.argv[8]) if len(sys.argv) > 8 else None
    configs = json.loads(configs)
    print("ready", flush=True)
    if go:  # every worker opens the storage at once (a fresh database: they race to create its tables)
        while not Path(go).exists():
            time.sleep(0.01)
    storage = open_storage(url, heartbeat=1, window=float(os.environ.get("SWEEP_OUTAGE", "300")))
    study = grid_study(name, storage, configs)

    def run_config(config, overrides=None, folder=None, trial=None, **_):
        where = _attempt_folder(runs / config, trial) if runs else None
        if where is not None and (done := read_result(where)) is not None:
            return done
        with open(log, "a") as f:
            f.write(f"start {config} {os.getpid()}\n")
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
            with open(where / "writers", "a") as f:
                f.write(f"{os.getpid()}\n")
        hung = Path(f"{log}.hung")
        if config == hang and not hung.exists():
            hung.touch()
            time.sleep(3600)
        time.sleep(float(seconds))
        result = {"best_val_acc": configs.index(config) / len(configs), "seconds": float(seconds), "epoch_val_acc": []}
        if where is not None:
            with open(where / "writers", "a") as f:
                f.write(f"{os.getpid()}\n")
            write_json(where / "result.json", result)
        with open(log, "a") as f:
            f.write(f"end {config} {os.getpid()}\n")
        return result

    run_plans([Plan(name, functools.partial(run_grid, study, configs, run_config))], poll=0.2, storage=storage)


if __name__ == "__main__":
    try:
        main()
    except ConnectionError as error:  # as the command line says it: one line
        print(f"sweep_worker: error: {error}", file=sys.stderr)
        sys.exit(1)
