"""Scikit-learn's bundled handwritten digits: real 8x8 images with no download, the embedded default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lightning_proxy.datamodules.images import ImagePoolDataModule, InMemoryImages
from lightning_proxy.datamodules.tensor_batches import BatchAugment


class DigitsDataset(InMemoryImages):
    """One split of the 1,797 digits as uint8 1x8x8 tensors (the 0-16 grey levels scaled to 0-255)."""

    def __init__(self, split: str, transform: Callable | None = None, val_fraction: float = 0.2) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        digits = load_digits()
        images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
        train_idx, val_idx = train_test_split(
            np.arange(len(images)), test_size=val_fraction, random_state=0, stratify=digits.target
        )
        idx = np.sort(train_idx if split == "train" else val_idx)
        classes = [str(d) for d in range(10)]
        super().__init__(torch.from_numpy(images[idx]).unsqueeze(1), digits.target[idx], classes, transform)


class DigitsDataModule(ImagePoolDataModule):
    """Digits: 1,437 training and 360 validation images (a fixed stratified split), 10 classes, 1x8x8.

    Augmentation is a one-pixel random shift; flips are off by default (a flipped digit is another glyph).
    """

    name = "digits"
    num_base_classes = 10
    in_channels = 1
    mean = (0.305,)
    std = (0.378,)
    image_size = 8

    def __init__(
        self, batch_size: int = 64, num_workers: int = 0, flip_p: float = 0.0, val_fraction: float = 0.2, **kwargs: Any
    ) -> None:
        """
        Args:
            val_fraction: share of the 1,797 digits held out for validation (a fixed stratified split).
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, flip_p=flip_p, **kwargs)
        self.val_fraction = val_fraction

    def build_pool(self, split: str, transform: Callable | None) -> DigitsDataset:
        return DigitsDataset(split, transform, self.val_fraction)

    def augmentation(self) -> BatchAugment:
        return BatchAugment(pad=1, flip_p=self.flip_p)
