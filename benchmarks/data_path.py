"""One training epoch's batches (no model), the tensor-resident data path against the per-item one.

Images per second of ``train_dataloader()`` for one epoch, augmentation and normalisation included, for the
bundled digits (1,437 of 1x8x8), a CIFAR-size pool (50,000 random uint8 images of 3x32x32 with CIFAR's
crop-and-flip) and an Imagenette-size folder (9,469 JPEGs of 160x213 in 10 class folders, 128-pixel random
resized crops; the per-item path decodes every file each epoch, the tensor path reads the decoded cache,
whose one-off build time is printed), both paths in the same run, best of ``--repeats`` epochs each. The
per-item path runs with ``--workers`` loader processes. Under the project's thread policy (one thread unless
``LIGHTNING_PROXY_THREADS``), as the command runs it; ``--busy K`` adds K CPU-bound processes.

    python benchmarks/data_path.py
    python benchmarks/data_path.py --busy 2
    python benchmarks/data_path.py --pools imagenette --imagenette-root /data   # a real imagenette2-160
    python benchmarks/data_path.py --device cuda        # the tensor path's batches made on the GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from busy import busy
from torchvision.io import encode_jpeg

from lightning_proxy.datamodules import CIFAR10DataModule, DigitsDataModule, ImagenetteDataModule
from lightning_proxy.datamodules.imagefolder import IMAGENETTE_CLASSES
from lightning_proxy.datamodules.images import InMemoryImages
from lightning_proxy.threads import apply_thread_policy

POOLS = ["digits", "cifar", "imagenette"]


class CIFARSizePool(CIFAR10DataModule):
    """CIFAR-10's shape, augmentation and normalisation on random images: no download needed."""

    def build_pool(self, split, transform):
        n = 50_000 if split == "train" else 10_000
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return InMemoryImages(images, np.arange(n) % 10, [str(c) for c in range(10)], transform)


def write_imagenette_size(root: Path, n: int = 9_469, val: int = 100) -> Path:
    """``n`` training JPEGs (and ``val``) of 160x213 in Imagenette's class folders: smooth random photos-to-be
    (a 12x16 random image upsampled, plus noise), compressed at quality 90 as real photos roughly are."""
    g = torch.Generator().manual_seed(0)
    wnids = sorted(IMAGENETTE_CLASSES)
    for split, count in (("train", n), ("val", val)):
        for start in range(0, count, 256):
            k = min(256, count - start)
            small = torch.randint(0, 256, (k, 3, 12, 16), generator=g).float()
            big = torch.nn.functional.interpolate(small, (160, 213), mode="bilinear")
            big = (big + 12 * torch.randn(big.shape, generator=g)).clamp(0, 255).to(torch.uint8)
            for i, data in enumerate(encode_jpeg(list(big), quality=90)):
                folder = root / "imagenette2-160" / split / wnids[(start + i) % 10]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{start + i:05d}.JPEG").write_bytes(data.numpy().tobytes())
    return root


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
    parser.add_argument("--pools", nargs="+", choices=POOLS, default=POOLS)
    parser.add_argument("--imagenette-root", type=Path, help="a folder holding imagenette2-160 (else one is written)")
    args = parser.parse_args()
    threads = apply_thread_policy()
    print(
        f"batch {args.batch_size}, per-item workers {args.workers}, torch threads {threads or 'default'}, "
        f"device {args.device}, busy processes {args.busy}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pools = {"digits": DigitsDataModule, "cifar": CIFARSizePool}
        if "imagenette" in args.pools:
            root = args.imagenette_root or write_imagenette_size(Path(tmp))
            cache = Path(tmp) / "decoded"
            pools["imagenette"] = lambda **kw: ImagenetteDataModule(root=str(root), cache_dir=str(cache), **kw)
            start = time.perf_counter()
            pools["imagenette"](num_workers=args.workers).prepare_data()
            print(f"imagenette: decoded once in {time.perf_counter() - start:.1f} s with {args.workers} workers")
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
                ratio = rates["tensor"] / rates["items"]
                print(f"| {name} | {rates['items']:,.0f} | {rates['tensor']:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
