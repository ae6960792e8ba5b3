"""A sweep worker whose 'training' appends to a log: for the tests of sharing and resuming a study.

    python sweep_worker.py STORAGE_URL STUDY LOG CONFIGS_JSON SECONDS [GO_FILE] [HANG_CONFIG]

Each training writes ``start <config> <pid>`` and ``end <config> <pid>`` lines; the first worker to train
HANG_CONFIG sleeps for an hour after its start line (the test kills it there; a retry trains normally);
GO_FILE, when given, is waited for first so that several workers start at the same moment.
"""

import functools
import json
import os
import sys
import time
from pathlib import Path

from lightning_proxy.experiments.studies import Plan, grid_study, open_storage, run_grid, run_plans


def main() -> None:
    url, name, log, configs, seconds = sys.argv[1:6]
    go = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    hang = sys.argv[7] if len(sys.argv) > 7 else None
    configs = json.loads(configs)
    study = grid_study(name, open_storage(url, heartbeat=1), configs)

    def run_config(config, overrides=None, folder=None, **_):
        with open(log, "a") as f:
            f.write(f"start {config} {os.getpid()}\n")
        hung = Path(f"{log}.hung")
        if config == hang and not hung.exists():
            hung.touch()
            time.sleep(3600)
        time.sleep(float(seconds))
        with open(log, "a") as f:
            f.write(f"end {config} {os.getpid()}\n")
        return {"best_val_acc": configs.index(config) / len(configs), "seconds": float(seconds), "epoch_val_acc": []}

    print("ready", flush=True)
    if go:
        while not Path(go).exists():
            time.sleep(0.05)
    run_plans([Plan(name, functools.partial(run_grid, study, configs, run_config))], poll=1)


if __name__ == "__main__":
    main()
