"""Two-process DDP fit on digits with every per-example callback; saves the rankings, weights and counts.

Run by tests/test_callbacks.py as ``python ddp_callbacks.py OUT_DIR``; Lightning relaunches this script
for rank 1.
"""

import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lightning_proxy.callbacks import EL2N, AreaUnderMargin, ForgettingEvents, PostTrainingScores
from lightning_proxy.datamodules import DigitsDataModule
from lightning_proxy.module import ClassificationModule


class CountPresentations(L.Callback):
    """Raw presentations of each example per epoch, summed over ranks: the sampler's padding repeats some."""

    def __init__(self, n: int) -> None:
        self.n, self.per_epoch = n, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.count = torch.zeros(self.n)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.count.index_add_(0, batch[2].cpu(), torch.ones(len(batch[2])))

    def on_train_epoch_end(self, trainer, pl_module):
        self.per_epoch.append(trainer.strategy.reduce(self.count, reduce_op="sum").numpy())


if __name__ == "__main__":
    torch.set_num_threads(1)  # two processes on a small CPU: more threads only make them contend
    out = Path(sys.argv[1])
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=64)
    model = ClassificationModule(arch="preact_resnet8", num_classes=10, in_channels=1, lr=0.05)
    forgetting = ForgettingEvents(dirpath=str(out))
    counter = CountPresentations(dm.pool_size)
    callbacks = [forgetting, EL2N(dirpath=str(out)), AreaUnderMargin(dirpath=str(out))]
    callbacks += [PostTrainingScores(dirpath=str(out)), counter]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=callbacks,
    )
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        torch.save(model.state_dict(), out / "model.pt")
        presentations = forgetting.state_dict()["presentations"].numpy()
        np.savez(out / "presentations.npz", forgetting=presentations, raw=np.stack(counter.per_epoch))
