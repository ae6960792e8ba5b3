"""Distilled digits against random real images: the target trained on ``ipc`` images per class of each.

The field's standard comparison (Zhao et al. 2021, Table 1): for 1, 10 and 50 images per class, the
validation accuracy of the target architecture (``configs/sweep_digits_target.yaml``: preact ResNet8, Adam,
one-cycle) trained on a set made by distribution matching, by gradient matching, and on ``ipc`` random real
images per class (the matching runs' own initialisation: ``iterations`` 0), each over ``--seeds`` seeds of
the set and its training. Prints a markdown table (mean and spread of the best validation accuracy at any
epoch, and what the set cost to make) and writes it with every run under ``--output``.

    python benchmarks/distilled_digits.py                      # about 25 minutes on two cores
    python benchmarks/distilled_digits.py --ipc 10 --seeds 1   # one column, a few minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lightning_proxy.datamodules.synthetic import load_synthetic
from lightning_proxy.distill.matching import distill
from lightning_proxy.experiments.runs import train
from lightning_proxy.files import write_text
from lightning_proxy.threads import apply_thread_policy
from lightning_proxy.training import Training

CONFIG = "configs/sweep_digits_target.yaml"
METHODS = {
    "random real": {"method": "distribution_matching", "iterations": 0},
    "distribution matching": {"method": "distribution_matching"},
    "gradient matching": {"method": "gradient_matching"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--dm-iterations", type=int, default=500)
    parser.add_argument("--gm-iterations", type=int, default=60)
    parser.add_argument("--gm-loops", type=int, nargs=2, default=[2, 5], metavar=("OUTER", "INNER"))
    parser.add_argument("--epochs", type=int, default=300, help="epochs of the target on a synthetic set")
    parser.add_argument("--output", default="runs/distilled_digits")
    args = parser.parse_args()
    apply_thread_policy()
    out = Path(args.output)
    training = Training(CONFIG, {"trainer.enable_progress_bar": False, "trainer.max_epochs": args.epochs})
    iterations = {"distribution matching": args.dm_iterations, "gradient matching": args.gm_iterations}
    rows = []
    for name, spec in METHODS.items():
        row = {"set": name}
        for ipc in args.ipc:
            accuracies, costs = [], []
            for seed in range(args.seeds):
                options = {"iterations": iterations.get(name, 0), **spec, "ipc": ipc, "seed": seed}
                if name == "gradient matching":
                    options |= {"outer_loop": args.gm_loops[0], "inner_loop": args.gm_loops[1]}
                path = out / "sets" / f"{name.replace(' ', '_')}-ipc{ipc}-seed{seed}.npz"
                began = time.perf_counter()
                distill(training, path, progress=False, **options)
                costs.append(load_synthetic(path).metadata["seconds"])
                run = training.with_overrides({"data.synthetic": str(path)})
                result = train(out / "runs" / path.stem, run, seed=seed)
                accuracies.append(100 * result["best_val_acc"])
                print(
                    f"{name}, ipc {ipc}, seed {seed}: {accuracies[-1]:.1f} % "
                    f"(set {costs[-1]:.0f} s, {time.perf_counter() - began:.0f} s in all)",
                    flush=True,
                )
            spread = statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0
            row[f"ipc {ipc}"] = f"{statistics.mean(accuracies):.1f} ± {spread:.1f} ({statistics.mean(costs):.0f} s)"
        rows.append(row)
    full = train(out / "runs" / "whole_pool", training.with_overrides({"trainer.max_epochs": 10}), seed=0)
    columns = ["set", *(f"ipc {ipc}" for ipc in args.ipc)]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
        *("| " + " | ".join(row[c] for c in columns) + " |" for row in rows),
        "",
        f"Validation accuracy (%, best epoch, mean ± std over {args.seeds} seeds; the set's making time). "
        f"The whole pool (1,437 images, 10 epochs): {100 * full['best_val_acc']:.1f} %.",
    ]
    table = "\n".join(lines)
    print(table)
    write_text(out / "table.md", table + "\n")
    write_text(out / "settings.json", json.dumps(vars(args), indent=2))


if __name__ == "__main__":
    main()
