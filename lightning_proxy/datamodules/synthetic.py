"""The synthetic-set file: images, labels and how they were made, readable with numpy alone.

A ``.npz`` with ``images`` (float32 ``M x C x H x W`` in the pool's pixel units, ``[0, 1]`` for the 0-255
range, not clamped: distilled pixels may leave it), ``labels`` (int64) and a JSON ``metadata`` string:
the method, ``ipc``, iterations, seed, the source pool's dataset name, size and fingerprint, its class
names and the image shape. A datamodule refuses a set made on another pool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_proxy.files import read_npz, write_npz

REQUIRED = ("method", "ipc", "dataset", "source_fingerprint", "source_size", "classes")


@dataclass
class SyntheticSet:
    """``ipc`` synthetic images per class of a source pool, and the metadata that names that pool."""

    images: np.ndarray
    labels: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def check_source(self, dataset: str, fingerprint: str, size: int, image_shape: tuple[int, ...], where: str) -> None:
        """Refuse a set made on another pool than ``where``'s (its name, fingerprint, size and image shape)."""
        made = self.metadata
        mine = (made.get("dataset"), made.get("source_fingerprint"), made.get("source_size"))
        if mine != (dataset, fingerprint, size):
            raise ValueError(
                f"{where}: the synthetic set was made on {mine[0]} (pool of {mine[2]}, fingerprint {mine[1]}), "
                f"not on this {dataset} pool (pool of {size}, fingerprint {fingerprint}): distill it from this pool"
            )
        if tuple(self.images.shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"{where}: the synthetic images are {tuple(self.images.shape[1:])}, this pool's "
                f"{tuple(image_shape)}: distill it at this pool's image size"
            )


def synthetic_problems(images: np.ndarray, labels: np.ndarray, metadata: dict[str, Any]) -> list[str]:
    """What makes arrays and metadata not a synthetic set (empty: they are one)."""
    problems = []
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        problems.append(f"images must be float M x C x H x W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        problems.append(f"labels must be one per image, got {labels.shape} for {len(images)} images")
    elif len(labels) and not np.issubdtype(labels.dtype, np.integer):
        problems.append(f"labels must be integers, got {labels.dtype}")
    missing = [key for key in REQUIRED if key not in metadata]
    if missing:
        problems.append(f"metadata lacks {missing}")
    elif len(labels) and not 0 <= labels.min() <= labels.max() < len(metadata["classes"]):
        problems.append(f"labels must lie in [0, {len(metadata['classes'])}), got {labels.min()}..{labels.max()}")
    if images.ndim == 4 and not np.isfinite(images).all():
        problems.append("images hold NaN or infinite pixels")
    return problems


def save_synthetic(path: str | os.PathLike, synthetic: SyntheticSet) -> Path:
    """Write atomically; what :func:`load_synthetic` would refuse is refused first."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"synthetic sets are .npz files, got {path}")
    images, labels = np.asarray(synthetic.images), np.asarray(synthetic.labels)
    problems = synthetic_problems(images, labels, synthetic.metadata)
    if problems:
        raise ValueError(f"cannot save {path} as a synthetic set: " + "; ".join(problems))
    metadata = {"format": 1, "kind": "synthetic", **synthetic.metadata}
    return write_npz(path, metadata, images=images.astype(np.float32), labels=labels.astype(np.int64))


def load_synthetic(path: str | os.PathLike) -> SyntheticSet:
    """Read and validate a synthetic set; a malformed or truncated file raises a ``ValueError`` naming it."""
    path = Path(path)
    arrays, metadata = read_npz(path, ("images", "labels"), "synthetic set", "lightning-proxy distill writes one")
    images, labels = arrays["images"], arrays["labels"]
    problems = synthetic_problems(images, labels, metadata)
    if problems:
        raise ValueError(f"{path} is not a valid synthetic set: " + "; ".join(problems))
    return SyntheticSet(images.astype(np.float32), labels.astype(np.int64), metadata)
