"""Datamodules: a full training pool with indexed items, subset rules and an epoch's batches, per dataset.

:mod:`~lightning_proxy.datamodules.pool` is the base of any pool; images and text are thin layers on it.
"""

from lightning_proxy.datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_proxy.datamodules.digits import DigitsDataModule
from lightning_proxy.datamodules.huggingface import HuggingFaceDataModule
from lightning_proxy.datamodules.imagefolder import (
    ImageNetDataModule,
    ImagenetteDataModule,
    ImagewoofDataModule,
)
from lightning_proxy.datamodules.images import ImagePoolDataModule, InMemoryImages
from lightning_proxy.datamodules.pool import IndexedDataset, PoolDataModule, PoolDataset
from lightning_proxy.datamodules.tensors import MNIST1DDataModule, TensorPool, TensorPoolDataModule
from lightning_proxy.datamodules.text import AmazonReviewsDataModule
from lightning_proxy.selection.subset import SubsetSpec

__all__ = [
    "AmazonReviewsDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "HuggingFaceDataModule",
    "ImageNetDataModule",
    "ImagePoolDataModule",
    "ImagenetteDataModule",
    "ImagewoofDataModule",
    "InMemoryImages",
    "IndexedDataset",
    "MNIST1DDataModule",
    "PoolDataModule",
    "PoolDataset",
    "SubsetSpec",
    "TensorPool",
    "TensorPoolDataModule",
]
