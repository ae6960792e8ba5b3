"""Dataset distillation by matching, on a pool held in memory: ``ipc`` synthetic images per class.

- ``distribution_matching`` (Zhao & Bilen, WACV 2023): under a freshly initialised network each iteration,
  the mean embedding of every class's real batch and of its synthetic images are pulled together (squared
  distance of the means, all classes in one forward pass each, as their code does for networks with batch
  norm). Only forward passes of random networks: cheap.
- ``gradient_matching`` (Zhao, Mopuri & Bilen, ICLR 2021, dataset condensation): from a fresh network, for
  ``outer_loop`` steps, the gradient of each class's loss on synthetic images is pulled toward the gradient
  on a real batch (their layer-wise cosine distance), then the network trains ``inner_loop`` steps on the
  synthetic set, so the match follows the network along its training.

Both augment real and synthetic batches alike with differentiable siamese augmentation (Zhao & Bilen, ICML
2021) and work as the papers do in normalised pixel space. The network is the training config's
architecture. The papers' image learning rates (1.0 and 0.1, for their ConvNet without batch norm on 32 px
images) drove the pixels of 8 px digits under a pre-activation ResNet to 10-40 times the data's range and
the sets below random real images; 0.01 for both is the default (the networks' 0.01 is the papers').

Every iteration draws its network, its real batches and its augmentation from ``(seed, iteration)`` alone,
so the state to resume is the images, their optimizer and the iteration: checkpointed to
``<output>.partial.pt`` every ``checkpoint_every`` iterations; a killed run continues from there and ends with
the same images as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lightning_proxy.datamodules.images import ImagePoolDataModule, InMemoryImages
from lightning_proxy.datamodules.synthetic import SyntheticSet, load_synthetic, save_synthetic
from lightning_proxy.files import write_atomically
from lightning_proxy.selection.ranking import pool_fingerprint
from lightning_proxy.selection.subset import SubsetSpec

METHODS = ("distribution_matching", "gradient_matching")
DEFAULT_LR = {"distribution_matching": 0.01, "gradient_matching": 0.01}  # see the module docstring
GM_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}  # Zhao et al.'s


def iteration_seed(seed: int, *parts: int) -> int:
    """A seed for one iteration (and class, step) of a run, independent of every other iteration's."""
    entropy = [seed % 2**64, *(p % 2**32 for p in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] % 2**63)


@dataclasses.dataclass(frozen=True)
class SiameseAugment:
    """Differentiable siamese augmentation: each call applies one of colour, crop, cutout, scale, rotate (and
    flip where the dataset flips), chosen from ``seed`` and parametrised per image from it, as DSA's seeded mode
    does: a real and a synthetic batch augmented with one seed get the same transformation, with parameters
    drawn from the same generator state, and gradients reach the synthetic pixels.

    Strengths are DSA's (brightness 1.0, saturation 2.0, contrast 0.5, crop 1/8, cutout 1/2, scale 1.2,
    rotation 15 degrees), on normalised images.
    """

    flip: bool = False

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator(device=x.device).manual_seed(seed)
        ops: list[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = [
            self._colour,
            self._crop,
            self._cutout,
            self._scale,
            self._rotate,
        ]
        if self.flip:
            ops.append(self._flip)
        choice = int(torch.randint(len(ops), (1,), generator=torch.Generator().manual_seed(seed)))
        return ops[choice](x, g)

    @staticmethod
    def _rand(x: torch.Tensor, g: torch.Generator, *shape: int) -> torch.Tensor:
        return torch.rand(x.shape[0], *shape, generator=g, device=x.device, dtype=x.dtype)

    def _colour(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = x + (self._rand(x, g, 1, 1, 1) - 0.5)
        if x.shape[1] > 1:
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (self._rand(x, g, 1, 1, 1) * 2.0) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._rand(x, g, 1, 1, 1) + 0.5) + mean

    def _affine(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        shift = (self._rand(x, g, 2) - 0.5) * 2 * 0.125 * 2  # up to 1/8 of the side, in [-1, 1] coordinates
        eye = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(x.shape[0], 2, 3).clone()
        eye[:, :, 2] = shift
        return self._affine(x, eye)

    def _scale(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        factors = self._rand(x, g, 2) * (1.2 - 1 / 1.2) + 1 / 1.2
        theta = torch.zeros(x.shape[0], 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 1, 1] = factors[:, 0], factors[:, 1]
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        angle = (self._rand(x, g) - 0.5) * 2 * math.radians(15)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos, sin, 0 * cos], 1), torch.stack([-sin, cos, 0 * cos], 1)], 1)
        return self._affine(x, theta)

    def _cutout(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)  # a square of half the side, centred anywhere
        top = (self._rand(x, g) * h).long().view(b, 1, 1) - ch // 2
        left = (self._rand(x, g) * w).long().view(b, 1, 1) - cw // 2
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        cut = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
        return x * (~cut).unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = self._rand(x, g, 1, 1, 1) < 0.5
        return torch.where(flip, x.flip(3), x)


def distribution_matching_loss(
    embed: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, synthetic: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Sum over classes of the squared distance between the mean embeddings of real and synthetic images.

    ``real`` is ``num_classes`` equal batches in class order, ``synthetic`` likewise (``ipc`` each).
    """
    with torch.no_grad():
        real_means = embed(real).reshape(num_classes, len(real) // num_classes, -1).mean(1)
    synthetic_means = embed(synthetic).reshape(num_classes, len(synthetic) // num_classes, -1).mean(1)
    return ((real_means - synthetic_means) ** 2).sum()


def gradient_distance(synthetic: Sequence[torch.Tensor], real: Sequence[torch.Tensor]) -> torch.Tensor:
    """Zhao et al.'s layer-wise distance: per output unit, 1 - cosine of the two gradients; 1-D (bias, norm)
    gradients are left out."""
    total = synthetic[0].new_zeros(())
    for a, b in zip(synthetic, real, strict=True):
        if a.ndim == 1:
            continue
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        total = total + (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)).sum()
    return total


def gradient_matching_loss(
    net: nn.Module,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    synthetic: torch.Tensor,
    synthetic_labels: torch.Tensor,
) -> torch.Tensor:
    """:func:`gradient_distance` between the network's cross-entropy gradients on a real and a synthetic batch
    (of one class); differentiable in the synthetic images."""
    params = [p for p in net.parameters() if p.requires_grad]
    real_grads = torch.autograd.grad(F.cross_entropy(net(real), real_labels), params)
    synthetic_grads = torch.autograd.grad(F.cross_entropy(net(synthetic), synthetic_labels), params, create_graph=True)
    return gradient_distance(synthetic_grads, [g.detach() for g in real_grads])


class _RealPool:
    """The pool's images by class, normalised batches on the device on demand."""

    def __init__(self, datamodule: ImagePoolDataModule, device: torch.device) -> None:
        pool = datamodule.train_pool
        if not isinstance(pool, InMemoryImages):
            raise ValueError(
                f"distillation reads the pool from memory; {datamodule.name}'s is a {type(pool).__name__}: "
                "use a datamodule that holds it as one tensor (e.g. a decoded folder dataset)"
            )
        self.images = pool.images.to(device)
        self.targets = np.asarray(pool.targets, dtype=np.int64)
        self.num_classes = len(pool.classes)
        self.by_class = [
            torch.as_tensor(np.flatnonzero(self.targets == c), device=device) for c in range(self.num_classes)
        ]
        empty = [c for c, idx in enumerate(self.by_class) if len(idx) == 0]
        if empty:
            raise ValueError(f"{datamodule.name}'s pool has no example of classes {empty}: cannot distill them")
        self.mean = torch.tensor(datamodule.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(datamodule.std, device=device).view(1, -1, 1, 1)

    def normalised(self, index: torch.Tensor) -> torch.Tensor:
        return (self.images[index].float() / 255 - self.mean) / self.std

    def batch(self, per_class: int, seed: int, classes: Sequence[int] | None = None) -> torch.Tensor:
        """``per_class`` random images of each class (all its images where it has fewer), in class order."""
        g = torch.Generator().manual_seed(seed)
        chosen = []
        for c in classes if classes is not None else range(self.num_classes):
            idx = self.by_class[c]
            chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class].to(idx.device)])
        return self.normalised(torch.cat(chosen))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that makes a distillation (and its file): a checkpoint or an output with other settings is
    another run's."""

    method: str
    ipc: int
    iterations: int
    lr: float
    init: str
    seed: int
    batch_real: int
    augment: bool
    flip: bool
    outer_loop: int
    inner_loop: int
    net_lr: float
    network: dict[str, Any]
    dataset: str
    source_fingerprint: str
    source_size: int


def _refresh_norm_statistics(net: nn.Module, images: torch.Tensor) -> None:
    """Batch-norm layers normalise with the statistics of ``images`` (a real batch of every class), as
    Zhao et al. freeze them for matching."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch gives exactly its statistics
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()


class Distillation:
    """One run of :func:`distill`: the synthetic images, their optimizer and the step of either method."""

    def __init__(self, settings: Settings, real: _RealPool, make_net: Callable[[], nn.Module], device: torch.device):
        self.s, self.real, self.make_net, self.device = settings, real, make_net, device
        self.augment = SiameseAugment(flip=settings.flip)
        k, ipc = real.num_classes, settings.ipc
        if settings.init == "real":
            init = real.batch(ipc, iteration_seed(settings.seed, -1))
            if len(init) != k * ipc:
                raise ValueError(f"init real needs {ipc} images of every class; a class of the pool has fewer")
        else:
            g = torch.Generator().manual_seed(iteration_seed(settings.seed, -1))
            init = torch.randn(k * ipc, *real.images.shape[1:], generator=g).to(device)
        self.images = init.clone().requires_grad_(True)
        self.labels = torch.arange(k, device=device).repeat_interleave(ipc)
        self.optimizer = torch.optim.SGD([self.images], lr=settings.lr, momentum=0.5)

    def _aug(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        return self.augment(x, seed) if self.s.augment else x

    def _net(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            net = self.make_net()
        return net.to(self.device)

    def step(self, iteration: int) -> float:
        """One iteration; returns its matching loss."""
        seed = iteration_seed(self.s.seed, iteration)
        if self.s.method == "distribution_matching":
            return self._distribution_step(seed)
        return self._gradient_step(seed)

    def _update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        (self.images.grad,) = torch.autograd.grad(loss, [self.images])
        self.optimizer.step()

    def _distribution_step(self, seed: int) -> float:
        net = self._net(seed)
        net.train()  # batch statistics of each batch, as Zhao & Bilen's code for networks with batch norm
        for p in net.parameters():
            p.requires_grad_(False)
        k = self.real.num_classes
        per_class = min(self.s.batch_real, min(len(idx) for idx in self.real.by_class))
        real = self.real.batch(per_class, seed + 1)
        aug = iteration_seed(seed, 2)
        loss = distribution_matching_loss(net.forward_features, self._aug(real, aug), self._aug(self.images, aug), k)
        self._update(loss)
        return float(loss.detach())

    def _gradient_step(self, seed: int) -> float:
        net = self._net(seed)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.s.net_lr, momentum=0.5)
        k, ipc = self.real.num_classes, self.s.ipc
        total = 0.0
        for outer in range(self.s.outer_loop):
            step_seed = iteration_seed(seed, outer)
            _refresh_norm_statistics(net, self.real.batch(16, iteration_seed(step_seed, -1)))
            loss = self.images.new_zeros(())
            for c in range(k):
                real = self.real.batch(self.s.batch_real, iteration_seed(step_seed, c), classes=[c])
                aug = iteration_seed(step_seed, k + c)
                synthetic = self.images[c * ipc : (c + 1) * ipc]
                loss = loss + gradient_matching_loss(
                    net,
                    self._aug(real, aug),
                    torch.full((len(real),), c, device=self.device),
                    self._aug(synthetic, aug),
                    self.labels[c * ipc : (c + 1) * ipc],
                )
            self._update(loss)
            total += float(loss.detach())
            if outer == self.s.outer_loop - 1:
                break
            net.train()
            frozen = self.images.detach()
            for inner in range(self.s.inner_loop):
                net_optimizer.zero_grad(set_to_none=True)
                x = self._aug(frozen, iteration_seed(step_seed, 2 * k + inner))
                F.cross_entropy(net(x), self.labels).backward()
                net_optimizer.step()
        return total / self.s.outer_loop

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images.detach().cpu(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])

    def pixels(self) -> np.ndarray:
        """The synthetic images in the pool's pixel units (``[0, 1]`` for 0-255)."""
        with torch.no_grad():
            return (self.images * self.real.std + self.real.mean).cpu().numpy().astype(np.float32)


def partial_path(output: Path) -> Path:
    return output.with_name(output.stem + ".partial.pt")


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _made_already(output: Path, wanted: dict[str, Any]) -> bool:
    """Whether ``output`` holds the set these settings make; a set made with other settings is refused."""
    if not output.is_file():
        return False
    made = load_synthetic(output)
    if {key: made.metadata.get(key) for key in wanted} == wanted:
        return True
    raise ValueError(
        f"{output} holds a synthetic set made with other settings ({_differences(made.metadata, wanted)}): "
        "choose another output or delete it"
    )


def _distillable(
    training: Any,
    output: Path,
    method: str,
    init: str,
    ipc: int,
    iterations: int,
    checkpoint_every: int,
    batch_real: int,
) -> ImagePoolDataModule:
    """The training's datamodule, once the options and its pool are known to make a synthetic set; else one line."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if init not in ("real", "noise"):
        raise ValueError(f"init must be 'real' or 'noise', got {init!r}")
    if ipc < 1 or iterations < 0 or checkpoint_every < 1 or batch_real < 1:
        raise ValueError(
            f"ipc, batch_real and checkpoint_every must be at least 1 and iterations at least 0; got ipc {ipc}, "
            f"batch_real {batch_real}, checkpoint_every {checkpoint_every}, iterations {iterations}"
        )
    if output.suffix != ".npz":
        raise ValueError(f"--output names the synthetic set's .npz file, got {output}")
    datamodule = training.datamodule()
    images = isinstance(datamodule, ImagePoolDataModule)  # asked before a text pool would be tokenised
    if not images or not isinstance(datamodule.train_pool, InMemoryImages):
        what = type(datamodule.train_pool if images else datamodule).__name__
        raise ValueError(
            f"distillation optimises pixels of a pool held in memory as one tensor; {datamodule.name}'s is a "
            f"{what} (text, or a folder dataset not decoded): it cannot be distilled"
        )
    if datamodule.synthetic is not None or datamodule.subset != SubsetSpec():
        raise ValueError(
            f"distillation makes a set from the whole pool of {training.config}: drop data.synthetic and "
            "data.subset from its training"
        )
    return datamodule


def distill(
    training: Any,
    output: str | Path,
    method: Literal["distribution_matching", "gradient_matching"] = "distribution_matching",
    ipc: int = 10,
    iterations: int = 1000,
    lr: float | None = None,
    init: Literal["real", "noise"] = "real",
    seed: int = 0,
    batch_real: int = 256,
    augment: bool = True,
    outer_loop: int | None = None,
    inner_loop: int | None = None,
    net_lr: float = 0.01,
    checkpoint_every: int = 50,
    device: str = "auto",
    progress: bool = True,
    args: dict[str, Any] | None = None,
) -> Path:
    """Make ``ipc`` synthetic images per class of a training's pool and save them (a ``.npz``).

    An ``output`` already made with the same settings is returned as it is; a checkpoint
    left by a killed run with the same settings is resumed. ``lr`` is the synthetic images' (SGD, momentum
    0.5, normalised pixels); ``outer_loop`` / ``inner_loop`` (gradient matching)
    to Zhao et al.'s for the nearest ``ipc`` of theirs. ``iterations`` 0 with ``init`` ``real`` is ``ipc``
    random real images per class: the field's baseline.

    Args:
        training: the training config (a ``lightning-proxy fit`` YAML) whose pool is distilled and whose
            model architecture is the network (or, from Python, a ``Training``).
        output: the synthetic set's file (``.npz``); its checkpoint is ``<output stem>.partial.pt``.
        method: ``distribution_matching`` or ``gradient_matching``.
        ipc: synthetic images per class.
        iterations: updates of the synthetic images.
        lr: learning rate of the synthetic images (SGD, momentum 0.5, on normalised pixels); default 0.01.
        init: start from ``real`` images of each class (seeded) or from ``noise``.
        seed: seed of the start and of every iteration's networks, batches and augmentation.
        batch_real: real images per class in each matching batch.
        augment: differentiable siamese augmentation of real and synthetic batches alike.
        outer_loop: gradient matching: matching steps per fresh network (default: Zhao et al.'s for ``ipc``).
        inner_loop: gradient matching: the network's training steps on the synthetic set between them.
        net_lr: gradient matching: the network's learning rate (SGD, momentum 0.5).
        checkpoint_every: iterations between checkpoints of a run in progress.
        device: ``auto`` (a GPU where there is one), ``cpu``, ``cuda``, ``cuda:1``, ...
        progress: show a progress bar.
        args: overrides of the training config, by the fit command's keys without dashes.
    """
    if isinstance(training, str | os.PathLike):
        from lightning_proxy.training import Training

        training = Training(str(training), args or {}, "args")
    elif args:
        training = training.with_overrides(args, "args")
    output = Path(output)
    datamodule = _distillable(training, output, method, init, ipc, iterations, checkpoint_every, batch_real)
    model = training.resolved.model
    network = {"arch": model.arch, "arch_kwargs": dict(model.arch_kwargs or {})}
    loops = GM_LOOPS[min(GM_LOOPS, key=lambda n: (abs(n - ipc), n))]
    settings = Settings(
        method=method,
        ipc=ipc,
        iterations=iterations,
        lr=float(DEFAULT_LR[method] if lr is None else lr),
        init=init,
        seed=seed,
        batch_real=batch_real,
        augment=augment,
        flip=datamodule.flip_p > 0,
        outer_loop=outer_loop or (loops[0] if method == "gradient_matching" else 0),
        inner_loop=inner_loop or (loops[1] if method == "gradient_matching" else 0),
        net_lr=net_lr,
        network=network,
        dataset=datamodule.name,
        source_fingerprint=pool_fingerprint(datamodule.targets),
        source_size=datamodule.pool_size,
    )
    wanted = dataclasses.asdict(settings)
    if _made_already(output, wanted):
        return output
    dev = _device(device)
    real = _RealPool(datamodule, dev)
    from lightning_proxy.models import build_model

    def make_net() -> nn.Module:
        return build_model(model.arch, real.num_classes, datamodule.in_channels, **network["arch_kwargs"])

    run = Distillation(settings, real, make_net, dev)
    start, seconds = 0, 0.0
    partial = partial_path(output)
    if partial.is_file():
        state = torch.load(partial, map_location="cpu", weights_only=True)
        if state["settings"] != wanted:
            raise ValueError(
                f"{partial} is the checkpoint of a distillation with other settings "
                f"({_differences(state['settings'], wanted)}): delete it to start this one"
            )
        run.load_state_dict(state)
        start, seconds = int(state["iteration"]), float(state["seconds"])
    began = time.perf_counter()
    bar = tqdm(
        range(start, iterations),
        initial=start,
        total=iterations,
        desc=f"{method} ipc {ipc}",
        disable=not progress,
        dynamic_ncols=True,
    )
    loss = state["loss"] if start else None
    for iteration in bar:
        loss = run.step(iteration)
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        done = iteration + 1
        if done % checkpoint_every == 0 and done < iterations:
            spent = seconds + time.perf_counter() - began
            state = {**run.state_dict(), "settings": wanted, "iteration": done, "seconds": spent, "loss": loss}
            write_atomically(partial, lambda tmp, state=state: torch.save(state, tmp))
    bar.close()
    metadata = {**wanted, "classes": [str(c) for c in datamodule.train_pool.classes], "loss": loss}
    metadata["seconds"] = seconds + time.perf_counter() - began
    save_synthetic(output, SyntheticSet(run.pixels(), run.labels.cpu().numpy(), metadata))
    partial.unlink(missing_ok=True)
    if progress:
        how = f", matching loss {loss:.4g}" if loss is not None else ""
        print(f"distill wrote {output}: {len(run.labels)} images, {metadata['seconds']:.0f} s{how}", flush=True)
    return output


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = [key for key in wanted if found.get(key) != wanted[key]]
    return ", ".join(f"{key} {found.get(key)!r} here, {wanted[key]!r} asked" for key in keys)
