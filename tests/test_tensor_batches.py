import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler
from torchvision.transforms import v2

from lightning_proxy.datamodules import CIFAR10DataModule, DigitsDataModule, SubsetSpec
from lightning_proxy.datamodules.sharding import ShardedShuffle
from lightning_proxy.datamodules.tensor_batches import BatchAugment, CentreView, TensorBatches


@pytest.mark.parametrize(("n", "world_size"), [(10, 1), (10, 3), (7, 2), (2, 4)])
def test_unshuffled_shards_are_distributed_samplers(n, world_size):
    for rank in range(world_size):
        ours = list(ShardedShuffle(n, shuffle=False, rank=rank, world_size=world_size))
        theirs = list(DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=False))
        assert ours == theirs


def test_shuffled_shards_cover_the_epoch_once_and_change_with_the_epoch():
    n, world_size = 101, 4
    shards = {}
    for epoch in (0, 1):
        ranks = []
        for rank in range(world_size):
            sampler = ShardedShuffle(n, shuffle=True, rank=rank, world_size=world_size, seed=7)
            sampler.set_epoch(epoch)
            ranks.append(list(sampler))
        seen = sum(ranks, [])
        assert len(seen) == 104 and set(seen) == set(range(n))  # padded to 4 x 26 by repeating 3 positions
        assert len(seen) - len(set(seen)) == 3
        shards[epoch] = ranks
    assert shards[0] != shards[1]
    again = ShardedShuffle(n, shuffle=True, rank=2, world_size=world_size, seed=7)
    again.set_epoch(1)
    assert list(again) == shards[1][2]  # a resumed epoch gets the same order


def crops_of(padded: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    p = (padded.shape[-1] - w) // 2
    return [padded[..., y : y + h, x : x + w] for y in range(2 * p + 1) for x in range(2 * p + 1)]


def test_crop_and_flip_are_torchvisions_per_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 3, 6, 6), dtype=torch.uint8, generator=g)
    out = BatchAugment(pad=2, flip_p=0.5)(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2,) * 4)
    offsets, flips = set(), 0
    for b in range(len(images)):
        candidates = crops_of(padded[b], 6, 6)
        plain = [k for k, c in enumerate(candidates) if torch.equal(out[b], c)]
        mirrored = [k for k, c in enumerate(candidates) if torch.equal(out[b], c.flip(-1))]
        assert plain or mirrored, f"image {b} is no (flipped) crop of its padded source"
        offsets.update(plain or mirrored)
        flips += bool(mirrored) and not plain
    assert offsets == set(range(25))  # every one of the 5 x 5 offsets occurs
    assert 60 < flips < 140  # about half flipped
    assert torch.equal(BatchAugment(flip_p=1.0)(images, g), images.flip(-1))
    assert BatchAugment()(images, g) is images


def test_resized_crop_of_the_whole_image_is_the_image_and_its_flip_the_mirror():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    whole = BatchAugment(resized_crop=16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(whole(images, torch.Generator()), images)
    mirrored = BatchAugment(resized_crop=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.equal(mirrored(images, torch.Generator()), images.flip(-1))
    small = BatchAugment(resized_crop=8, scale=(0.1, 0.5))(images, torch.Generator().manual_seed(3))
    assert small.shape == (4, 3, 8, 8) and small.dtype == torch.uint8


def test_resized_crops_on_the_cpu_are_torchvisions_for_the_same_boxes():
    images = torch.randint(0, 256, (64, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    aug = BatchAugment(resized_crop=12, scale=(0.2, 1.0), flip_p=0.5)
    out = aug(images, torch.Generator().manual_seed(6))
    boxes = aug.crop_boxes(images, torch.Generator().manual_seed(6)).int().tolist()
    flips = 0
    for image, crop, (left, top, width, height) in zip(images, out, boxes, strict=True):
        assert left >= 0 and left + width <= 24 and top >= 0 and top + height <= 20
        expected = v2.functional.resized_crop(image, top, left, height, width, [12, 12], antialias=True)
        assert torch.equal(crop, expected) or torch.equal(crop, expected.flip(-1))
        flips += not torch.equal(crop, expected)
    assert 16 < flips < 48
    areas = [w * h / (20 * 24) for _, _, w, h in boxes]
    assert min(areas) >= 0.2 - 0.05 and max(areas) <= 1.0 and np.std(areas) > 0.1  # spread over the scale


@pytest.mark.parametrize(("side", "resize", "size"), [(20, 16, 12), (16, 16, 12), (16, 16, 16), (12, 18, 15)])
def test_centre_view_is_torchvisions_resize_and_centre_crop(side, resize, size):
    images = torch.randint(0, 256, (5, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    expected = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size)])
    out = CentreView(size, resize)(images)
    assert torch.equal(out, torch.stack([expected(image) for image in images]))


def test_batches_are_normalised_as_torchvisions_transform():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    batches = TensorBatches(images, torch.arange(10), torch.tensor([3, 1, 4]), 2, mean, std, channels_last=True)
    x, y, idx = next(iter(batches))
    expected = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(images[[3, 1]]))
    assert torch.allclose(x, expected, atol=1e-6) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.tolist() == [3, 1] and idx.tolist() == [3, 1] and len(batches) == 2


def test_both_paths_serve_the_same_examples_labels_and_scoring_images():
    subset = SubsetSpec(classes=["1", "4", "8"], fraction=0.5, seed=2)
    tensor, items = (DigitsDataModule(batch_size=32, subset=subset, data_path=p) for p in ("tensor", "items"))
    assert tensor.uses_tensor_path and not items.uses_tensor_path
    for make in ("train_dataloader", "val_dataloader", "scoring_dataloader"):
        a = [torch.cat(parts) for parts in zip(*getattr(tensor, make)(), strict=True)]
        b = [torch.cat(parts) for parts in zip(*getattr(items, make)(), strict=True)]
        order_a, order_b = torch.argsort(a[2]), torch.argsort(b[2])
        assert torch.equal(a[2][order_a], b[2][order_b]), make  # the same examples ...
        assert torch.equal(a[1][order_a], b[1][order_b]), make  # ... with the same (model) labels
        if make != "train_dataloader":  # no augmentation: the same images
            assert torch.allclose(a[0][order_a], b[0][order_b], atol=1e-6), make
    _, labels, _ = (torch.cat(parts) for parts in zip(*tensor.scoring_dataloader(), strict=True))
    assert set(labels.tolist()) == {-1, 0, 1, 2}  # classes left out score as -1


def test_the_tensor_path_is_refused_for_a_pool_that_is_not_one_tensor(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path), data_path="tensor")
    dm._train_pool = object()  # any dataset read item by item
    with pytest.raises(ValueError, match="--data.data_path tensor needs a pool held in memory"):
        _ = dm.uses_tensor_path
    np.testing.assert_equal(DigitsDataModule(data_path="items").uses_tensor_path, False)
