"""The tensor-resident data path: batches indexed out of one uint8 image tensor and augmented whole.

For pools that fit in memory (digits, CIFAR, a decoded Imagenette), the per-item path (a torchvision
transform per image, ``Subset``, ``IndexedDataset``, the default collate) costs more than a small proxy's
forward and backward pass. Here a batch is one indexing of the pool tensor, its augmentation is a few
operations on the whole batch (on the pool's device: a GPU when training on one), and normalisation and the
channels-last layout come with it. Items are the same ``(images, targets, pool_indices)`` as on the
per-item path, so callbacks, subset rules and scoring see no difference.

Shuffling and sharding over ranks are :mod:`~lightning_proxy.datamodules.sharding`'s, as for text.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import torch
from torchvision.ops import roi_align

from lightning_proxy.datamodules.sharding import ShardedBatches, ShardedShuffle


@dataclasses.dataclass(frozen=True)
class BatchAugment:
    """Training augmentation of a datamodule, applied to whole uint8 batches (or, per item, by torchvision).

    Args:
        pad: random crop of the image's own size after zero padding by ``pad`` pixels (CIFAR: 4).
        flip_p: probability of a horizontal flip.
        resized_crop: output side of a random resized crop (then ``scale`` and ``ratio`` apply), or None.
        scale: range of the crop's share of the image area.
        ratio: range of the crop's aspect ratio (sampled log-uniformly).
    """

    pad: int = 0
    flip_p: float = 0.0
    resized_crop: int | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a uint8 ``B x C x H x W`` batch; returns uint8 (crop and flip) or float32 (resized crop)."""
        if self.resized_crop is not None:
            return self._resized_crop(images, generator)
        return self._crop_and_flip(images, generator)

    def _crop_and_flip(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = images.shape
        device = images.device
        if self.pad == 0 and self.flip_p == 0.0:
            return images
        p = self.pad
        padded = torch.nn.functional.pad(images, (p, p, p, p)) if p else images
        top = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=generator, device=device)
        left = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=generator, device=device)
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        if self.flip_p > 0.0:
            flip = torch.rand(b, 1, 1, generator=generator, device=device) < self.flip_p
            cols = torch.where(flip, (w - 1) - cols, cols)
        # crop and flip as one gather of flat pixel positions (several times faster than advanced indexing)
        width = w + 2 * p
        flat = ((top + rows) * width + left + cols).view(b, 1, h * w).expand(b, c, h * w)
        return torch.gather(padded.reshape(b, c, -1), 2, flat).view(b, c, h, w)

    def crop_boxes(self, images: torch.Tensor, generator: torch.Generator, tries: int = 10) -> torch.Tensor:
        """torchvision's RandomResizedCrop boxes for a batch, ``B x 4`` as ``(left, top, width, height)``:
        ``tries`` candidates per image, the first that fits, else the whole image."""
        b, _, h, w = images.shape
        device = images.device
        area = h * w * torch.empty(b, tries, device=device).uniform_(*self.scale, generator=generator)
        log_ratio = torch.empty(b, tries, device=device).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=generator
        )
        aspect = torch.exp(log_ratio)
        cw = torch.sqrt(area * aspect).round()
        ch = torch.sqrt(area / aspect).round()
        fits = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
        first = torch.where(fits.any(1), fits.float().argmax(1), -1)
        pick = first.clamp_min(0)[:, None]
        cw = torch.where(first >= 0, cw.gather(1, pick)[:, 0], float(w))
        ch = torch.where(first >= 0, ch.gather(1, pick)[:, 0], float(h))
        x0 = (torch.rand(b, generator=generator, device=device) * (w - cw + 1)).floor()
        y0 = (torch.rand(b, generator=generator, device=device) * (h - ch + 1)).floor()
        return torch.stack([x0, y0, cw, ch], dim=1)

    def _resized_crop(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Each image's :meth:`crop_boxes` box resized to ``resized_crop``, then flipped with ``flip_p``.

        On the CPU every crop goes through torchvision's own antialiased uint8 kernel (the result is
        ``v2.functional.resized_crop`` of the same box, and faster per image than one batched ``roi_align``);
        on an accelerator one ``roi_align`` resamples the batch (averaging ceil(crop / output) bilinear
        samples per pixel, so downscaling stays antialiased) and the result is float in ``[0, 255]``.
        """
        b, c = images.shape[:2]
        size = self.resized_crop
        boxes = self.crop_boxes(images, generator)
        if images.device.type == "cpu":
            out = torch.empty(b, c, size, size, dtype=images.dtype)
            for i, (x0, y0, cw, ch) in enumerate(boxes.int().tolist()):
                crop = images[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw]
                out[i] = torch.nn.functional.interpolate(crop, (size, size), mode="bilinear", antialias=True)[0]
        else:
            x0, y0, cw, ch = boxes.unbind(1)
            rois = torch.stack([torch.arange(b, device=images.device, dtype=x0.dtype), x0, y0, x0 + cw, y0 + ch], 1)
            out = roi_align(images.float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        if self.flip_p > 0.0:
            flip = torch.rand(b, generator=generator, device=images.device) < self.flip_p
            out = torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)
        return out


@dataclasses.dataclass(frozen=True)
class CentreView:
    """Evaluation geometry on square batches: resize to ``resize`` pixels, keep the centre ``size`` square.

    torchvision's ``Resize(resize)`` then ``CenterCrop(size)``, for pools stored larger than the model's
    input (a decoded folder dataset). On the CPU the resize is torchvision's own antialiased uint8 kernel.
    """

    size: int
    resize: int

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"CentreView needs square images, got {tuple(images.shape[-2:])}")
        if images.shape[-1] != self.resize:
            if images.device.type != "cpu":
                images = images.float()
            images = torch.nn.functional.interpolate(
                images, (self.resize, self.resize), mode="bilinear", antialias=True
            )
        top = int(round((self.resize - self.size) / 2.0))  # torchvision's centre
        return images[..., top : top + self.size, top : top + self.size]


class TensorBatches(ShardedBatches):
    """``(images, targets, pool_indices)`` batches of ``images[indices]``, augmented and normalised as a whole.

    Args:
        images: the pool, uint8 ``N x C x H x W`` on the device the batches should be on (or float32 in
            ``[0, 1]`` units: a synthetic set).
        targets: the model's label of every pool image (int64, -1 for classes it leaves out), same device.
        indices: the pool positions to serve (a subset), in order.
        batch_size: images per batch (the last batch may be smaller).
        mean, std: per-channel normalisation of ``[0, 1]`` images.
        shuffle: a new order every epoch (training); else ``indices`` in order.
        augment: applied to every batch: the training augmentation (:class:`BatchAugment`), the evaluation
            geometry of a pool stored larger than the model's input (:class:`CentreView`), or None.
        rank, world_size: this process's shard of every epoch.
        channels_last: batches in channels-last memory layout (faster convolutions on GPUs).
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: BatchAugment | CentreView | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dtype not in (torch.uint8, torch.float32) or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 (or float32) N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}"
            )
        self.images, self.targets = images, targets
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment
        self.channels_last = channels_last
        self.sampler = ShardedShuffle(len(self.indices), shuffle, rank, world_size)
        device = images.device
        peak = 255 if images.dtype == torch.uint8 else 1  # the pixel units of the pool, whatever a crop returns
        self._scale = torch.tensor([1 / (peak * s) for s in std], device=device).view(1, -1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=device).view(1, -1, 1, 1)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        sampler = self.sampler
        positions = self.indices[sampler.order()].to(self.images.device)
        generator = None
        if self.augment is not None:
            generator = torch.Generator(self.images.device)
            generator.manual_seed(hash((sampler.seed, sampler.epoch, sampler.rank)) % 2**63)
        for start in range(0, len(positions), self.batch_size):
            index = positions[start : start + self.batch_size]
            images = torch.index_select(self.images, 0, index)
            if self.augment is not None:
                images = self.augment(images, generator)
            yield self._normalise(images), self.targets[index], index

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``(x / 255 - mean) / std`` in float32 (``x`` for a float pool), as one multiply-add; laid out
        channels-last when asked.

        The layout is settled before the conversion, on uint8 (a quarter of the bytes); a resized crop comes
        as float in ``[0, 255]`` already and is converted in place.
        """
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.contiguous(memory_format=layout).to(torch.float32)
        return images.mul_(self._scale).add_(self._shift)
