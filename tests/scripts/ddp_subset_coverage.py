"""Two-process DDP fit on a digits subset that records which pool indices each rank trains on per epoch.

Run by tests/test_datamodule.py as ``python ddp_subset_coverage.py OUT_DIR``; Lightning relaunches this
script for rank 1.
"""

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lightning_proxy.datamodules import DigitsDataModule, SubsetSpec
from lightning_proxy.module import ClassificationModule


class RecordIndices(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(outputs["indices"].cpu())

    def on_train_epoch_end(self, trainer, pl_module):
        out = Path(sys.argv[1]) / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.npy"
        np.save(out, torch.cat(self.seen).numpy())


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes on a small CPU: more threads only make them contend
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=16, subset=SubsetSpec(fraction=0.3, seed=5, classes=7))
    model = ClassificationModule(arch="preact_resnet8", num_classes=dm.num_classes, in_channels=1)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordIndices()],
    )
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        np.save(Path(sys.argv[1]) / "subset.npy", dm.train_indices)
        np.save(Path(sys.argv[1]) / "targets.npy", dm.targets)
