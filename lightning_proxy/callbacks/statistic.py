"""What the statistics of the training steps share: dense length-N state and one cross-rank reduction an epoch.

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

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from lightning_proxy.callbacks.writer import RankingWriter, provenance, targets_and_indices


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


class ExampleStatistic(RankingWriter):
    """Base class of the statistics of the training steps: owns the length-N state, reduces it once per epoch.

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

    def __init__(
        self,
        dirpath: str | None = None,
        num_examples: int | None = None,
        filename: str | None = None,
        observe_every: int = 32,
    ):
        super().__init__(dirpath, num_examples, filename)
        if observe_every < 1:
            raise ValueError(f"observe_every must be a positive number of steps, got {observe_every}")
        self.observe_every = observe_every
        self.epochs_seen = 0
        self._state: dict[str, torch.Tensor] = {}
        self._epoch: dict[str, torch.Tensor] = {}
        self._pending: dict[str, torch.Tensor] | None = None
        self._steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._range_checked = False

    # --- state -----------------------------------------------------------------------------------------
    def state_names(self) -> dict[str, torch.dtype]:
        """Name -> dtype of the cumulative length-N tensors (saved in checkpoints); all start at zero."""
        return {}

    def epoch_names(self) -> dict[str, torch.dtype]:
        """Name -> dtype of the per-epoch length-N buffers, zeroed after each epoch's reduction."""
        return {}

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

        Every statistic defines it; it gets several steps concatenated.
        """
        raise NotImplementedError

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
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

    def metadata(self, trainer: L.Trainer, pl_module: L.LightningModule, **extra: Any) -> dict[str, Any]:
        """The ranking's provenance, with the epochs this statistic observed."""
        return provenance(trainer, pl_module, self.pool_size(trainer), epochs=self.epochs_seen, **extra)
