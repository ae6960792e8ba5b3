"""The shared datamodule: a full training pool whose items carry their pool index, subset rules, loaders.

A concrete datamodule names its dataset and its normalisation: it implements :meth:`PoolDataModule.build_pool`
(returning a dataset of ``(uint8 CxHxW tensor, int label)`` items with ``targets`` and ``classes``) and
sets ``name``, ``num_base_classes``, ``in_channels``, ``mean`` and ``std``, and its training augmentation
(:meth:`PoolDataModule.augmentation`). Everything else (indices, subsets, transforms, loaders, the scoring
loader) lives here.

Two data paths serve the same ``(images, targets, pool_indices)`` batches: pools held as one uint8 tensor
(:class:`InMemoryImages`: digits, CIFAR, a folder dataset decoded once) are batched by indexing it
(:mod:`~lightning_proxy.datamodules.tensor_batches`, the default for them), any other dataset item by
item through a ``DataLoader``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from lightning_proxy.datamodules.tensor_batches import BatchAugment, CentreView, TensorBatches
from lightning_proxy.distill.synthetic import load_synthetic
from lightning_proxy.selection.ranking import pool_fingerprint
from lightning_proxy.selection.subset import SubsetSpec, choose_classes, select_subset


class PoolDataset(Protocol):
    """What :meth:`PoolDataModule.build_pool` returns: ``(image, label)`` items plus labels and names.

    ``transform`` is an attribute so one loaded pool can serve training and scoring with two transforms.
    """

    targets: np.ndarray
    classes: list[str]
    transform: Callable | None

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[Any, int]: ...


class InMemoryImages(Dataset):
    """Images held as one uint8 N x C x H x W tensor with their labels: datasets small enough for memory."""

    def __init__(self, images: torch.Tensor, targets: np.ndarray, classes: list[str], transform: Callable | None):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        return (self.transform(image) if self.transform else image), int(self.targets[i])


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
        num_workers: loader worker processes per process.
        flip_p: probability of a horizontal flip of a training image (a hyperparameter in the 000 paper).
        subset: which examples of the training pool to train on (:class:`SubsetSpec`).
        download: download and verify the dataset into ``root`` when missing (needs internet).
        pin_memory: pin loader memory (only used with an accelerator).
        data_path: ``tensor``: batches indexed out of the pool tensor, augmented whole on the training
            device; ``items``: a ``DataLoader`` with a transform per image (``num_workers`` apply); ``auto``:
            ``tensor`` where the pool is held in memory as one tensor.
        synthetic: train on this synthetic set (a ``.npz`` from ``lightning-proxy distill``) instead of the
            pool; it must have been made on this pool. Validation stays on the real validation set.
    """

    name: str = "pool"
    num_base_classes: int = 0
    in_channels: int = 3
    mean: Sequence[float] = (0.485, 0.456, 0.406)
    std: Sequence[float] = (0.229, 0.224, 0.225)
    image_size: int = 0  # side of the (square) training images; 0 where no crop needs it

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        flip_p: float = 0.5,
        subset: SubsetSpec = SubsetSpec(),  # noqa: B008 (an immutable default: copied on use)
        download: bool = False,
        pin_memory: bool = True,
        data_path: Literal["auto", "tensor", "items"] = "auto",
        synthetic: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p is a probability in [0, 1], got {flip_p}")
        if data_path not in ("auto", "tensor", "items"):
            raise ValueError(f"data_path must be 'auto', 'tensor' or 'items', got {data_path!r}")
        if synthetic is not None and subset != SubsetSpec():
            raise ValueError(
                f"data.synthetic {synthetic} is the whole training set: subset rules ({subset}) choose from a real "
                "pool; give one or the other"
            )
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.flip_p = flip_p
        self.subset = dataclasses.replace(subset)
        self.download = download
        self.pin_memory = pin_memory
        self.data_path = data_path
        self.synthetic = synthetic
        self.save_hyperparameters()
        self._train_pool: PoolDataset | None = None
        self._score_pool: PoolDataset | None = None
        self._val_set: PoolDataset | None = None
        self.train_indices: np.ndarray | None = None
        self.class_ids: list[int] | None = None
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    # --- what a concrete datamodule provides ---------------------------------------------------------
    def build_pool(self, split: str, transform: Callable | None) -> PoolDataset:
        """The ``train`` or ``val`` split as a dataset of ``(uint8 CxHxW tensor, label)`` items."""
        raise NotImplementedError

    def augmentation(self) -> BatchAugment:
        """The training augmentation, for whole batches and (by :meth:`train_transform`) per item."""
        return BatchAugment(flip_p=self.flip_p)

    def train_transform(self) -> Callable:
        """:meth:`augmentation` per training image (uint8 CxHxW in, normalised float out)."""
        aug = self.augmentation()
        if aug.resized_crop is not None:
            crop = [v2.RandomResizedCrop(aug.resized_crop, scale=aug.scale, ratio=aug.ratio, antialias=True)]
        else:
            crop = [v2.RandomCrop(self.image_size, padding=aug.pad)] if aug.pad else []
        return v2.Compose([*crop, v2.RandomHorizontalFlip(aug.flip_p), *self._to_float()])

    def eval_transform(self) -> Callable:
        """Validation and scoring transform: no augmentation."""
        return v2.Compose(self._to_float())

    def eval_view(self) -> CentreView | None:
        """:meth:`eval_transform`'s geometry for whole batches of the pool tensor; None where it has none."""
        return None

    def _to_float(self) -> list[Callable]:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

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
        """The full training pool with training augmentation (built on first use)."""
        if self._train_pool is None:
            if self.synthetic is not None:
                self._train_pool = self._synthetic_pool()
            else:
                self._train_pool = self.build_pool("train", self.train_transform())
        return self._train_pool

    def _synthetic_pool(self) -> InMemoryImages:
        """The synthetic set as the training pool, once it is known to come from this datamodule's pool."""
        real = self.build_pool("train", None)
        synthetic = load_synthetic(self.synthetic)
        shape = tuple(real.images.shape[1:]) if isinstance(real, InMemoryImages) else tuple(real[0][0].shape)
        synthetic.check_source(
            self.name, pool_fingerprint(real.targets), len(real), shape, f"data.synthetic {self.synthetic}"
        )
        images = torch.from_numpy(synthetic.images)
        return InMemoryImages(images, synthetic.labels, list(real.classes), self.train_transform())

    @property
    def score_pool(self) -> PoolDataset:
        """The full training pool without augmentation, for scoring passes (shares the loaded data)."""
        if self._score_pool is None:
            self._score_pool = copy.copy(self.train_pool)
            self._score_pool.transform = self.eval_transform()
        return self._score_pool

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
        self._val_set = self.build_pool("val", self.eval_transform())

    def label_map(self) -> np.ndarray | None:
        """Old label -> new label for a class subset (-1 for dropped classes); None when all classes stay."""
        if self.subset.classes is None:
            return None
        mapping = np.full(self.num_base_classes, -1, dtype=np.int64)
        mapping[self.class_ids] = np.arange(len(self.class_ids))
        return mapping

    # --- loaders -------------------------------------------------------------------------------------
    @property
    def uses_tensor_path(self) -> bool:
        """Whether batches come from the pool tensor (:attr:`data_path`) rather than item by item."""
        in_memory = isinstance(self.train_pool, InMemoryImages)
        if self.data_path == "tensor" and not in_memory:
            raise ValueError(
                f"--data.data_path tensor needs a pool held in memory as one tensor; {self.name}'s is a "
                f"{type(self.train_pool).__name__}: use --data.data_path items (or auto)"
            )
        return in_memory and self.data_path != "items"

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A split's images and model labels (-1: classes left out) on the training device, moved once."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        key = (split, device)
        if key not in self._on_device:
            pool = self.train_pool if split == "train" else self._val_set
            targets = torch.as_tensor(np.asarray(pool.targets), dtype=torch.int64)
            if (mapping := self.label_map()) is not None:
                targets = torch.as_tensor(mapping)[targets]
            self._on_device[key] = (pool.images.to(device), targets.to(device))
        return self._on_device[key]

    def _tensor_batches(
        self, split: str, indices: np.ndarray, batch_size: int, train: bool, augment: bool | None = None
    ) -> TensorBatches:
        images, targets = self._tensors(split)
        rank, world_size = self._rank_and_world() if train else (0, 1)
        augment = train if augment is None else augment
        return TensorBatches(
            images,
            targets,
            torch.as_tensor(indices, dtype=torch.int64),
            batch_size,
            self.mean,
            self.std,
            shuffle=train,
            augment=self.augmentation() if augment else self.eval_view(),
            rank=rank,
            world_size=world_size,
            channels_last=images.device.type == "cuda",
        )

    def _val_indices(self) -> np.ndarray:
        targets = np.asarray(self._val_set.targets)
        if self.subset.classes is None:
            return np.arange(len(targets))
        return np.flatnonzero(np.isin(targets, self.class_ids))

    def train_dataloader(self) -> DataLoader | TensorBatches:
        """Shuffled training subset; items are ``(image, label, pool_index)``."""
        self.setup("fit")
        if self.uses_tensor_path:
            return self._tensor_batches("train", self.train_indices, self.batch_size, train=True)
        dataset = Subset(IndexedDataset(self.train_pool, self.label_map()), self.train_indices.tolist())
        return self._loader(dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | TensorBatches:
        """Validation set restricted to the kept classes; items are ``(image, label, val_index)``."""
        self.setup("validate")
        if self.uses_tensor_path:
            batches = self._tensor_batches("val", self._val_indices(), self.eval_batch_size, train=False)
            return batches.shard(*self._rank_and_world())  # as Lightning's DistributedSampler would
        dataset: Dataset = IndexedDataset(self._val_set, self.label_map())
        if self.subset.classes is not None:
            dataset = Subset(dataset, self._val_indices().tolist())
        return self._loader(dataset, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader | TensorBatches:
        return self.val_dataloader()

    def scoring_dataloader(
        self, indices: Sequence[int] | np.ndarray | None = None, augment: bool = False
    ) -> DataLoader | TensorBatches:
        """The pool (or ``indices`` of it) in order for scoring passes, not split over ranks; without
        augmentation, or with the training augmentation (``augment``, as SVP scores).

        Labels are the model's (a class subset's ``0..k-1``), and -1 for examples of classes it leaves out.
        """
        self.setup("predict")
        if self.uses_tensor_path:
            chosen = np.arange(self.pool_size) if indices is None else np.asarray(indices, dtype=np.int64)
            return self._tensor_batches("train", chosen, self.eval_batch_size, train=False, augment=augment)
        dataset: Dataset = IndexedDataset(self.train_pool if augment else self.score_pool, self.label_map())
        if indices is not None:
            dataset = Subset(dataset, np.asarray(indices, dtype=np.int64).tolist())
        return self._loader(dataset, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader | TensorBatches:
        loader = self.scoring_dataloader()
        return loader.shard(*self._rank_and_world()) if isinstance(loader, TensorBatches) else loader
