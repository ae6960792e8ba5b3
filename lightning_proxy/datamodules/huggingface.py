"""Hugging Face ``datasets`` as pools: a ``DatasetDict`` folder written by ``save_to_disk``, or a loaded
``Dataset``/``DatasetDict`` from Python.

An image column is decoded once into one uint8 tensor (the tensor path of the bundled pools: batches indexed
out of it, augmented whole), normalised by the training split's own channel means; a text column is
tokenised once into a memory-mapped cache beside the folder, for fastText (hashed word n-grams) or VDCNN
(characters), as the Amazon pools are. Labels come from the label column; a ``ClassLabel``'s names become
the class names. Pool indices, subsets, rankings with the pool's fingerprint, DDP shards and every callback
work as on the bundled data.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lightning_proxy.datamodules.images import ImagePoolDataModule, InMemoryImages
from lightning_proxy.datamodules.pool import PoolDataset
from lightning_proxy.datamodules.tensor_batches import BatchAugment
from lightning_proxy.datamodules.text import (
    Reviews,
    TextBatches,
    TokenCache,
    check_text_options,
    encoder_of,
    text_batches,
    token_ids,
)


def open_splits(path: str | None, dataset: Any, where: str) -> Mapping[str, Any]:
    """Split name -> ``datasets.Dataset``, from ``path`` (``save_to_disk``'s folder) or ``dataset``."""
    try:
        import datasets
    except ImportError:
        raise ModuleNotFoundError(
            'HuggingFaceDataModule reads the datasets package, which is not installed: pip install -e ".[hf]"',
            name="datasets",
        ) from None
    if (path is None) == (dataset is None):
        raise ValueError(f"{where}: give either data.path (a save_to_disk folder) or dataset (from Python)")
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"{where}: {path} does not exist; give the folder DatasetDict.save_to_disk wrote")
        dataset = datasets.load_from_disk(path)
    if isinstance(dataset, datasets.Dataset):
        return {"train": dataset}
    if isinstance(dataset, Mapping):
        return dataset
    raise TypeError(f"{where}: expected a datasets Dataset or DatasetDict, got {type(dataset).__name__}")


class HuggingFaceDataModule(ImagePoolDataModule):
    """A ``datasets`` pool of images or texts with integer labels.

    Args:
        path: the folder ``DatasetDict.save_to_disk`` wrote (or give ``dataset``).
        dataset: a loaded ``Dataset`` or ``DatasetDict`` (from Python).
        train_split, val_split: the splits to train and validate on.
        label_column: integer labels ``0..k-1`` (a ``ClassLabel`` names its classes).
        image_column: the images (any PIL mode: grey stays one channel, the rest become RGB).
        text_column: read this text column instead of images (then ``encoding`` and the rest apply).
        image_size: resize every image to this square side; needed where the images' sizes differ.
        pad: training crops after zero padding by this many pixels (0: none).
        encoding, ngrams, buckets, char_length, lowercase: the text's tokens, as for the Amazon pools.
    """

    name = "huggingface"

    def __init__(
        self,
        path: str | None = None,
        dataset: Any = None,
        train_split: str = "train",
        val_split: str = "test",
        label_column: str = "label",
        image_column: str = "image",
        text_column: str | None = None,
        image_size: int | None = None,
        pad: int = 0,
        flip_p: float = 0.0,
        encoding: Literal["words", "chars"] = "words",
        ngrams: int = 2,
        buckets: int = 10_000_000,
        char_length: int = 1014,
        lowercase: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> None:
        check_text_options(encoding, ngrams, buckets, char_length)
        super().__init__(batch_size=batch_size, num_workers=num_workers, flip_p=flip_p, **kwargs)
        where = f"HuggingFaceDataModule({path or type(dataset).__name__})"
        self.path, self.where = path, where
        self.splits_by_role = {"train": train_split, "val": val_split}
        self.label_column, self.image_column, self.text_column = label_column, image_column, text_column
        self.resize, self.pad = image_size, pad
        self.encoding, self.ngrams, self.buckets = encoding, ngrams, buckets
        self.char_length, self.lowercase = char_length, lowercase
        self._decoded: dict[str, torch.Tensor] = {}
        self._splits = open_splits(path, dataset, where)
        missing = [s for s in (train_split, val_split) if s not in self._splits]
        if missing:
            raise ValueError(
                f"{where}: no split {missing[0]!r}; it has {sorted(self._splits)} (train_split, val_split)"
            )
        columns = self._splits[train_split].column_names
        wanted = [label_column, text_column if text_column is not None else image_column]
        if bad := [c for c in wanted if c not in columns]:
            option = "label_column" if bad[0] == label_column else "text_column" if text_column else "image_column"
            raise ValueError(f"{where}: no column {bad[0]!r}; the columns are {columns} ({option})")
        self.class_names = self._class_names()
        self.num_base_classes = len(self.class_names)
        if text_column is not None:
            self.in_channels = token_ids(encoding, buckets)
        else:
            self.in_channels = 1 if self._splits[train_split][0][image_column].mode in ("L", "1", "I;16") else 3
        self.mean, self.std = (0.5,) * self.in_channels, (0.25,) * self.in_channels  # until the pool is read

    def _class_names(self) -> list[str]:
        feature = self._splits[self.splits_by_role["train"]].features[self.label_column]
        if getattr(feature, "names", None):
            return list(feature.names)
        labels = np.asarray(self._splits[self.splits_by_role["train"]][self.label_column])
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(f"{self.where}: the {self.label_column!r} column must hold integers 0..k-1")
        return [str(c) for c in range(int(labels.max()) + 1)]

    def _labels(self, dataset: Any) -> np.ndarray:
        labels = np.asarray(dataset[self.label_column], dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_base_classes):
            raise ValueError(f"{self.where}: labels outside 0..{self.num_base_classes - 1} in {self.label_column!r}")
        return labels

    # --- images ---------------------------------------------------------------------------------------
    def _images(self, split: str) -> torch.Tensor:
        """The split's images as one uint8 ``N x C x H x W`` tensor, decoded once."""
        from PIL import Image

        column = self._splits[self.splits_by_role[split]][self.image_column]
        mode = "L" if self.in_channels == 1 else "RGB"
        arrays, size = [], None
        for i, image in enumerate(column):
            image = image.convert(mode)
            if self.resize:
                image = image.resize((self.resize, self.resize), Image.BILINEAR)
            elif size is not None and image.size != size:
                raise ValueError(
                    f"{self.where}: image {i} of {self.splits_by_role[split]} is {image.size[0]}x{image.size[1]} "
                    f"and the first {size[0]}x{size[1]}: give data.image_size to resize them all to one square"
                )
            size = image.size
            arrays.append(np.asarray(image, dtype=np.uint8).reshape(image.size[1], image.size[0], -1))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _decoded_split(self, split: str) -> torch.Tensor:
        if split not in self._decoded:
            self._decoded[split] = self._images(split)
        return self._decoded[split]

    def build_pool(self, split: str, transform: Callable | None = None) -> PoolDataset:
        if self.text_column is not None:
            cache = self._token_cache(split)
            encode = encoder_of(cache, self.encoding, self.ngrams, self.buckets, self.char_length)
            return Reviews(cache, encode, list(self.class_names))
        labels = self._labels(self._splits[self.splits_by_role[split]])
        return InMemoryImages(self._decoded_split(split), labels, list(self.class_names), transform)

    def load_pool(self, split: str) -> PoolDataset:
        """Images normalised by the training split's channel means and deviations (read first); text as is."""
        if self.text_column is not None:
            return self.build_pool(split)
        train = self._decoded_split("train")
        pixels = train.transpose(0, 1).reshape(train.shape[1], -1).double() / 255
        self.mean = tuple(pixels.mean(1).tolist())
        self.std = tuple(max(v, 1e-3) for v in pixels.std(1).tolist())
        self.image_size = int(train.shape[-1])
        return super().load_pool(split)

    def augmentation(self) -> BatchAugment:
        return BatchAugment(pad=self.pad, flip_p=self.flip_p)

    # --- text -----------------------------------------------------------------------------------------
    def _token_cache(self, split: str) -> TokenCache:
        """The split's tokens, cached beside the saved folder (keyed by its files and these settings) or, for a
        dataset given from Python without files, in a temporary folder of this process."""
        dataset = self._splits[self.splits_by_role[split]]
        files = [
            {"name": Path(f["filename"]).name, "size": Path(f["filename"]).stat().st_size} for f in dataset.cache_files
        ]
        settings = {
            **TokenCache.settings_of(self.lowercase, self.char_length),
            "source": {"split": self.splits_by_role[split], "text": self.text_column, "label": self.label_column},
            "files": files,
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        if self.path is not None and files:
            parent = Path(self.path) / ".token_cache"
        else:
            parent = Path(tempfile.gettempdir()) / "lightning_proxy_token_cache"
            if not files:  # nothing on disk names the data: a folder of this process
                key = f"{key}-{id(dataset)}"
        return TokenCache.at(
            parent / f"{split}-{key}", settings, lambda: self._rows(dataset), self.lowercase, self.char_length
        )

    def _rows(self, dataset: Any) -> Iterator[tuple[int, str]]:
        for label, text in zip(self._labels(dataset), dataset[self.text_column], strict=True):
            yield int(label), str(text)

    def prepare_data(self) -> None:
        """Builds the token caches once per node before the ranks read them."""
        if self.text_column is not None:
            for split in ("train", "val"):
                self._token_cache(split)

    def item_dataset(self, split: str, augment: bool) -> PoolDataset:
        return self.split_pool(split) if self.text_column is not None else super().item_dataset(split, augment)

    def batches(
        self, split: str, indices: np.ndarray, batch_size: int, train: bool, augment: bool = False
    ) -> TextBatches | Iterable:
        if self.text_column is None:
            return super().batches(split, indices, batch_size, train, augment)
        return text_batches(self, split, indices, batch_size, train)
