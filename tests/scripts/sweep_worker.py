"""A sweep worker whose 'training' appends to a log: for the tests of claiming and resuming trials.

    python sweep_worker.py STORAGE_URL STUDY LOG CONFIGS_JSON SECONDS [GO_FILE] [HANG_CONFIG]

Each training writes ``start <config> <pid>`` and ``end <config> <pid>`` lines; HANG_CONFIG sleeps for an
hour after its start line (the test kills the worker there); GO_FILE, when given, is waited for first so
that two workers start claiming at the same moment.
"""

import json
import os
import sys
import time
from pathlib import Path

import optuna

from lightning_proxy.experiments.sweep import GridSampler, open_storage, run_grid_study


def main() -> None:
    url, name, log, configs, seconds = sys.argv[1:6]
    go = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    hang = sys.argv[7] if len(sys.argv) > 7 else None
    configs = json.loads(configs)
    storage = open_storage(url, heartbeat=1)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=GridSampler({"config": configs}),
        direction="maximize",
        load_if_exists=True,
    )

    def run_config(config, overrides=None, folder=None):
        with open(log, "a") as f:
            f.write(f"start {config} {os.getpid()}\n")
        time.sleep(3600 if config == hang else float(seconds))
        with open(log, "a") as f:
            f.write(f"end {config} {os.getpid()}\n")
        return {"best_val_acc": configs.index(config) / len(configs), "seconds": float(seconds), "epoch_val_acc": []}

    print("ready", flush=True)
    if go:
        while not Path(go).exists():
            time.sleep(0.05)
    run_grid_study(study, configs, run_config, heartbeat=1)


if __name__ == "__main__":
    main()
