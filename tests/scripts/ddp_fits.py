"""Two-process DDP fits on digits, run once for the tests that check what ranks see and what callbacks write.

Run by the ``ddp_fits`` fixture (tests/conftest.py) as ``python ddp_fits.py OUT_DIR``; Lightning relaunches
this script for rank 1, which makes the same fits.

- ``OUT_DIR/subset_tensor``, ``OUT_DIR/subset_items``: a fit on a digits subset recording the pool indices
  each rank trains on per epoch, on each data path (tests/test_datamodule.py);
- ``OUT_DIR/callbacks``: a fit with every per-example callback; the rankings, the weights and the raw
  presentation counts (tests/test_callbacks.py);
- ``OUT_DIR/tensors``: a 1-D CNN on a subset of a small MNIST-1D, recording each rank's pool indices per
  epoch (tests/test_tensors.py);
- ``OUT_DIR/hf_text``: fastText on a subset of the same reviews as a ``datasets`` folder (tests/test_huggingface.py);
- ``OUT_DIR/pruning_tensor``, ``OUT_DIR/pruning_items``, ``OUT_DIR/pruning_text``: online pruning on each data
  path, recording each rank's choice, loss weights, pool indices per epoch and example passes
  (tests/test_pruning.py);
- ``OUT_DIR/text``: fastText on a subset of synthetic Amazon reviews (written by rank zero before the first
  launch), recording each rank's pool indices per epoch, with forgetting events (tests/test_text.py).
"""

import csv
import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lightning_proxy.callbacks import EL2N, AreaUnderMargin, ForgettingEvents, OnlinePruning, PostTrainingScores
from lightning_proxy.datamodules import AmazonReviewsDataModule, DigitsDataModule, MNIST1DDataModule, SubsetSpec
from lightning_proxy.datamodules.text import write_synthetic_reviews
from lightning_proxy.module import ClassificationModule


class RecordIndices(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(outputs["indices"].cpu())

    def on_train_epoch_end(self, trainer, pl_module):
        np.save(self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.npy", torch.cat(self.seen).numpy())


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


class RecordedPruning(OnlinePruning):
    """Online pruning that saves each rank's choice and loss weights of every epoch it trains."""

    def __init__(self, out: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out = out

    def on_train_epoch_start(self, trainer, pl_module):
        chosen = self.choose(trainer.current_epoch, trainer.datamodule.train_indices)
        weights = pl_module.loss_weights
        np.savez(
            self.out / f"choice_rank{trainer.global_rank}_epoch{trainer.current_epoch}.npz",
            chosen=chosen,
            weights=np.ones(0) if weights is None else weights.cpu().numpy(),
        )


def pruned_fit(out: Path, data_path: str) -> None:
    L.seed_everything(0)
    if data_path == "text":
        dm = AmazonReviewsDataModule(root=str(out.parent / "text_data"), buckets=1000, batch_size=16)
        model = ClassificationModule(arch="fasttext", num_classes=2, in_channels=dm.in_channels, lr=1.0, weight_decay=0)
    else:
        dm = DigitsDataModule(batch_size=32, subset=SubsetSpec(fraction=0.3, seed=1), data_path=data_path)
        model = ClassificationModule(arch="preact_resnet8", num_classes=10, in_channels=1, lr=0.05)
    pruning = RecordedPruning(out, ratio=0.6, delta=1.0, dirpath=str(out))
    trainer = ddp_trainer([pruning, RecordIndices(out), ForgettingEvents(dirpath=str(out))], epochs=4)
    trainer.fit(model, dm)
    np.save(out / f"examples_seen_rank{trainer.global_rank}.npy", np.array(model.examples_seen))
    if trainer.is_global_zero:
        np.save(out / "subset.npy", dm.train_indices)


def ddp_trainer(callbacks: list, epochs: int = 2) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def subset_coverage(out: Path, data_path: str) -> None:
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=16, subset=SubsetSpec(fraction=0.3, seed=5, classes=7), data_path=data_path)
    model = ClassificationModule(arch="preact_resnet8", num_classes=dm.num_classes, in_channels=1)
    trainer = ddp_trainer([RecordIndices(out)])
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        np.save(out / "subset.npy", dm.train_indices)
        np.save(out / "targets.npy", dm.targets)


def callbacks(out: Path) -> None:
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=64)
    model = ClassificationModule(arch="preact_resnet8", num_classes=10, in_channels=1, lr=0.05)
    forgetting = ForgettingEvents(dirpath=str(out))
    counter = CountPresentations(dm.pool_size)
    trainer = ddp_trainer(
        [
            forgetting,
            EL2N(dirpath=str(out)),
            AreaUnderMargin(dirpath=str(out)),
            PostTrainingScores(dirpath=str(out)),
            counter,
        ]
    )
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        torch.save(model.state_dict(), out / "model.pt")
        presentations = forgetting.state_dict()["presentations"].numpy()
        np.savez(out / "presentations.npz", forgetting=presentations, raw=np.stack(counter.per_epoch))


def tensor_coverage(out: Path) -> None:
    L.seed_everything(0)
    dm = MNIST1DDataModule(num_samples=300, batch_size=16, subset=SubsetSpec(fraction=0.5, seed=2))
    model = ClassificationModule(arch="cnn1d", num_classes=10, in_channels=1, lr=0.05)
    trainer = ddp_trainer([RecordIndices(out), ForgettingEvents(dirpath=str(out))])
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        np.save(out / "subset.npy", dm.train_indices)


def hf_text_coverage(out: Path) -> None:
    from lightning_proxy.datamodules import HuggingFaceDataModule

    L.seed_everything(0)
    dm = HuggingFaceDataModule(
        path=str(out.parent / "hf_data"),
        text_column="text",
        buckets=1000,
        batch_size=16,
        subset=SubsetSpec(fraction=0.5, seed=4),
    )
    model = ClassificationModule(arch="fasttext", num_classes=2, in_channels=dm.in_channels, lr=1.0, weight_decay=0)
    trainer = ddp_trainer([RecordIndices(out), ForgettingEvents(dirpath=str(out))])
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        np.save(out / "subset.npy", dm.train_indices)


def reviews_as_datasets(release: Path, folder: Path) -> None:
    """The synthetic release's rows as a DatasetDict of (text, label), saved with save_to_disk."""
    import datasets

    splits = {}
    for split in ("train", "test"):
        with open(release / "amazon_review_polarity_csv" / f"{split}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        splits[split] = datasets.Dataset.from_dict(
            {"text": [f"{r[1]} {r[2]}" for r in rows], "label": [int(r[0]) - 1 for r in rows]}
        )
    datasets.DatasetDict(splits).save_to_disk(str(folder))


def text_coverage(out: Path) -> None:
    L.seed_everything(0)
    dm = AmazonReviewsDataModule(
        root=str(out.parent / "text_data"), buckets=1000, batch_size=16, subset=SubsetSpec(fraction=0.5, seed=3)
    )
    model = ClassificationModule(arch="fasttext", num_classes=2, in_channels=dm.in_channels, lr=1.0, weight_decay=0)
    trainer = ddp_trainer([RecordIndices(out), ForgettingEvents(dirpath=str(out))])
    trainer.fit(model, dm)
    if trainer.is_global_zero:
        np.save(out / "subset.npy", dm.train_indices)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if os.environ.get("LOCAL_RANK", "0") == "0":  # before any launch: rank 1 starts at the first fit
        write_synthetic_reviews(out / "text_data", train_rows=301, test_rows=50)
        reviews_as_datasets(out / "text_data", out / "hf_data")
    fits = {
        "subset_tensor": lambda folder: subset_coverage(folder, "tensor"),
        "subset_items": lambda folder: subset_coverage(folder, "items"),
        "callbacks": callbacks,
        "tensors": tensor_coverage,
        "text": text_coverage,
        "hf_text": hf_text_coverage,
        "pruning_tensor": lambda folder: pruned_fit(folder, "tensor"),
        "pruning_items": lambda folder: pruned_fit(folder, "items"),
        "pruning_text": lambda folder: pruned_fit(folder, "text"),
    }
    for name, fit in fits.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        fit(out / name)
