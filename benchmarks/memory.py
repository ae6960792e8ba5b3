"""Peak resident memory and wall time of each README command on its bundled example, one fresh process each.

The commands run in order in one temporary folder (the repository's ``configs/`` linked in, ``runs/`` empty)
under ``/usr/bin/time -v``, whose "Maximum resident set size" is the peak of the command's largest process
(a DDP rank or sweep worker is its own process). The table says where the floor is: ``import lightning``
alone, which every command pays.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import lightning (the floor)": [sys.executable, "-c", "import lightning"],
    "fit digits": ["lightning-proxy", "fit", "--config", "configs/digits.yaml"],
    "coreset digits (the main job)": ["lightning-proxy", "coreset", "--config", "configs/coreset_digits.yaml"],
    "active digits": ["lightning-proxy", "active", "--config", "configs/active_digits.yaml"],
    "write synthetic reviews": [
        sys.executable,
        "-c",
        "from lightning_proxy.datamodules.text import write_synthetic_reviews as w; "
        "w('data/amazon_synthetic', train_rows=3000, test_rows=600)",
    ],
    "coreset synthetic reviews": ["lightning-proxy", "coreset", "--config", "configs/coreset_amazon_synthetic.yaml"],
    "active synthetic reviews": ["lightning-proxy", "active", "--config", "configs/active_amazon_synthetic.yaml"],
    "sweep digits": ["lightning-proxy", "sweep", "--config", "configs/sweep_digits.yaml"],
}


def peak(command: list[str], cwd: Path) -> tuple[float, float]:
    """Peak resident GB and wall seconds of ``command`` run in ``cwd``; a failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return kb / 1024**2, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="names of the commands to run (default: all)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:  # one folder: the reviews written once serve both text commands
        folder = Path(temporary)
        (folder / "configs").symlink_to(ROOT / "configs")
        for name, command in COMMANDS.items():
            if args.only and name not in args.only:
                continue
            gb, seconds = peak(command, folder)
            shown = " ".join(command[:4]) if command[0] != sys.executable else "python -c ..."
            rows.append((name, shown, gb, seconds))
            print(f"{name}: {gb:.2f} GB, {seconds:.0f} s", flush=True)
    print("\n| command | peak resident | wall |\n| --- | ---: | ---: |")
    for name, command, gb, seconds in rows:
        print(f"| {name}: `{command}` | {gb:.2f} GB | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
