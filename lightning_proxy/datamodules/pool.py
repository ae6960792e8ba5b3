"""The base of every datamodule: a full training pool whose items carry their pool index, subset rules, and one
seam that makes an epoch's batches from a set of pool indices.

A pool is anything with ``targets`` (labels in pool order), ``classes`` (their names), a length and
``(input, label)`` items: images, token ids, feature vectors. A concrete datamodule implements
:meth:`PoolDataModule.build_pool` and sets ``name``, ``num_base_classes`` and ``in_channels``; everything
else (pool indices, subsets, the class subset's labels, the training, validation, scoring and predict
loaders) lives here. Each loader asks :meth:`PoolDataModule.batches` for the batches of a set of pool
indices: by default a ``DataLoader`` over the indexed items; images (:mod:`~lightning_proxy.datamodules.images`)
and text (:mod:`~lightning_proxy.datamodules.text`) make their own batches there and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_proxy.datamodules.sharding import ShardedBatches
from lightning_proxy.selection.ranking import pool_fingerprint
from lightning_proxy.selection.subset import SubsetSpec, choose_classes, select_subset


class PoolDataset(Protocol):
    """What :meth:`PoolDataModule.build_pool` returns: ``(input, label)`` items plus labels and class names."""

    targets: np.ndarray
    classes: list[str]

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[Any, int]: ...


class IndexedDataset(Dataset):
    """Item ``i`` of ``dataset`` with its index appended: ``(*item, i)``, or ``{**item, "index": i}``.

    The index is the position in the wrapped dataset (the full pool), so a ``Subset``, a shuffle or a DDP
    sampler on top keeps naming the same example. ``target_map`` remaps labels of tuple items (class
    subsets train on labels ``0..k-1``).
    """

    def __init__(self, dataset: Dataset, target_map: np.ndarray | None = None) -> None:
        self.dataset = dataset
        self.target_map = None if target_map is None else torch.as_tensor(target_map, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, dict):
            return {**item, "index": index}
        if self.target_map is not None:
            item = (item[0], int(self.target_map[item[1]]), *item[2:])
        return (*item, index)


class PoolDataModule(L.LightningDataModule):
    """Base datamodule: training pool -> indexed items -> subset; validation restricted to the same classes.

    Args:
        root: folder holding the dataset (its expected layout is in the subclass's docstring).
        batch_size: training batch size per process.
        eval_batch_size: batch size of validation and scoring (default: ``2 * batch_size``).
        num_workers: loader worker processes per process (the per-item path).
        subset: which examples of the training pool to train on (:class:`SubsetSpec`).
        download: download and verify the dataset into ``root`` when missing (needs internet).
        pin_memory: pin loader memory (only used with an accelerator).
    """

    name: str = "pool"
    num_base_classes: int = 0
    in_channels: int = 3

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        subset: SubsetSpec = SubsetSpec(),  # noqa: B008 (an immutable default: copied on use)
        download: bool = False,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.subset = dataclasses.replace(subset)
        self.download = download
        self.pin_memory = pin_memory
        self.save_hyperparameters()
        self._train_pool: PoolDataset | None = None
        self._val_set: PoolDataset | None = None
        self.train_indices: np.ndarray | None = None
        self.class_ids: list[int] | None = None
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self.epoch_chooser: Callable[[int, np.ndarray], np.ndarray] | None = None

    # --- what a concrete datamodule provides ---------------------------------------------------------
    def build_pool(self, split: str) -> PoolDataset:
        """The ``train`` or ``val`` split as a dataset of ``(input, label)`` items with ``targets`` and ``classes``."""
        raise NotImplementedError

    def load_pool(self, split: str) -> PoolDataset:
        """The split as training and validation read it (a layer may add transforms): :meth:`build_pool`'s."""
        return self.build_pool(split)

    # --- derived ----------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes the model predicts: the class subset's size, known before any data is read."""
        if self.subset.classes is None:
            return self.num_base_classes
        kept = self.subset.classes if isinstance(self.subset.classes, int) else len(self.subset.classes)
        return self.num_base_classes - kept if self.subset.other_classes else kept

    @property
    def pool_size(self) -> int:
        return len(self.train_pool)

    @property
    def train_pool(self) -> PoolDataset:
        """The full training pool (built on first use)."""
        if self._train_pool is None:
            self._train_pool = self.load_pool("train")
        return self._train_pool

    @property
    def targets(self) -> np.ndarray:
        return np.asarray(self.train_pool.targets, dtype=np.int64)

    @property
    def fingerprint(self) -> str:
        """Identity of the training pool, stored in ranking files so a consumer can refuse a foreign one."""
        return pool_fingerprint(self.targets)

    def setup(self, stage: str | None = None) -> None:
        if self.train_indices is not None:
            return
        classes = list(self.train_pool.classes)
        self.class_ids = choose_classes(self.subset, classes)
        self.train_indices = select_subset(self.subset, self.targets, classes, self.name)
        if len(self.train_indices) == 0:
            raise ValueError(f"the subset {self.subset} keeps no example of {self.name}")
        self._val_set = self.load_pool("val")

    def label_map(self) -> np.ndarray | None:
        """Old label -> new label for a class subset (-1 for dropped classes); None when all classes stay."""
        if self.subset.classes is None:
            return None
        mapping = np.full(self.num_base_classes, -1, dtype=np.int64)
        mapping[self.class_ids] = np.arange(len(self.class_ids))
        return mapping

    def split_pool(self, split: str) -> PoolDataset:
        """The ``train`` pool or the ``val`` set, once :meth:`setup` has run."""
        return self.train_pool if split == "train" else self._val_set

    def item_dataset(self, split: str, augment: bool) -> PoolDataset:
        """What the per-item path reads of the split, augmented (a layer with transforms picks them) or not."""
        return self.split_pool(split)

    def model_targets(self, split: str) -> torch.Tensor:
        """Every example's label as the model knows it (a class subset's ``0..k-1``; -1: a class left out)."""
        targets = torch.as_tensor(np.asarray(self.split_pool(split).targets), dtype=torch.int64)
        if (mapping := self.label_map()) is not None:
            targets = torch.as_tensor(mapping)[targets]
        return targets

    def _val_indices(self) -> np.ndarray:
        targets = np.asarray(self._val_set.targets)
        if self.subset.classes is None:
            return np.arange(len(targets))
        return np.flatnonzero(np.isin(targets, self.class_ids))

    def rank_and_world(self) -> tuple[int, int]:
        """This process's rank and the number of processes (0 and 1 outside a trainer)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def on_device(self, split: str, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's ``inputs`` (one tensor of the whole split) and model labels (-1: classes left out) on the
        training device, moved there once per split and device."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if (split, device) not in self._on_device:
            self._on_device[(split, device)] = (inputs.to(device), self.model_targets(split).to(device))
        return self._on_device[(split, device)]

    def sharded(self, batches: Iterable) -> Iterable:
        """Batches that split themselves, split over the ranks as Lightning's ``DistributedSampler`` splits a
        ``DataLoader`` (which Lightning does itself)."""
        return batches.shard(*self.rank_and_world()) if isinstance(batches, ShardedBatches) else batches

    # --- the seam: an epoch's batches of a set of pool indices -------------------------------------------
    def batches(self, split: str, indices: np.ndarray, batch_size: int, train: bool, augment: bool = False) -> Iterable:
        """Batches of ``(input, label, pool_index)`` of ``indices`` of the ``split``: shuffled every epoch and
        split over the ranks when ``train``, else in order on this process alone; augmented when ``train`` or
        ``augment``. A layer that makes its own batches (:class:`~lightning_proxy.datamodules.sharding.ShardedBatches`)
        overrides this; the default is a ``DataLoader`` over the indexed items, which Lightning shards."""
        items = IndexedDataset(self.item_dataset(split, train or augment), self.label_map())
        dataset = Subset(items, np.asarray(indices).tolist())
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> Iterable:
        """Shuffled training subset (or this epoch's choice of it); items are ``(input, label, pool_index)``."""
        self.setup("fit")
        return self.batches("train", self.epoch_indices(), self.batch_size, train=True)

    # --- a per-epoch choice of examples (online pruning) -----------------------------------------------------
    def choose_each_epoch(self, chooser: Callable[[int, np.ndarray], np.ndarray] | None) -> None:
        """Train each epoch on ``chooser(epoch, train_indices)``, pool indices out of the training subset (None:
        the whole subset again). The training loader asks it when it is made; a callback that sets it makes
        Lightning reload that loader every epoch. Every rank must choose the same set: each trains its shard."""
        self.epoch_chooser = chooser

    def epoch_indices(self) -> np.ndarray:
        """The pool indices the current epoch trains on: the chooser's, checked against the training subset."""
        if self.epoch_chooser is None:
            return self.train_indices
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        chosen = np.asarray(self.epoch_chooser(epoch, self.train_indices), dtype=np.int64)
        if len(chosen) == 0 or len(np.unique(chosen)) != len(chosen) or not np.isin(chosen, self.train_indices).all():
            raise ValueError(
                f"the choice of epoch {epoch} ({len(chosen)} indices) must be distinct pool indices of the training "
                f"subset ({len(self.train_indices)} examples), at least one"
            )
        return chosen

    def batches_per_epoch(self, count: int) -> int:
        """Training batches of this process in an epoch of ``count`` examples (each rank's shard padded equal)."""
        _, world = self.rank_and_world()
        return math.ceil(math.ceil(count / world) / self.batch_size)

    def val_dataloader(self) -> Iterable:
        """Validation set restricted to the kept classes; items are ``(input, label, val_index)``."""
        self.setup("validate")
        return self.sharded(self.batches("val", self._val_indices(), self.eval_batch_size, train=False))

    def test_dataloader(self) -> Iterable:
        return self.val_dataloader()

    def scoring_dataloader(self, indices: Sequence[int] | np.ndarray | None = None, augment: bool = False) -> Iterable:
        """The pool (or ``indices`` of it) in order for scoring passes, not split over ranks; without
        augmentation, or with the training augmentation (``augment``, as SVP scores).

        Labels are the model's (a class subset's ``0..k-1``), and -1 for examples of classes it leaves out.
        """
        self.setup("predict")
        chosen = np.arange(self.pool_size) if indices is None else np.asarray(indices, dtype=np.int64)
        return self.batches("train", chosen, self.eval_batch_size, train=False, augment=augment)

    def predict_dataloader(self) -> Iterable:
        return self.sharded(self.scoring_dataloader())
