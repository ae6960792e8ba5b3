"""Training step time with every per-example callback on, over off, in the same process.

A CIFAR-size run: preact ResNet20, batches of 128 3x32x32 images with pool indices drawn from a pool of
50,000, pre-collated so the loader costs nothing and the ratio shows the callbacks alone. The arms
alternate (off, on, off, on, ...) so drift in the machine hits both. Reported: the median time per
training step (between consecutive ``on_train_batch_end`` calls, so forward, backward, optimizer step and
every callback hook) and the whole training time including the per-epoch reductions. The post-training
scoring pass is timed on its own, against one training epoch's worth of steps.

First, the three training-step hooks alone, called as Lightning calls them on one epoch of steps: the
tensor operations they issue per step and their host time per step, scattering every step
(``observe_every=1``) against every 32 steps (the default), set against the tensor operations of the
training step itself. A small model's step is bound by the host launching kernels, one per operation, so
on a GPU the step's time grows about as its operation count does.

    python benchmarks/callback_overhead.py                 # CPU or the GPU there is
    python benchmarks/callback_overhead.py --precision bf16-mixed --steps 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from types import SimpleNamespace

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset

from lightning_proxy.callbacks import EL2N, AreaUnderMargin, ForgettingEvents, PostTrainingScores
from lightning_proxy.module import ClassificationModule


class Batches(Dataset):
    """``count`` ready-made ``(images, labels, pool indices)`` batches (a loader with ``batch_size=None``)."""

    def __init__(self, count: int, batch_size: int, pool: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.batches = [
            (
                torch.randn(batch_size, 3, 32, 32, generator=g),
                torch.randint(0, 10, (batch_size,), generator=g),
                torch.randperm(pool, generator=g)[:batch_size],
            )
            for _ in range(count)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        return self.batches[i]


class Pool(L.LightningDataModule):
    """The benchmark's data: training batches, and a scoring loader over ``pool`` examples for the last pass."""

    name = "benchmark"

    def __init__(self, steps: int, batch_size: int, pool: int) -> None:
        super().__init__()
        self.train = Batches(steps, batch_size, pool)
        self.pool_size = pool
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=None, shuffle=False)

    def scoring_dataloader(self) -> DataLoader:
        count = self.pool_size // (2 * self.batch_size)
        batches = Batches(count, 2 * self.batch_size, self.pool_size, seed=1)
        for k, batch in enumerate(batches.batches):  # pool order, as a real scoring loader
            batch[2][:] = torch.arange(k * 2 * self.batch_size, (k + 1) * 2 * self.batch_size)
        return DataLoader(batches, batch_size=None)


class StepTimer(L.Callback):
    """Time between consecutive training batch ends, and the whole fit.

    On CUDA the marks are CUDA events read once at the end, so timing never synchronises the steps: a step's
    time is then what the GPU timeline spent on it, waiting for the host's launches included.
    """

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._pairs: list[tuple] = []

    def _mark(self, pl_module: L.LightningModule):
        if pl_module.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.start = time.perf_counter()
        self.last = self._mark(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = self._mark(pl_module)
        self._pairs.append((self.last, now))
        self.last = now

    def on_train_epoch_end(self, trainer, pl_module):
        self.last = self._mark(pl_module)  # the first step of the next epoch excludes the epoch-end hooks

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
            self.steps = [a.elapsed_time(b) / 1e3 for a, b in self._pairs]
        else:
            self.steps = [b - a for a, b in self._pairs]
        self.total = time.perf_counter() - self.start


class TimedScores(PostTrainingScores):
    """``PostTrainingScores`` that records how long its pass over the pool took."""

    def on_train_end(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        start = time.perf_counter()
        super().on_train_end(trainer, pl_module)
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seconds = time.perf_counter() - start


STATISTICS = (ForgettingEvents, EL2N, AreaUnderMargin)


class OpCounter(TorchDispatchMode):
    """Counts the tensor operations dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def fit(args: argparse.Namespace, data: L.LightningDataModule, callbacks: list[L.Callback], **limits: int) -> None:
    """Fit a fresh preact ResNet20 on ``data`` with nothing but ``callbacks`` (no logger, checkpoints or bars)."""
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **limits,
    )
    model = ClassificationModule(arch="preact_resnet20", num_classes=10, in_channels=3, schedule="constant")
    trainer.fit(model, data)


class OpsPerStep(L.Callback):
    """Tensor operations dispatched from each training batch's start to its end (forward, backward, optimizer)."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.counter = OpCounter()
        self.counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.counter.__exit__(None, None, None)
        self.counts.append(self.counter.count)


def step_ops(args: argparse.Namespace) -> int:
    """Tensor operations of one training step without the callbacks (their count does not depend on the batch size)."""
    counter = OpsPerStep()
    fit(args, Pool(3, 8, args.pool), [counter], max_steps=3)
    return counter.counts[-1]  # the first step also builds optimizer state


def hook_cost(args: argparse.Namespace, device: torch.device, observe_every: int) -> tuple[float, float]:
    """Tensor operations and host microseconds per step of the three training-step hooks, epoch end included."""
    steps, classes = -(-args.pool // args.batch_size), 10
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            {"logits": torch.randn(len(indices), classes, generator=g).to(device, torch.bfloat16)},
            (None, torch.randint(0, classes, (len(indices),), generator=g).to(device), indices.to(device)),
        )
        for indices in torch.randperm(args.pool, generator=g).split(args.batch_size)
    ]
    trainer, module = SimpleNamespace(world_size=1, datamodule=None), L.LightningModule().to(device)

    def epoch() -> None:
        callbacks = [cls(num_examples=args.pool, observe_every=observe_every) for cls in STATISTICS]
        for callback in callbacks:
            callback.setup(trainer, module, "fit")
        for i, (outputs, batch) in enumerate(batches):
            for callback in callbacks:
                callback.on_train_batch_end(trainer, module, outputs, batch, i)
        for callback in callbacks:
            callback.on_train_epoch_end(trainer, module)

    with OpCounter() as counter:
        epoch()
    seconds = []
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return counter.count / steps, min(seconds) / steps * 1e6


def run(args: argparse.Namespace, callbacks: bool, data: Pool, out: str) -> StepTimer:
    L.seed_everything(0, verbose=False)
    timer = StepTimer()
    stats = [cls(dirpath=out, observe_every=args.observe_every) for cls in STATISTICS] if callbacks else []
    # the timer last: its batch-end sees every statistic's hook done
    fit(args, data, [*stats, timer], max_epochs=args.epochs)
    return timer


def time_scoring(args: argparse.Namespace, data: Pool, out: str) -> float:
    """Seconds of PostTrainingScores' pass over the pool, after a fit of one step."""
    scorer = TimedScores(dirpath=out)
    fit(args, data, [scorer], max_steps=1)
    return scorer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--pool", type=int, default=50_000, help="pool size N of the dense state")
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each arm, alternating")
    parser.add_argument("--warmup", type=int, default=3, help="steps of each run left out of the median")
    parser.add_argument("--observe-every", type=int, default=32, help="the callbacks' observe_every in the fits")
    args = parser.parse_args()

    gpu = torch.cuda.is_available() and args.accelerator != "cpu"
    device = torch.device("cuda" if gpu else "cpu")
    step = step_ops(args)
    print(f"training step alone:              {step:5d} tensor ops per step ({args.precision})")
    for k in (1, 32):
        ops, us = hook_cost(args, device, k)
        print(
            f"hooks alone, observe_every={k:<2d}:   {ops:5.1f} tensor ops {us:7.1f} us per step   "
            f"step with hooks / without, in tensor ops: {(step + ops) / step:.3f}x"
        )

    data = Pool(args.steps, args.batch_size, args.pool)
    arms: dict[bool, list[StepTimer]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as out:
        run(args, True, data, out)  # warm up kernels, allocator and caches once
        for r in range(args.repeats):
            for on in (False, True):
                arms[on].append(run(args, on, data, out))
                print(f"repeat {r + 1}/{args.repeats}, callbacks {'on ' if on else 'off'}: {arms[on][-1].total:.2f} s")

    def step_median(on: bool) -> float:
        per_run = args.steps * args.epochs
        return statistics.median(s for t in arms[on] for i, s in enumerate(t.steps) if i % per_run >= args.warmup)

    def total_median(on: bool) -> float:
        return statistics.median(t.total for t in arms[on])

    off, on = step_median(False), step_median(True)
    name = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"\n{name}, {args.precision}, preact ResNet20, batch {args.batch_size}, pool {args.pool}")
    print(f"median step   off {off * 1e3:8.2f} ms   on {on * 1e3:8.2f} ms   ratio {on / off:.3f}x")
    t_off, t_on = total_median(False), total_median(True)
    print(
        f"whole fit     off {t_off:8.2f} s    on {t_on:8.2f} s    ratio {t_on / t_off:.3f}x "
        f"({args.epochs} epochs of {args.steps} steps, epoch-end reductions included)"
    )
    with tempfile.TemporaryDirectory() as out:
        scoring = time_scoring(args, data, out)
    epoch_steps = -(-args.pool // args.batch_size)
    print(
        f"scoring pass  {scoring:.2f} s for {args.pool} examples = {scoring / (off * epoch_steps):.2f} "
        f"training epochs of {epoch_steps} steps"
    )


if __name__ == "__main__":
    main()
