"""A folder dataset decoded once into one memory-mapped uint8 tensor, so the tensor data path can serve it.

Decoding JPEGs costs about as much per image as the whole training augmentation; a proxy trained for many
epochs, or many proxies on the same pool, should pay it once. Each image's shorter side is resized to
``size`` and its centre ``size`` square kept (torchvision's ``Resize`` then ``CenterCrop``), and the pool
is written as one ``N x 3 x size x size`` ``.npy`` file, atomically. The file name carries the dataset
folder (the release), the split, the size and a hash of the file list and labels, so a different release,
resolution or folder content gets its own file and a stale one is never read.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from lightning_proxy.files import write_atomically


def cache_path(folder: Path, name: str, size: int, files: np.ndarray, targets: np.ndarray) -> Path:
    """Where the ``size``-pixel decoding of ``files`` (labelled ``targets``) lives in ``folder``."""
    digest = hashlib.sha256(np.ascontiguousarray(files).tobytes() + np.asarray(targets, np.int64).tobytes())
    return folder / f"{name}-{size}px-{digest.hexdigest()[:16]}.npy"


def decoded_images(dataset: Dataset, path: Path, size: int, num_workers: int = 0, label: str = "") -> torch.Tensor:
    """The images of ``dataset`` (uint8 CxHxW items from its own reader, a ``transform`` attribute) as one
    ``N x 3 x size x size`` tensor.

    Built into ``path`` on first use, with a progress bar (``label`` names the pool), by ``num_workers``
    loader processes; later calls map the file (copy-on-write: pages are read as they are used, and nothing
    is written back).
    """
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"cannot create the decoded-image cache folder {path.parent} ({error.strerror}): pass "
                "--data.cache_dir with a writable folder, or --data.data_path items to decode every epoch"
            ) from error
        write_atomically(path, lambda tmp: _decode_into(tmp, dataset, size, num_workers, label or path.stem))
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def _decode_into(tmp: str, dataset: Dataset, size: int, num_workers: int, label: str) -> None:
    dataset = copy.copy(dataset)
    dataset.transform = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), 3, size, size))
    start = 0
    with tqdm(total=len(dataset), desc=f"Decoding {label} at {size} px", unit="img") as bar:
        for images, _ in DataLoader(dataset, batch_size=64, num_workers=num_workers):
            out[start : start + len(images)] = images.numpy()
            start += len(images)
            bar.update(len(images))
    out.flush()
    del out
