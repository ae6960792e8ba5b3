"""Any pool held in memory as tensors: inputs of any shape and dtype (signals, features, embeddings, token
ids) with integer labels, and MNIST-1D (Greydanus 2020) generated offline on it.

A batch is one indexing of the pool tensor, with no per-item collate: the same ``(inputs, targets,
pool_indices)`` batches, shuffle and rank shards as the image tensor path, so every callback, subset rule
and scoring pass works unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from lightning_proxy.datamodules.pool import PoolDataModule
from lightning_proxy.datamodules.sharding import ShardedBatches, ShardedShuffle


class TensorPool:
    """A split as one tensor of inputs and their labels: items ``(inputs[i], targets[i])``."""

    def __init__(self, inputs: Any, targets: Any, classes: Sequence[str] | None = None, where: str = "pool") -> None:
        inputs = torch.as_tensor(inputs)
        targets = np.asarray(targets)
        if len(inputs) != len(targets) or targets.ndim != 1:
            raise ValueError(
                f"{where}: {len(inputs)} inputs but labels of shape {targets.shape}; give one integer label per input"
            )
        if not np.issubdtype(targets.dtype, np.integer) or (len(targets) and targets.min() < 0):
            raise ValueError(f"{where}: labels must be integers 0..k-1, got {targets.dtype} from {targets.min()}")
        self.inputs = inputs
        self.targets = targets.astype(np.int64)
        k = int(targets.max()) + 1 if len(targets) else 0
        self.classes = list(classes) if classes is not None else [str(c) for c in range(k)]
        if k > len(self.classes):
            raise ValueError(f"{where}: label {k - 1} but only {len(self.classes)} class names")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.inputs[i], int(self.targets[i])


class PoolBatches(ShardedBatches):
    """``(inputs, targets, pool_indices)`` batches of ``inputs[indices]`` in a :class:`ShardedShuffle` order."""

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        indices: Any,
        batch_size: int,
        shuffle: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.inputs, self.targets = inputs, targets
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.batch_size = batch_size
        self.sampler = ShardedShuffle(len(self.indices), shuffle, rank, world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        positions = self.indices[self.sampler.order()].to(self.inputs.device)
        for start in range(0, len(positions), self.batch_size):
            index = positions[start : start + self.batch_size]
            yield torch.index_select(self.inputs, 0, index), self.targets[index], index


class TensorPoolDataModule(PoolDataModule):
    """A pool of your own tensors: ``train`` and ``val`` as ``(inputs, labels)``, any input shape and dtype.

    From Python: ``TensorPoolDataModule(train=(x, y), val=(x_val, y_val), classes=[...])``. A subclass
    builds its splits in :meth:`arrays` instead (MNIST-1D). ``in_channels`` (what the model is built for) is
    the size of the inputs' first dimension after the batch (a signal's channels, a feature vector's width).

    Args:
        train, val: ``(inputs, labels)`` of each split; labels are integers ``0..k-1``.
        classes: class names (default ``"0"``..``"k-1"``).
    """

    name = "tensors"

    def __init__(
        self,
        train: tuple[Any, Any] | None = None,
        val: tuple[Any, Any] | None = None,
        classes: Sequence[str] | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, **kwargs)
        self._given = {"train": train, "val": val}
        self._classes = None if classes is None else list(classes)
        if train is not None:
            pool = TensorPool(*train, classes=classes, where=f"{type(self).__name__}(train=...)")
            self.num_base_classes = len(pool.classes)
            self.in_channels = int(pool.inputs.shape[1]) if pool.inputs.ndim > 1 else 1
            self._train_pool = pool

    def arrays(self, split: str) -> tuple[Any, Any]:
        """``(inputs, labels)`` of the ``train`` or ``val`` split."""
        given = self._given[split]
        if given is None:
            raise ValueError(f"{type(self).__name__} has no {split!r} split: pass {split}=(inputs, labels)")
        return given

    def build_pool(self, split: str) -> TensorPool:
        return TensorPool(*self.arrays(split), classes=self._classes, where=f"{self.name} {split} split")

    def batches(
        self, split: str, indices: np.ndarray, batch_size: int, train: bool, augment: bool = False
    ) -> PoolBatches:
        """Batches indexed out of the split's tensor on the training device (moved there once)."""
        inputs, targets = self.on_device(split, self.split_pool(split).inputs)
        rank, world_size = self.rank_and_world() if train else (0, 1)
        return PoolBatches(inputs, targets, indices, batch_size, shuffle=train, rank=rank, world_size=world_size)


class MNIST1DDataModule(TensorPoolDataModule):
    """MNIST-1D: ten digit templates as 1-D signals of length 40, shifted, scaled, sheared and noised, so a
    linear model gets about 32 % right and a small CNN about 94 %; 4,000 training and 1,000 validation
    signals (``1 x 40`` float32), generated by the ``mnist1d`` package offline in about a second (its
    default settings and seed, as the published set).

    Args:
        num_samples: signals in all (80 % train, 20 % validation).
        seed: the generator's seed (42: the published set's).
    """

    name = "mnist1d"
    num_base_classes = 10
    in_channels = 1

    def __init__(self, num_samples: int = 5000, seed: int = 42, batch_size: int = 128, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if num_samples < 20:
            raise ValueError(f"num_samples must be at least 20 (two per class in each split), got {num_samples}")
        self.num_samples, self.seed = num_samples, seed
        self._generated: dict[str, np.ndarray] | None = None

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if self._generated is None:
            try:
                from mnist1d.data import get_dataset_args, make_dataset
            except ImportError:
                raise ModuleNotFoundError(
                    "MNIST1DDataModule generates its signals with the mnist1d package, which is not installed: "
                    'pip install -e ".[mnist1d]" (or pip install mnist1d)',
                    name="mnist1d",
                ) from None

            args = get_dataset_args()
            args.num_samples, args.seed = self.num_samples, self.seed
            states = random.getstate(), np.random.get_state()  # the package seeds both globally
            try:
                self._generated = make_dataset(args)
            finally:
                random.setstate(states[0])
                np.random.set_state(states[1])
        x, y = ("x", "y") if split == "train" else ("x_test", "y_test")
        inputs = np.asarray(self._generated[x], dtype=np.float32)[:, None, :]
        return inputs, np.asarray(self._generated[y], dtype=np.int64)
