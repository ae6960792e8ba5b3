"""One training epoch's batches (no model), the tensor-resident data path against the per-item one.

Images per second of ``train_dataloader()`` for one epoch, augmentation and normalisation included, for the
bundled digits (1,437 of 1x8x8) and a CIFAR-size pool (50,000 random uint8 images of 3x32x32 with CIFAR's
crop-and-flip), both paths in the same run, best of ``--repeats`` epochs each. The per-item path runs with
``--workers`` loader processes. Under the project's thread policy (one thread unless
``LIGHTNING_PROXY_THREADS``), as the command runs it; ``--busy K`` adds K CPU-bound processes.

    python benchmarks/data_path.py
    python benchmarks/data_path.py --busy 2
    python benchmarks/data_path.py --device cuda        # the tensor path's batches made on the GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from busy import busy

from lightning_proxy.datamodules import CIFAR10DataModule, DigitsDataModule
from lightning_proxy.datamodules.base import InMemoryImages
from lightning_proxy.threads import apply_thread_policy


class CIFARSizePool(CIFAR10DataModule):
    """CIFAR-10's shape, augmentation and normalisation on random images: no download needed."""

    def build_pool(self, split, transform):
        n = 50_000 if split == "train" else 10_000
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return InMemoryImages(images, np.arange(n) % 10, [str(c) for c in range(10)], transform)


class OnDevice:
    """Just what ``PoolDataModule`` asks of an attached trainer: the device and the ranks."""

    def __init__(self, device: str) -> None:
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()
        self.global_rank, self.world_size = 0, 1


def images_per_second(dm, repeats: int, device: str) -> float:
    best = float("inf")
    for epoch in range(repeats):
        loader = dm.train_dataloader()
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        n = 0
        for images, _, _ in loader:
            images = images.to(device, non_blocking=True)
            n += len(images)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="loader processes of the per-item path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--busy", type=int, default=0, metavar="K", help="run K CPU-bound processes meanwhile")
    parser.add_argument("--pools", nargs="+", choices=["digits", "cifar"], default=["digits", "cifar"])
    args = parser.parse_args()
    threads = apply_thread_policy()
    print(
        f"batch {args.batch_size}, per-item workers {args.workers}, torch threads {threads or 'default'}, "
        f"device {args.device}, busy processes {args.busy}"
    )
    pools = {"digits": DigitsDataModule, "cifar": CIFARSizePool}
    print("\n| pool | per-item images/s | tensor images/s | tensor over per-item |")
    print("| --- | --- | --- | --- |")
    with busy(args.busy):
        for name in args.pools:
            rates = {}
            for path in ("items", "tensor"):
                dm = pools[name](batch_size=args.batch_size, num_workers=args.workers, data_path=path)
                if path == "tensor":
                    dm.trainer = OnDevice(args.device)
                rates[path] = images_per_second(dm, args.repeats, args.device)
            print(
                f"| {name} | {rates['items']:,.0f} | {rates['tensor']:,.0f} | {rates['tensor'] / rates['items']:.1f}x |"
            )


if __name__ == "__main__":
    main()
