"""Image pools on the shared base: transforms, normalisation, the tensor data path and synthetic sets.

A concrete image datamodule implements :meth:`ImagePoolDataModule.build_pool` (a dataset of ``(uint8 CxHxW
tensor, int label)`` items with ``targets`` and ``classes``, made with the given ``transform``), sets
``name``, ``num_base_classes``, ``in_channels``, ``mean`` and ``std``, and its training augmentation
(:meth:`ImagePoolDataModule.augmentation`).

Two data paths serve the same ``(images, targets, pool_indices)`` batches: pools held as one uint8 tensor
(:class:`InMemoryImages`: digits, CIFAR, a folder dataset decoded once) are batched by indexing it
(:mod:`~lightning_proxy.datamodules.tensor_batches`, the default for them), any other dataset item by
item through a ``DataLoader``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lightning_proxy.datamodules.pool import PoolDataModule, PoolDataset
from lightning_proxy.datamodules.synthetic import load_synthetic
from lightning_proxy.datamodules.tensor_batches import BatchAugment, CentreView, TensorBatches
from lightning_proxy.selection.ranking import pool_fingerprint
from lightning_proxy.selection.subset import SubsetSpec


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


class ImagePoolDataModule(PoolDataModule):
    """An image pool: the base's arguments, and

    Args:
        flip_p: probability of a horizontal flip of a training image (a hyperparameter in the 000 paper).
        data_path: ``tensor``: batches indexed out of the pool tensor, augmented whole on the training
            device; ``items``: a ``DataLoader`` with a transform per image (``num_workers`` apply); ``auto``:
            ``tensor`` where the pool is held in memory as one tensor.
        synthetic: train on this synthetic set (a ``.npz`` from ``lightning-proxy distill``) instead of the
            pool; it must have been made on this pool. Validation stays on the real validation set.
    """

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
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p is a probability in [0, 1], got {flip_p}")
        if data_path not in ("auto", "tensor", "items"):
            raise ValueError(f"data_path must be 'auto', 'tensor' or 'items', got {data_path!r}")
        if synthetic is not None and subset != SubsetSpec():
            raise ValueError(
                f"data.synthetic {synthetic} is the whole training set: subset rules ({subset}) choose from a real "
                "pool; give one or the other"
            )
        super().__init__(root, batch_size, eval_batch_size, num_workers, subset, download, pin_memory)
        self.flip_p = flip_p
        self.data_path = data_path
        self.synthetic = synthetic
        self._score_pool: PoolDataset | None = None

    # --- what a concrete datamodule provides ---------------------------------------------------------
    def build_pool(self, split: str, transform: Callable | None = None) -> PoolDataset:
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

    # --- pools ------------------------------------------------------------------------------------------
    def load_pool(self, split: str) -> PoolDataset:
        """Training with the training transform (or the synthetic set), validation with the evaluation one."""
        if split != "train":
            return self.build_pool(split, self.eval_transform())
        if self.synthetic is not None:
            return self._synthetic_pool()
        return self.build_pool("train", self.train_transform())

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

    def item_dataset(self, split: str, augment: bool) -> PoolDataset:
        """The training pool without its augmentation unless ``augment`` (both share the loaded images)."""
        return self.score_pool if split == "train" and not augment else self.split_pool(split)

    # --- batches --------------------------------------------------------------------------------------
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

    def batches(self, split: str, indices: np.ndarray, batch_size: int, train: bool, augment: bool = False) -> Iterable:
        """The tensor path's :class:`TensorBatches` where the pool is one tensor, else the base's ``DataLoader``
        over items transformed one by one (augmented when ``train`` or ``augment``)."""
        if not self.uses_tensor_path:
            return super().batches(split, indices, batch_size, train, augment)
        images, targets = self.on_device(split, self.split_pool(split).images)
        rank, world_size = self.rank_and_world() if train else (0, 1)
        return TensorBatches(
            images,
            targets,
            torch.as_tensor(indices, dtype=torch.int64),
            batch_size,
            self.mean,
            self.std,
            shuffle=train,
            augment=self.augmentation() if train or augment else self.eval_view(),
            rank=rank,
            world_size=world_size,
            channels_last=images.device.type == "cuda",
        )
