"""CIFAR-10 and CIFAR-100 from the python pickle release, held in memory as one uint8 tensor."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_proxy.datamodules.download import download_and_verify, missing_dataset_error
from lightning_proxy.datamodules.images import ImagePoolDataModule, InMemoryImages
from lightning_proxy.datamodules.tensor_batches import BatchAugment


@dataclass(frozen=True)
class CIFARRelease:
    """Where one release keeps its files and under which pickle keys."""

    name: str
    num_classes: int
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    url: str
    md5: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)

    @property
    def layout(self) -> str:
        return f"<root>/{self.folder}/\n" + "".join(f"    {f}\n" for f in self.files)

    def how_to_get(self, root: str | Path) -> str:
        return (
            f"pass --data.download true, or download {self.url} (md5 {self.md5}) "
            f"and extract it into {Path(root).absolute()}"
        )


CIFAR10 = CIFARRelease(
    name="cifar10",
    num_classes=10,
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
CIFAR100 = CIFARRelease(
    name="cifar100",
    num_classes=100,
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)


def _load_pickle(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    """One pickle of the release as a dict holding ``keys``; a ValueError naming the file otherwise."""
    with open(path, "rb") as f:
        try:
            content = pickle.load(f, encoding="bytes")
        except Exception as error:
            raise ValueError(
                f"{path} is not a readable CIFAR pickle ({type(error).__name__}: {error}); the file is "
                "truncated or corrupt: delete it and download the release again"
            ) from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, expected the dict of the CIFAR release")
    missing = [key for key in keys if key not in content]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}; found {sorted(content)}")
    return content


class CIFARDataset(InMemoryImages):
    """One split (``train``: the training batches, ``val``: the test batch) as uint8 3x32x32 images."""

    def __init__(
        self, root: str | Path, split: str, transform: Callable | None = None, release: CIFARRelease = CIFAR10
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        folder = Path(root) / release.folder
        for path in (folder, *(folder / f for f in release.files)):
            if not path.exists():
                raise missing_dataset_error(release.name, path, release.layout, release.how_to_get(root))
        meta_path = folder / release.meta_file
        names = _load_pickle(meta_path, (release.names_key,))[release.names_key]
        if len(names) != release.num_classes:
            raise ValueError(f"{meta_path} names {len(names)} classes, {release.name} has {release.num_classes}")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        images, labels = [], []
        for name in release.train_files if split == "train" else release.test_files:
            path = folder / name
            batch = _load_pickle(path, (b"data", release.label_key))
            data, targets = np.asarray(batch[b"data"]), np.asarray(batch[release.label_key])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise ValueError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 N x 3072")
            if targets.shape != (len(data),):
                raise ValueError(f"{path}: {targets.shape} labels for {len(data)} images")
            if len(targets) and (targets.min() < 0 or targets.max() >= release.num_classes):
                raise ValueError(f"{path}: labels outside [0, {release.num_classes})")
            images.append(data)
            labels.append(targets)
        images = torch.from_numpy(np.concatenate(images).reshape(-1, 3, 32, 32))
        super().__init__(images, np.concatenate(labels), classes, transform)


class _CIFARDataModule(ImagePoolDataModule):
    """CIFAR with the augmentation of He et al. and SVP: 4-pixel padded random crop and horizontal flip.

    ``train`` is the 50,000 training images; ``val`` is the 10,000 test images (SVP evaluates on them).
    """

    release: CIFARRelease = CIFAR10
    image_size = 32

    def prepare_data(self) -> None:
        folder = Path(self.root) / self.release.folder
        if self.download and not all((folder / f).is_file() for f in self.release.files):
            download_and_verify(self.release.url, self.root, self.release.md5)

    def build_pool(self, split: str, transform: Callable | None) -> CIFARDataset:
        return CIFARDataset(self.root, split, transform, self.release)

    def augmentation(self) -> BatchAugment:
        return BatchAugment(pad=4, flip_p=self.flip_p)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 10 classes, 50,000 training and 10,000 test images of 3x32x32.

    Expects ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (the python release).
    """

    name = "cifar10"
    num_base_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    release = CIFAR10


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (fine labels): 100 classes, 50,000 training and 10,000 test images of 3x32x32.

    Expects ``<root>/cifar-100-python/{train,test,meta}`` (the python release).
    """

    name = "cifar100"
    num_base_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    release = CIFAR100
