"""Wall time of one sweep worker against two (and three) started at once, on a PostgreSQL server of its own.

    python benchmarks/sweep_workers.py [--workers 1 2] [--epochs 1] [--output runs/sweep_workers]

The digits sweep's 12 configurations on the target task alone, each a quick training (the finish, where a
worker waits for another's last trial, dominates). Every run is a fresh database; the table gives each
count's wall time (the last worker's exit), its ratio to one worker, and checks that every grid point is
COMPLETE exactly once.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' own PostgreSQL server

from postgres import Server, binaries  # noqa: E402


def run(server: Server, workers: int, epochs: int, output: Path) -> float:
    url = server.database()
    out = output / f"workers{workers}"
    shutil.rmtree(out, ignore_errors=True)
    command = ["lightning-proxy", "sweep", "--config", "configs/sweep_digits.yaml", "--strategies", "null"]
    command += ["--promote", "[]", "--storage", url, "--output", str(out), "--study", "bench", "--report", "false"]
    command += ["--args", f'{{"trainer.max_epochs": {epochs}, "trainer.enable_progress_bar": false}}']
    start = time.perf_counter()
    started = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL) for _ in range(workers)]
    codes = [p.wait() for p in started]
    seconds = time.perf_counter() - start
    assert codes == [0] * workers, f"worker exit codes {codes}"
    study = optuna.load_study(study_name="bench/digits/target", storage=url)
    complete = Counter(t.params["config"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    assert len(complete) == 12 and set(complete.values()) == {1}, complete
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "sweep_workers")
    args = parser.parse_args()
    found = binaries()
    if found is None:
        raise SystemExit("no PostgreSQL server binaries: install postgresql or set LIGHTNING_PROXY_PG_BIN")
    server = Server(found)
    try:
        times = {count: run(server, count, args.epochs, args.output) for count in args.workers}
    finally:
        server.close()
    one = times.get(1)
    print("| workers | wall time (s) | over one worker |")
    print("| --- | --- | --- |")
    for count, seconds in times.items():
        print(f"| {count} | {seconds:.1f} | {seconds / one:.2f} |" if one else f"| {count} | {seconds:.1f} | - |")


if __name__ == "__main__":
    main()
