"""What every per-example callback shares: dense length-N state, one cross-rank reduction, ranking files.

State lives on the module's device as tensors of length N (the full training pool), updated by scatter
from the batch's pool indices: no ``.item()``, ``.cpu()`` or Python loop per step. A statistic's
observations of one epoch go to epoch buffers that are all-reduced once, at the end of the epoch, so every
rank then holds the same state, and an example that DistributedSampler's padding repeats is counted once.

A training step of a small model is bound by the host launching kernels, so a statistic read from the
training steps keeps the steps' (detached) logits, targets and indices and scatters them in one go every
``observe_every`` steps and at the end of the epoch: each step then costs a list append, not a dozen
kernel launches.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

import lightning_proxy
from lightning_proxy.batches import INDEX_KEYS, TARGET_KEYS, describe, split_batch
from lightning_proxy.selection.ranking import Ranking, pool_identity, save_ranking


def synchronised_time(pl_module: L.LightningModule) -> float:
    """Seconds on the clock once the device's queued work is done: for timing a pass without a sync per step."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
    return time.perf_counter()


def targets_and_indices(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and pool indices of a ``(input, target, index)`` batch or a dict batch with common key names."""
    _, targets, indices = split_batch(batch)
    if targets is not None and indices is not None:
        return targets, indices
    raise ValueError(
        "per-example callbacks need the target and pool index of every example in the batch: wrap the dataset "
        "in lightning_proxy.datamodules.IndexedDataset so items are (input, target, index), or give dicts with "
        f"an index under one of {INDEX_KEYS} and a target under one of {TARGET_KEYS}; got {describe(batch)}"
    )


def step_outputs(outputs: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, targets, indices)`` of a training step: logits from its output, the rest from it or the batch."""
    if not isinstance(outputs, Mapping) or "logits" not in outputs:
        got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise RuntimeError(
            "per-example callbacks read the minibatch logits from training_step: return "
            f"{{'loss': loss, 'logits': logits}} (got {got})"
        )
    if "targets" in outputs and "indices" in outputs:
        targets, indices = outputs["targets"], outputs["indices"]
    else:
        targets, indices = targets_and_indices(batch)
    return outputs["logits"].detach(), targets, indices


class ExampleStatistic(L.Callback):
    """Base class: finds the pool size, owns the length-N state, writes ranking files on rank zero.

    Subclasses declare their cumulative state in :meth:`state_names`; it is what ``state_dict`` saves, so a
    fit resumed from an end-of-epoch checkpoint (Lightning's default) writes the same ranking as one that
    ran through. Epoch buffers are not saved: a checkpoint taken mid-epoch resumes with that epoch's
    observations made so far forgotten.

    Args:
        dirpath: folder of the ranking files (default: the trainer's log dir, else its root dir).
        num_examples: size N of the full training pool; read from the datamodule's ``pool_size`` when omitted.
        filename: stem of the file written; two instances in one trainer need two names.
        observe_every: training steps kept before they are scattered into the state. Use 1 when the
            step's logits live in memory the next step overwrites (CUDA graphs, ``torch.compile`` with
            ``mode="reduce-overhead"``).
    """

    statistic = "statistic"

    def __init__(
        self,
        dirpath: str | None = None,
        num_examples: int | None = None,
        filename: str | None = None,
        observe_every: int = 32,
    ):
        if num_examples is not None and num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        if observe_every < 1:
            raise ValueError(f"observe_every must be a positive number of steps, got {observe_every}")
        self.observe_every = observe_every
        self.dirpath = dirpath
        self.num_examples = num_examples
        self.filename = filename or self.statistic
        self.epochs_seen = 0
        self._state: dict[str, torch.Tensor] = {}
        self._epoch: dict[str, torch.Tensor] = {}
        self._pending: dict[str, torch.Tensor] | None = None
        self._steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._range_checked = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=self.filename)

    # --- state -----------------------------------------------------------------------------------------
    def state_names(self) -> dict[str, torch.dtype]:
        """Name -> dtype of the cumulative length-N tensors (saved in checkpoints); all start at zero."""
        return {}

    def epoch_names(self) -> dict[str, torch.dtype]:
        """Name -> dtype of the per-epoch length-N buffers, zeroed after each epoch's reduction."""
        return {}

    def pool_size(self, trainer: L.Trainer) -> int:
        if self.num_examples is not None:
            return self.num_examples
        size = getattr(trainer.datamodule, "pool_size", None)
        if size is None:
            raise ValueError(
                f"{type(self).__name__} needs the size N of the full training pool: pass num_examples=N, "
                "or use a datamodule with a pool_size attribute"
            )
        return int(size)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._steps, self._range_checked = [], False
        n, device = self.pool_size(trainer), pl_module.device
        if not self._state or next(iter(self._state.values())).shape[0] != n:
            self._state = {k: torch.zeros(n, dtype=dt, device=device) for k, dt in self.state_names().items()}
            self._epoch = {k: torch.zeros(n, dtype=dt, device=device) for k, dt in self.epoch_names().items()}
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the strategy moves the module to its device between setup and here
        self._state = {k: v.to(pl_module.device) for k, v in self._state.items()}
        self._epoch = {k: v.to(pl_module.device) for k, v in self._epoch.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_seen": self.epochs_seen, **{k: v.cpu() for k, v in self._state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs_seen = int(state_dict.get("epochs_seen", 0))
        tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        if self._state:
            self._restore(tensors)
        else:
            self._pending = tensors

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            if name not in self._state:
                continue
            current = self._state[name]
            if value.shape != current.shape:
                raise ValueError(
                    f"{type(self).__name__} checkpoint holds '{name}' for {value.shape[0]} examples but the pool "
                    f"has {current.shape[0]}: resume on the same training pool"
                )
            self._state[name] = value.to(current.device, current.dtype)

    def reduce_epoch(self, trainer: L.Trainer, op: str = "sum") -> dict[str, torch.Tensor]:
        """All-reduce the epoch buffers (stacked, so one collective), return them and zero the buffers.

        They travel and come back as float64, which holds every int32 and float32 value exactly: a max of
        floats is not truncated, and a sum over ranks loses nothing.
        """
        self.observe_kept_steps()
        names = list(self._epoch)
        stacked = torch.stack([self._epoch[k].to(torch.float64) for k in names])
        if trainer.world_size > 1:
            stacked = trainer.strategy.reduce(stacked, reduce_op=op)
        reduced = {k: stacked[i] for i, k in enumerate(names)}
        for buffer in self._epoch.values():
            buffer.zero_()
        self.epochs_seen += 1
        return reduced

    # --- observations from the training steps --------------------------------------------------------------
    def observe(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        """Add training steps' observations to the epoch buffers; ``indices`` are int64 on the buffers' device.

        A statistic that reads the training steps overrides this; it gets several steps concatenated.
        """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if type(self).observe is ExampleStatistic.observe:
            return
        self._steps.append(step_outputs(outputs, batch))
        if len(self._steps) >= self.observe_every:
            self.observe_kept_steps()

    def observe_kept_steps(self) -> None:
        """Scatter the steps kept since the last call into the epoch buffers."""
        if not self._steps:
            return
        logits, targets, indices = (torch.cat(parts) for parts in zip(*self._steps, strict=True))
        self._steps.clear()
        device = next(iter(self._epoch.values())).device
        indices = indices.to(device, torch.int64)
        n = next(iter(self._epoch.values())).shape[0]
        if not self._range_checked:  # one host sync per fit, before any device assert
            self.check_indices(indices, n)
            self._range_checked = True
        try:
            self.observe(logits.to(device), targets.to(device), indices)
        except (IndexError, RuntimeError):
            self.check_indices(indices, n)
            raise

    def check_indices(self, indices: torch.Tensor, n: int) -> None:
        """A clear error for pool indices outside ``[0, n)``: ``num_examples`` smaller than the pool."""
        if len(indices) and (int(indices.max()) >= n or int(indices.min()) < 0):
            raise ValueError(
                f"{type(self).__name__}: a batch holds pool index {int(indices.max())}, but num_examples is {n}: "
                "pass the size of the full training pool (every item's index is below it), or omit "
                "num_examples to read the datamodule's pool_size"
            )

    # --- output ----------------------------------------------------------------------------------------
    def output_dir(self, trainer: L.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir)

    def metadata(self, trainer: L.Trainer, pl_module: L.LightningModule, **extra: Any) -> dict[str, Any]:
        return provenance(trainer, pl_module, self.pool_size(trainer), epochs=self.epochs_seen, **extra)

    def write(
        self,
        trainer: L.Trainer,
        name: str,
        scores: torch.Tensor,
        mask: torch.Tensor,
        metadata: dict[str, Any],
    ) -> Path:
        """Rank zero writes ``<dirpath>/<name>.npz`` (examples where ``mask`` holds) atomically; others wait.

        The metadata's ``statistic`` is what was measured (the class's, unless ``metadata`` names one), not
        the file name, so rankings saved under other names still aggregate and compare as one statistic.
        """
        path = self.output_dir(trainer) / f"{name}.npz"
        if trainer.is_global_zero:
            indices = torch.nonzero(mask).squeeze(1).cpu().numpy()
            values = scores[mask].double().cpu().numpy()
            save_ranking(path, Ranking.from_scores(values, {"statistic": self.statistic, **metadata}, indices))
        trainer.strategy.barrier(f"{name}_written")
        return path


def provenance(trainer: L.Trainer, pl_module: L.LightningModule, num_examples: int, **extra: Any) -> dict[str, Any]:
    """Where a ranking came from: model, seed, dataset, pool size and fingerprint, the subset trained on,
    library version, time. A datamodule without ``targets`` or ``fingerprint`` leaves the pool unknown: the
    file then compares and aggregates, but no subset rule accepts it (a warning says so)."""
    dm = trainer.datamodule
    hparams = getattr(pl_module, "hparams", {}) or {}
    seed = os.environ.get("PL_GLOBAL_SEED")
    try:
        identity = pool_identity(dm)
    except ValueError:
        identity = {"fingerprint": "unknown", "dataset": type(dm).__name__ if dm is not None else None}
        rank_zero_warn(
            f"{type(dm).__name__ if dm is not None else 'A fit without a datamodule'} has neither `targets` nor "
            "`fingerprint`, so the ranking files record the pool as "
            "unknown and --data.subset.ranking will refuse them: give the datamodule a `targets` attribute "
            "(the pool's labels in pool order)"
        )
    subset = getattr(dm, "subset", None)
    return {
        "model": hparams.get("arch", type(pl_module).__name__),
        "seed": int(seed) if seed is not None else None,
        **identity,
        "num_examples": num_examples,
        "subset": dataclasses.asdict(subset) if dataclasses.is_dataclass(subset) else None,
        "train_examples": len(dm.train_indices) if hasattr(dm, "train_indices") else None,
        "max_epochs": trainer.max_epochs,
        "world_size": trainer.world_size,
        "library_version": lightning_proxy.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
