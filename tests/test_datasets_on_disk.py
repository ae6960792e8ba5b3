"""The on-disk readers on tiny datasets written in the real formats (see ``fakedata``)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from fakedata import CIFAR10_NAMES, nearest_class, write_cifar, write_image_folders
from torchvision.transforms import v2

from lightning_proxy.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ImageNetDataModule,
    ImagenetteDataModule,
    ImagewoofDataModule,
    SubsetSpec,
)
from lightning_proxy.datamodules import cifar as cifar_module
from lightning_proxy.datamodules import imagefolder as imagefolder_module
from lightning_proxy.datamodules.download import download_and_verify
from lightning_proxy.datamodules.imagefolder import IMAGENETTE_CLASSES, IMAGEWOOF_CLASSES
from lightning_proxy.selection.ranking import pool_fingerprint

FAST = {"batch_size": 8, "num_workers": 0, "pin_memory": False}


def check_loaders(dm, image_shape: tuple[int, ...]) -> None:
    """Train items are ``(image, label, pool index)`` of the subset; scoring follows the pool in order."""
    dm.subset = SubsetSpec(fraction=0.5, seed=1)
    seen = []
    for images, labels, indices in dm.train_dataloader():
        assert images.dtype == torch.float32 and images.shape[1:] == image_shape
        assert torch.equal(labels, torch.as_tensor(dm.targets[indices.numpy()]))
        seen += indices.tolist()
    assert sorted(seen) == dm.train_indices.tolist()
    assert len(seen) == round(0.5 * dm.pool_size)
    images, labels, indices = next(iter(dm.scoring_dataloader()))
    assert indices.tolist() == list(range(len(indices)))
    assert torch.allclose(images[1], dm.score_pool[1][0], atol=1e-6)  # the per-item transform of the same image
    n_val = sum(len(batch[0]) for batch in dm.val_dataloader())
    assert n_val == len(dm.build_pool("val", None))


# --- CIFAR ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "num_classes"), [(CIFAR10DataModule, 10), (CIFAR100DataModule, 100)])
def test_cifar_reads_the_pickle_release(tmp_path, cls, num_classes):
    write_cifar(tmp_path, num_classes, train_per_class=3, test_per_class=1, seed=0)
    dm = cls(root=str(tmp_path), **FAST)
    raw = dm.build_pool("train", None)
    assert raw.images.shape == (3 * num_classes, 3, 32, 32) and raw.images.dtype == torch.uint8
    assert np.bincount(raw.targets).tolist() == [3] * num_classes
    names = CIFAR10_NAMES if num_classes == 10 else [f"class_{c:02d}" for c in range(100)]
    assert raw.classes == names
    assert [nearest_class(img.numpy(), num_classes) for img in raw.images] == raw.targets.tolist()
    val = dm.build_pool("val", None)
    assert len(val) == num_classes and sorted(val.targets.tolist()) == list(range(num_classes))

    for pool in (dm.train_pool, dm.score_pool):
        image, label = pool[0]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)
    again = cls(root=str(tmp_path), **FAST).build_pool("train", None)
    assert np.array_equal(again.targets, raw.targets) and torch.equal(again.images, raw.images)
    check_loaders(dm, (3, 32, 32))


def test_cifar10_spreads_the_training_set_over_five_batches(tmp_path):
    folder = write_cifar(tmp_path, 10, train_per_class=5, test_per_class=1)
    with open(folder / "data_batch_5", "rb") as f:
        last = pickle.load(f, encoding="bytes")
    dm = CIFAR10DataModule(root=str(tmp_path), **FAST)
    assert dm.pool_size == 50
    assert np.array_equal(dm.targets[-len(last[b"labels"]) :], last[b"labels"])


def test_cifar_missing_root_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CIFAR10DataModule(root=str(tmp_path / "nowhere"), **FAST).build_pool("train", None)
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "batches.meta" in message
    assert "cifar-10-python.tar.gz" in message and "--data.download true" in message


def test_cifar_missing_file_is_named(tmp_path):
    folder = write_cifar(tmp_path, 100, train_per_class=1, test_per_class=1)
    (folder / "meta").unlink()
    with pytest.raises(FileNotFoundError, match="cifar-100-python/meta"):
        CIFAR100DataModule(root=str(tmp_path), **FAST).build_pool("train", None)


def test_truncated_cifar_pickle_is_named(tmp_path):
    folder = write_cifar(tmp_path, 10, train_per_class=2, test_per_class=1)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="data_batch_3.*truncated or corrupt"):
        CIFAR10DataModule(root=str(tmp_path), **FAST).build_pool("train", None)


def test_cifar_wrong_shapes_are_refused(tmp_path):
    folder = write_cifar(tmp_path, 10, train_per_class=2, test_per_class=1)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((10, 32, 32, 3), np.uint8), b"labels": list(range(10))}, f)
    with pytest.raises(ValueError, match="test_batch.*3072"):
        CIFAR10DataModule(root=str(tmp_path), **FAST).build_pool("val", None)


def test_cifar_download_only_when_asked_and_missing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cifar_module, "download_and_verify", lambda *args: calls.append(args))
    CIFAR100DataModule(root=str(tmp_path), **FAST).prepare_data()
    assert calls == []
    CIFAR100DataModule(root=str(tmp_path), download=True, **FAST).prepare_data()
    assert calls == [(cifar_module.CIFAR100.url, str(tmp_path), "eb9058c3a382ffc7106e4002c42a8d85")]
    write_cifar(tmp_path, 100, train_per_class=1, test_per_class=1)
    CIFAR100DataModule(root=str(tmp_path), download=True, **FAST).prepare_data()
    assert len(calls) == 1


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A folder served over HTTP on localhost, standing in for the dataset's host."""
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_cifar_download_verifies_md5_and_extracts(tmp_path, http_dir, monkeypatch):
    served, base = http_dir
    folder = write_cifar(tmp_path / "src", 10, train_per_class=1, test_per_class=1)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    url, md5 = f"{base}/{archive.name}", hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(RuntimeError, match="could not download, verify or extract"):
        download_and_verify(url, tmp_path / "bad", md5="0" * 32)
    assert not (tmp_path / "bad" / archive.name).exists()

    local = dataclasses.replace(cifar_module.CIFAR10, url=url, md5=md5)
    monkeypatch.setattr(CIFAR10DataModule, "release", local)
    dm = CIFAR10DataModule(root=str(tmp_path / "data"), download=True, **FAST)
    dm.prepare_data()
    assert dm.pool_size == 10 and not (tmp_path / "data" / archive.name).exists()


# --- Imagenette / Imagewoof ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "folder", "names"),
    [
        (ImagenetteDataModule, "imagenette2-160", IMAGENETTE_CLASSES),
        (ImagewoofDataModule, "imagewoof2-160", IMAGEWOOF_CLASSES),
    ],
)
def test_fastai_release_reads_class_folders(tmp_path, cls, folder, names):
    written = list(np.random.default_rng(0).permutation(sorted(names)))
    write_image_folders(tmp_path / folder, written, {"train": 4, "val": 2}, size=(20, 24))
    (tmp_path / folder / "train" / written[0] / "notes.txt").write_text("not an image")
    (tmp_path / folder / "val" / ".cache").mkdir()
    dm = cls(root=str(tmp_path), image_size=16, data_path="items", **FAST)
    raw = dm.build_pool("train", None)
    assert raw.wnids == sorted(names) and raw.classes == [names[w] for w in sorted(names)]
    assert len(raw) == 40 and np.bincount(raw.targets).tolist() == [4] * 10
    for i in range(len(raw)):
        image, label = raw[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 20, 24)
        assert written[nearest_class(image.numpy(), 10)] == raw.wnids[label]
    assert {os.path.splitext(raw.path(i))[1] for i in range(len(raw))} == {".JPEG", ".jpg", ".png"}

    for pool in (dm.train_pool, dm.score_pool):
        image, _ = pool[3]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    again = cls(root=str(tmp_path), image_size=16, data_path="items", **FAST).build_pool("train", None)
    assert np.array_equal(again.files, raw.files) and np.array_equal(again.targets, raw.targets)
    check_loaders(dm, (3, 16, 16))


def test_folder_splits_are_decoded_once_at_the_stated_size(tmp_path, monkeypatch, capsys):
    data_dir = write_image_folders(tmp_path / "imagenette2-160", sorted(IMAGENETTE_CLASSES), {"train": 3, "val": 2})
    dm = ImagenetteDataModule(root=str(tmp_path), image_size=12, cache_size=16, **FAST)
    dm.prepare_data()
    assert "Decoding imagenette train (imagenette2-160) at 16 px" in capsys.readouterr().err
    files = sorted(p.name for p in (data_dir / "decoded").iterdir())
    assert len(files) == 2 and files[0].startswith("imagenette2-160-train-16px-")
    assert files[1].startswith("imagenette2-160-val-16px-")
    assert dm.uses_tensor_path and dm.pool_size == 30
    per_file = ImagenetteDataModule(root=str(tmp_path), data_path="items", **FAST).build_pool("train", None)
    square = v2.Compose([v2.Resize(16, antialias=True), v2.CenterCrop(16)])
    assert torch.equal(dm.train_pool.images, torch.stack([square(per_file[i][0]) for i in range(30)]))
    assert np.array_equal(dm.targets, per_file.targets) and dm.fingerprint == pool_fingerprint(per_file.targets)
    check_loaders(dm, (3, 12, 12))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder_module, "decode_image", no_decoding)
    again = ImagenetteDataModule(root=str(tmp_path), image_size=12, cache_size=16, **FAST)
    assert torch.equal(again.train_pool.images, dm.train_pool.images)  # read from the file
    monkeypatch.undo()

    # another size, another folder content, another place: each its own file
    ImagenetteDataModule(root=str(tmp_path), image_size=12, cache_size=14, **FAST).prepare_data()
    assert len(list((data_dir / "decoded").glob("*-train-14px-*.npy"))) == 1
    extra = data_dir / "train" / sorted(IMAGENETTE_CLASSES)[0]
    (extra / "zz.png").write_bytes((extra / next(f for f in os.listdir(extra) if f.endswith(".png"))).read_bytes())
    grown = ImagenetteDataModule(
        root=str(tmp_path), image_size=12, cache_size=16, cache_dir=str(tmp_path / "c"), **FAST
    )
    assert grown.pool_size == 31 and len(list((tmp_path / "c").glob("imagenette2-160-train-16px-*.npy"))) == 1
    assert not list((tmp_path / "c").glob(".*"))  # no temporary file left behind

    (tmp_path / "a_file").write_text("")
    blocked = ImagenetteDataModule(root=str(tmp_path), cache_dir=str(tmp_path / "a_file"), **FAST)
    with pytest.raises(ValueError, match="cannot create the decoded-image cache folder.*--data.cache_dir"):
        blocked.prepare_data()
    assert not ImageNetDataModule(root=str(tmp_path)).caches_decoded  # too large to decode by default


def test_fastai_release_size_picks_the_folder_and_url(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as error:
        ImagewoofDataModule(root=str(tmp_path), release_size="320", **FAST).build_pool("train", None)
    message = str(error.value)
    assert str(tmp_path / "imagewoof2-320" / "train") in message
    assert "train/<wnid>/*.JPEG" in message and "n02115641" in message
    assert "https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz" in message

    calls = []
    monkeypatch.setattr(imagefolder_module, "download_and_verify", lambda *args: calls.append(args))
    ImagenetteDataModule(root=str(tmp_path), release_size="full", download=True, data_path="items").prepare_data()
    assert calls == [("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", str(tmp_path))]
    with pytest.raises(ValueError, match="release_size"):
        ImagenetteDataModule(root=str(tmp_path), release_size="640")  # type: ignore[arg-type]


def test_corrupt_image_is_named(tmp_path):
    write_image_folders(tmp_path / "imagenette2-160", sorted(IMAGENETTE_CLASSES), {"train": 2, "val": 1})
    pool = ImagenetteDataModule(root=str(tmp_path), data_path="items", **FAST).build_pool("train", None)
    bad = pool.path(5)
    with open(bad, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    pool[4]
    with pytest.raises(ValueError, match=f"{bad}.*corrupt"):
        pool[5]
    with pytest.raises(ValueError, match=f"{bad}.*corrupt"):  # found while decoding once, too
        ImagenetteDataModule(root=str(tmp_path), **FAST).prepare_data()
    assert not list((tmp_path / "imagenette2-160" / "decoded").iterdir())  # nothing half-written is kept
    os.remove(pool.path(6))
    with pytest.raises(FileNotFoundError, match=os.path.basename(pool.path(6))):
        pool[6]


def test_foreign_class_folders_are_refused(tmp_path):
    classes = sorted(IMAGENETTE_CLASSES)[:9] + ["n99999999"]
    write_image_folders(tmp_path / "imagenette2-160", classes, {"train": 1, "val": 1}, size=(8, 8))
    with pytest.raises(ValueError, match="n03888605.*n99999999"):
        ImagenetteDataModule(root=str(tmp_path), **FAST).build_pool("train", None)


# --- ImageNet --------------------------------------------------------------------------------------------
WNIDS = [f"n{k:08d}" for k in range(1000)]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    return write_image_folders(root, WNIDS, {"train": 1, "val": 1}, size=(10, 12))


def test_imagenet_reads_1000_class_folders(imagenet_root):
    dm = ImageNetDataModule(root=str(imagenet_root), image_size=8, **FAST)
    assert dm.pool_size == 1000 and dm.train_pool.classes == WNIDS
    assert dm.targets.tolist() == list(range(1000))
    assert dm.score_pool[7][0].shape == dm.train_pool[7][0].shape == (3, 8, 8)
    dm.subset = SubsetSpec(classes=3, seed=0)
    images, labels, indices = next(iter(dm.val_dataloader()))
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == [0, 1, 2]


def test_imagenet_val_must_match_train(imagenet_root, tmp_path):
    """A symlinked tree (common for ImageNet) whose val lacks one of train's classes and has a foreign one."""
    (tmp_path / "train").symlink_to(imagenet_root / "train")
    (tmp_path / "val").mkdir()
    for wnid in WNIDS:
        link = "n12345678" if wnid == WNIDS[5] else wnid
        (tmp_path / "val" / link).symlink_to(imagenet_root / "val" / wnid)
    dm = ImageNetDataModule(root=str(tmp_path), **FAST)
    assert dm.pool_size == 1000
    with pytest.raises(ValueError, match=r"val.*missing \['n00000005'\].*unexpected \['n12345678'\]"):
        dm.setup()


def test_imagenet_needs_1000_classes_and_names_the_layout(tmp_path):
    write_image_folders(tmp_path, WNIDS[:3], {"train": 1, "val": 1}, size=(8, 8))
    with pytest.raises(ValueError, match="3 class folders; imagenet has 1000"):
        ImageNetDataModule(root=str(tmp_path), **FAST).build_pool("train", None)
    with pytest.raises(FileNotFoundError) as error:
        ImageNetDataModule(root=str(tmp_path / "ilsvrc"), **FAST).build_pool("train", None)
    message = str(error.value)
    assert str(tmp_path / "ilsvrc" / "train") in message and "val/n01440764/" in message
    assert "image-net.org" in message and "valprep" in message
