"""Tiny datasets written in the real on-disk formats, so the readers are tested on what they will meet.

Every class gets its own colour (plus a little noise), so a test can check that an image carries its
label and a model can learn the classes.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _levels(num_classes: int) -> int:
    return max(2, math.ceil(num_classes ** (1 / 3)))


def class_colour(label: int, num_classes: int) -> np.ndarray:
    """A distinct RGB colour for each of ``num_classes`` classes (a grid over the colour cube)."""
    levels = _levels(num_classes)
    grid = np.linspace(30, 225, levels)
    return np.array([grid[label // levels**2 % levels], grid[label // levels % levels], grid[label % levels]])


def nearest_class(image: np.ndarray, num_classes: int) -> int:
    """The class whose colour is closest to the mean colour of an HxWx3 or 3xHxW uint8 image."""
    image = np.asarray(image, dtype=np.float64)
    mean = image.mean(axis=(1, 2)) if image.shape[0] == 3 else image.mean(axis=(0, 1))
    colours = np.stack([class_colour(c, num_classes) for c in range(num_classes)])
    return int(np.argmin(((colours - mean) ** 2).sum(axis=1)))


def _images(labels: np.ndarray, num_classes: int, height: int, width: int, rng: np.random.Generator):
    """N x H x W x 3 uint8 images in the colours of ``labels``."""
    spread = max(1, int(195 / (_levels(num_classes) - 1) / 4))
    colours = np.stack([class_colour(c, num_classes) for c in labels])[:, None, None, :]
    noise = rng.integers(-spread, spread + 1, size=(len(labels), height, width, 3))
    return np.clip(colours + noise, 0, 255).astype(np.uint8)


def write_cifar(
    root: str | Path, num_classes: int = 10, train_per_class: int = 6, test_per_class: int = 2, seed: int = 0
) -> Path:
    """Write a CIFAR-10 or CIFAR-100 python release (real file names and pickle keys) under ``root``.

    Returns the release folder (``cifar-10-batches-py`` or ``cifar-100-python``). Examples are shuffled;
    CIFAR-10's training examples are spread over the five data batches.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"CIFAR has 10 or 100 classes, not {num_classes}")
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
        images = _images(labels, num_classes, 32, 32, rng)
        return images.transpose(0, 3, 1, 2).reshape(len(labels), 3072), labels

    def dump(path: Path, content: dict) -> None:
        with open(path, "wb") as f:
            pickle.dump(content, f, protocol=2)

    def batch(name: str, data: np.ndarray, labels: np.ndarray) -> dict:
        files = [f"img_{i:05d}.png".encode() for i in range(len(labels))]
        return {b"batch_label": name.encode(), b"data": data, b"filenames": files}

    train, test = split(train_per_class), split(test_per_class)
    if num_classes == 10:
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(np.array_split(np.arange(len(train[1])), 5), start=1):
            content = batch(f"training batch {i} of 5", train[0][part], train[1][part])
            dump(folder / f"data_batch_{i}", content | {b"labels": train[1][part].tolist()})
        dump(folder / "test_batch", batch("testing batch 1 of 1", *test) | {b"labels": test[1].tolist()})
        meta = {b"num_cases_per_batch": len(train[1]) // 5, b"num_vis": 3072}
        dump(folder / "batches.meta", meta | {b"label_names": [n.encode() for n in CIFAR10_NAMES]})
    else:
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, (data, labels) in (("train", train), ("test", test)):
            both = {b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()}
            dump(folder / name, batch(name, data, labels) | both)
        names = {b"fine_label_names": [f"class_{c:02d}".encode() for c in range(100)]}
        dump(folder / "meta", names | {b"coarse_label_names": [f"super_{c:02d}".encode() for c in range(20)]})
    return folder


def write_image_folders(
    root: str | Path,
    classes: list[str],
    per_class: dict[str, int],
    size: tuple[int, int] = (20, 24),
    seed: int = 0,
) -> Path:
    """Write ``<root>/<split>/<class>/<class>_<i>.<ext>`` images of ``size`` (height, width); returns root.

    Class ``classes[k]`` has colour ``class_colour(k, len(classes))``. Files cycle through ``.JPEG``,
    ``.jpg`` and ``.png`` (real JPEG and PNG encodings), as the readers must accept all three.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in per_class.items():
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = _images(np.full(count, k), len(classes), *size, rng)
            for i, image in enumerate(images):
                ext = (".JPEG", ".jpg", ".png")[i % 3]
                Image.fromarray(image).save(folder / f"{name}_{i}{ext}", quality=95)
    return root
