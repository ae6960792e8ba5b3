"""Datamodules: a full training pool with indexed items, subset rules and loaders, per dataset."""

from lightning_proxy.datamodules.base import IndexedDataset, PoolDataModule
from lightning_proxy.datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_proxy.datamodules.digits import DigitsDataModule
from lightning_proxy.datamodules.imagefolder import (
    ImageNetDataModule,
    ImagenetteDataModule,
    ImagewoofDataModule,
)
from lightning_proxy.datamodules.text import AmazonReviewsDataModule
from lightning_proxy.selection.subset import SubsetSpec

__all__ = [
    "AmazonReviewsDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "ImageNetDataModule",
    "ImagenetteDataModule",
    "ImagewoofDataModule",
    "IndexedDataset",
    "PoolDataModule",
    "SubsetSpec",
]
