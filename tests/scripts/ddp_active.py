"""Two-process DDP active-learning run on digits; each rank records what it selects and trains on.

Run by tests/test_active.py as ``python ddp_active.py OUT_DIR``; Lightning relaunches this script for
rank 1, which runs the same driver.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

import lightning_proxy.experiments.active as active_module
from lightning_proxy.methods import KCenters, Ranked

DIGITS = str(Path(__file__).parents[2] / "configs" / "digits.yaml")
DDP = {
    "trainer.accelerator": "cpu",
    "trainer.devices": 2,
    "trainer.strategy": "ddp",
    "trainer.max_epochs": 1,
    "trainer.limit_val_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.enable_checkpointing": False,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
}


def record(out: Path, kind: str, values) -> None:
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set by Lightning for the relaunched rank
    with open(out / f"rank{rank}_{kind}.jsonl", "a") as f:
        f.write(json.dumps([int(v) for v in values]) + "\n")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    real_train = active_module.train

    def recorded(real):
        def next_batch(self, *args, **kwargs):
            batch = real(self, *args, **kwargs)
            record(out, "selected", batch)
            return batch

        return next_batch

    for method in (Ranked, KCenters):  # the methods this run selects with
        method.next_batch = recorded(method.next_batch)

    def train(folder, training, *args, **kwargs):
        record(out, "trained_on", np.load(training.overrides["data.subset.indices"]))
        return real_train(folder, training, *args, **kwargs)

    active_module.train = train
    active_module.active(
        proxy_config=DIGITS,
        target_config=DIGITS,
        output=str(out / "run"),
        proxy_args={**DDP, "model.arch": "preact_resnet8"},
        target_args={**DDP, "model.arch": "preact_resnet8"},
        data_args={"data.subset.fraction": 0.5, "data.subset.seed": 3},
        methods=["least_confidence", "kcenters"],
        selectors=["proxy"],
        schedule=[0.05, 0.1],
        budgets=[0.15],
        seeds=[0],
    )
