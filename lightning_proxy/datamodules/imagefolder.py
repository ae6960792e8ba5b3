"""Image-folder datasets: Imagenette and Imagewoof (fastai releases) and ImageNet (ILSVRC2012 folders)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from lightning_proxy.datamodules.decoded import cache_path, decoded_images
from lightning_proxy.datamodules.download import download_and_verify, missing_dataset_error
from lightning_proxy.datamodules.images import ImagePoolDataModule, InMemoryImages
from lightning_proxy.datamodules.tensor_batches import BatchAugment, CentreView

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

IMAGENETTE_CLASSES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888605": "parachute",
}
IMAGEWOOF_CLASSES = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}


def class_folders(split_dir: str | Path) -> list[str]:
    """The class folder names of a split in sorted order (hidden folders skipped)."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


class ImageFolderDataset(Dataset):
    """``<root>/<split>/<class folder>/<image>`` as uint8 RGB CxHxW images, labels by sorted folder name.

    Files are sorted within each class so the pool order (which ranking files refer to) is the same on
    every machine. Paths are kept in one numpy bytes array, not a list of Python strings, so loader
    workers do not copy them page by page as reference counts change. Files are read in Python so that a
    missing file raises ``FileNotFoundError`` and only undecodable bytes are reported as corrupt.

    Args:
        root: folder holding the split folders.
        split: split folder name (``train`` or ``val``).
        transform: applied to each uint8 image.
        class_names: readable name of each class folder (wnid); folders without one keep their name.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable | None = None,
        class_names: Mapping[str, str] | None = None,
    ) -> None:
        self.split_dir = Path(root) / split
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"{self.split_dir.absolute()} is not a folder of class folders")
        self.wnids = class_folders(self.split_dir)
        files: list[str] = []
        targets: list[int] = []
        for label, wnid in enumerate(self.wnids):
            with os.scandir(self.split_dir / wnid) as entries:
                names = sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
            if not names:
                raise FileNotFoundError(
                    f"class folder {(self.split_dir / wnid).absolute()} holds no image ({', '.join(IMAGE_EXTENSIONS)})"
                )
            files += [f"{wnid}/{name}" for name in names]
            targets += [label] * len(names)
        self.files = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = [(class_names or {}).get(wnid, wnid) for wnid in self.wnids]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def path(self, i: int) -> str:
        return os.path.join(self.split_dir, os.fsdecode(self.files[i]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.path(i)
        data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        try:
            image = decode_image(data, mode=ImageReadMode.RGB)
        except RuntimeError as error:
            raise ValueError(
                f"could not decode image {path} ({error}); the file is corrupt: download the dataset "
                "again, or remove this file (which changes the pool order and so invalidates rankings)"
            ) from error
        return (self.transform(image) if self.transform else image), int(self.targets[i])


class _ImageFolderDataModule(ImagePoolDataModule):
    """Shared folder reading, class checks, the random-resized-crop recipe and the decoded cache.

    Training: ``RandomResizedCrop(image_size, scale=crop_scale)`` and a flip; evaluation: resize the short
    side to ``image_size * resize_ratio`` and take the centre ``image_size`` square.

    On the tensor data path (the default where ``decodes_once``) each split is decoded once into a
    memory-mapped uint8 file (:mod:`~lightning_proxy.datamodules.decoded`): the shorter side resized to
    ``cache_size`` and the centre square kept, so random resized crops come from that square (on 4:3
    photos the per-item path also sees the outer eighths of the longer side). Evaluation resizes the square
    to ``image_size * resize_ratio`` and keeps the centre ``image_size``, as the per-item path does.

    Args:
        image_size: side of the square training and evaluation crops.
        cache_size: side of the decoded squares (default: the larger of 160 and the evaluation resize).
        cache_dir: folder of the decoded files (default: ``decoded`` inside the dataset folder).
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    resize_ratio: float = 1.0
    class_names: Mapping[str, str] | None = None
    decodes_once: bool = True  # whether ``data_path auto`` decodes the pool once (it fits in memory)

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 8,
        image_size: int = 128,
        cache_size: int | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, **kwargs)
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        if cache_size is not None and cache_size < 1:
            raise ValueError(f"cache_size must be a positive number of pixels, got {cache_size}")
        self.image_size = image_size
        self.cache_size = cache_size or max(160, round(image_size * self.resize_ratio))
        self.cache_dir = cache_dir

    @property
    def data_dir(self) -> Path:
        """The folder holding ``train`` and ``val``."""
        return Path(self.root)

    @property
    def caches_decoded(self) -> bool:
        """Whether splits are read from the decoded cache (the tensor path) rather than file by file."""
        return self.data_path == "tensor" or (self.data_path == "auto" and self.decodes_once)

    def layout(self) -> str:
        """The expected folder tree, for error messages."""
        raise NotImplementedError

    def how_to_get(self) -> str:
        """Where and how to get the dataset, for error messages."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Decode both splits once (Lightning calls this on one process per node, before the others read)."""
        if self.caches_decoded:
            for split in ("train", "val"):
                self.build_pool(split, None)

    def build_pool(self, split: str, transform: Callable | None) -> ImageFolderDataset | InMemoryImages:
        split_dir = self.data_dir / split
        if not split_dir.is_dir():
            raise missing_dataset_error(self.name, split_dir, self.layout(), self.how_to_get())
        dataset = ImageFolderDataset(self.data_dir, split, transform, self.class_names)
        self._check_classes(split, dataset.wnids)
        if not self.caches_decoded:
            return dataset
        folder = Path(self.cache_dir) if self.cache_dir else self.data_dir / "decoded"
        path = cache_path(folder, f"{self.data_dir.name}-{split}", self.cache_size, dataset.files, dataset.targets)
        label = f"{self.name} {split} ({self.data_dir.name})"
        images = decoded_images(dataset, path, self.cache_size, self.num_workers, label)
        return InMemoryImages(images, dataset.targets, dataset.classes, transform)

    def _check_classes(self, split: str, wnids: list[str]) -> None:
        """Refuse a split whose class folders are not the dataset's: labels would silently shift."""
        split_dir = self.data_dir / split
        if len(wnids) != self.num_base_classes:
            raise ValueError(
                f"{split_dir.absolute()} holds {len(wnids)} class folders; {self.name} has "
                f"{self.num_base_classes}. Expected layout:\n{self.layout()}"
            )
        expected = sorted(self.class_names) if self.class_names else None
        if expected is None and split != "train" and (self.data_dir / "train").is_dir():
            expected = class_folders(self.data_dir / "train")
        if expected is not None and wnids != expected:
            missing, extra = sorted(set(expected) - set(wnids)), sorted(set(wnids) - set(expected))
            raise ValueError(
                f"the class folders of {split_dir.absolute()} differ from {self.name}'s"
                f"{'' if self.class_names else ' (those of train)'}: missing {missing[:10]}, "
                f"unexpected {extra[:10]}"
            )

    def augmentation(self) -> BatchAugment:
        return BatchAugment(flip_p=self.flip_p, resized_crop=self.image_size, scale=self.crop_scale)

    def eval_view(self) -> CentreView:
        return CentreView(self.image_size, round(self.image_size * self.resize_ratio))

    def eval_transform(self) -> Callable:
        return v2.Compose(
            [
                v2.Resize(round(self.image_size * self.resize_ratio), antialias=True),
                v2.CenterCrop(self.image_size),
                *self._to_float(),
            ]
        )


class ImagenetteDataModule(_ImageFolderDataModule):
    """Imagenette (fastai's imagenette2): 10 easy ImageNet classes, ~9,500 training and 3,925 val images.

    The recipe of the fastai leaderboard (and the 000 paper): 128-pixel random resized crops with scale
    (0.35, 1), flips, batch size 64. ``release_size`` picks the release (shortest side 160 or 320 pixels,
    or full size), i.e. the folder ``<root>/imagenette2-160``, ``imagenette2-320`` or ``imagenette2``.

    Args:
        image_size: side of the square training and evaluation crops.
        release_size: which fastai release to read (and download).
    """

    name = "imagenette"
    num_base_classes = 10
    archive = "imagenette2"
    class_names = IMAGENETTE_CLASSES

    def __init__(self, release_size: Literal["160", "320", "full"] = "160", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if release_size not in ("160", "320", "full"):
            raise ValueError(f"release_size must be '160', '320' or 'full', got {release_size!r}")
        self.release_size = release_size

    @property
    def folder(self) -> str:
        return self.archive if self.release_size == "full" else f"{self.archive}-{self.release_size}"

    @property
    def data_dir(self) -> Path:
        return Path(self.root) / self.folder

    @property
    def url(self) -> str:
        return f"https://s3.amazonaws.com/fast-ai-imageclas/{self.folder}.tgz"

    def layout(self) -> str:
        return (
            f"<root>/{self.folder}/\n"
            f"    train/<wnid>/*.JPEG   (class folders {', '.join(self.class_names)})\n"
            "    val/<wnid>/*.JPEG     (the same class folders)"
        )

    def how_to_get(self) -> str:
        return f"pass --data.download true, or download {self.url} and extract it into {Path(self.root).absolute()}"

    def prepare_data(self) -> None:
        if self.download and not all((self.data_dir / split).is_dir() for split in ("train", "val")):
            download_and_verify(self.url, self.root)
        super().prepare_data()


class ImagewoofDataModule(ImagenetteDataModule):
    """Imagewoof (fastai's imagewoof2): 10 hard-to-tell dog breeds, ~9,000 training and 3,929 val images.

    Same recipe and arguments as :class:`ImagenetteDataModule`; folders ``<root>/imagewoof2-160`` etc.
    """

    name = "imagewoof"
    archive = "imagewoof2"
    class_names = IMAGEWOOF_CLASSES


class ImageNetDataModule(_ImageFolderDataModule):
    """ImageNet (ILSVRC2012): 1,000 classes, 1.28 M training and 50,000 validation images.

    Expects ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` with the validation images
    already sorted into the 1,000 class folders. Uses the standard ResNet recipe (as SVP): random resized
    crops with scale (0.08, 1) for training, resize to 256 and centre-crop 224 for evaluation. There is no
    automatic download: the dataset's licence asks each user to get it from image-net.org.

    Args:
        image_size: side of the square training and evaluation crops.
    """

    name = "imagenet"
    num_base_classes = 1000
    decodes_once = False  # 1.28 M images: decoded item by item unless --data.data_path tensor
    crop_scale = (0.08, 1.0)
    resize_ratio = 256 / 224

    def __init__(
        self, root: str = "data/imagenet", batch_size: int = 256, image_size: int = 224, **kwargs: Any
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, image_size=image_size, **kwargs)

    def layout(self) -> str:
        return (
            "<root>/\n"
            "    train/n01440764/n01440764_10026.JPEG ...   (1,000 class folders)\n"
            "    val/n01440764/ILSVRC2012_val_00000293.JPEG ...   (the same 1,000 class folders)"
        )

    def how_to_get(self) -> str:
        return (
            "ILSVRC2012 cannot be downloaded automatically (its licence asks each user to register): get "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org/download.php, "
            "extract the training archive's 1,000 per-class tars into train/<wnid>/, extract the validation "
            "images into val/ and sort them into val/<wnid>/ folders with the devkit's labels (e.g. the "
            "common valprep.sh script)"
        )

    def prepare_data(self) -> None:
        if self.download and not (self.data_dir / "train").is_dir():
            raise missing_dataset_error(self.name, self.data_dir / "train", self.layout(), self.how_to_get())
        super().prepare_data()
