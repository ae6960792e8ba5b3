"""Online pruning inside one training: InfoBatch's rule (Qin et al., ICLR 2024) as a Lightning callback.

Each epoch trains on a choice of the training subset made from the losses of the epochs before: a share
``ratio`` of the examples whose latest loss is below the mean sits the epoch out, drawn at random, and the
kept low-loss ones weigh ``1 / (1 - ratio)`` in the loss, so the expected gradient is the unpruned one. The
first epoch (no losses yet) and the last ``1 - delta`` of the epochs train on everything. ``policy="random"``
drops the same share of all examples instead, unweighted: the baseline an online rule has to beat.

The losses are the training steps' own (:class:`~lightning_proxy.callbacks.statistic.ExampleStatistic` keeps
their logits on the device and reduces them once an epoch over the ranks), so every rank holds the same
losses and, from a generator seeded by the run's seed and the epoch, makes the same choice; the datamodule
(:meth:`~lightning_proxy.datamodules.pool.PoolDataModule.choose_each_epoch`) shards it. A step-interval
learning-rate schedule advances by the epoch's progress, so one-cycle and cosine schedules end where they
would without pruning. What the training saw is written as a ranking (``online_loss.npz``: each example's
loss averaged over the epochs it was presented), a static set from dynamic pruning.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from lightning_proxy.callbacks.dynamics import EpochAverage

POLICIES = ("infobatch", "random")


def prune(
    last: torch.Tensor, seen: torch.Tensor, ratio: float, policy: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's rule on the training subset: which examples sit out, and every example's loss weight.

    ``infobatch``: each example seen before whose latest loss (``last``) is below the mean of the seen ones
    sits out with probability ``ratio``; if kept it weighs ``1 / (1 - ratio)``, so its expected weight is 1.
    ``random``: every example sits out with probability ``ratio``, weight 1. At least one example stays.
    """
    if policy == "infobatch":
        prunable = seen & (last < last[seen].mean()) if seen.any() else seen.clone()
    else:
        prunable = torch.ones_like(seen)
    dropped = prunable & (torch.rand(len(last), generator=generator) < ratio)
    if dropped.all():
        dropped[0] = False
    weights = torch.ones(len(last))
    if policy == "infobatch":
        weights[prunable & ~dropped] = 1.0 / (1.0 - ratio)
    return dropped, weights


class OnlinePruning(EpochAverage):
    """Prunes well-learned examples each epoch (InfoBatch), rescaling the kept ones; writes ``online_loss.npz``.

    Needs a datamodule with ``choose_each_epoch`` (every :class:`~lightning_proxy.datamodules.pool.PoolDataModule`)
    and a module with ``loss_weights`` (:class:`~lightning_proxy.module.ClassificationModule`). Lightning is told
    to rebuild the training loader every epoch (``reload_dataloaders_every_n_epochs=1``), which makes each
    epoch's length, progress bar and validation follow its choice.

    Args:
        ratio: share of the below-mean-loss examples left out of an epoch (InfoBatch's 0.5); with
            ``policy="random"``, the share of all examples.
        delta: share of the epochs that may be pruned; the rest, at the end, train on everything (0.875).
        policy: ``infobatch`` (low-loss examples, rescaled) or ``random`` (any example, not rescaled).
        seed: seed of the draws (default: the run's ``seed_everything``).
        write_ranking: write ``online_loss.npz`` at the end of the fit.
        dirpath, num_examples, filename, observe_every: as for every statistic (``ExampleStatistic``).
    """

    statistic = "online_loss"
    direction = "higher_is_harder"

    def __init__(
        self,
        ratio: float = 0.5,
        delta: float = 0.875,
        policy: Literal["infobatch", "random"] = "infobatch",
        seed: int | None = None,
        write_ranking: bool = True,
        dirpath: str | None = None,
        num_examples: int | None = None,
        filename: str | None = None,
        observe_every: int = 32,
    ) -> None:
        super().__init__(dirpath, num_examples, filename, observe_every)
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"OnlinePruning ratio must be in [0, 1), got {ratio}")
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"OnlinePruning delta must be in [0, 1], got {delta}")
        if policy not in POLICIES:
            raise ValueError(f"OnlinePruning policy must be one of {POLICIES}, got {policy!r}")
        self.ratio, self.delta, self.policy, self.seed = ratio, delta, policy, seed
        self.write_ranking = write_ranking
        self._trainer: L.Trainer | None = None
        self._reduced_epoch: int | None = None

    def state_names(self) -> dict[str, torch.dtype]:
        return {**super().state_names(), "last": torch.float64}  # the latest epoch's loss of each example

    def values(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    # --- the seams: the datamodule's choice and the module's weights --------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "choose_each_epoch"):
            raise TypeError(
                f"OnlinePruning chooses each epoch's examples through the datamodule's choose_each_epoch, which "
                f"{type(datamodule).__name__} lacks: use a lightning_proxy PoolDataModule (or TensorPoolDataModule)"
            )
        if not hasattr(pl_module, "loss_weights"):
            raise TypeError(
                f"OnlinePruning rescales the kept examples' losses through the module's loss_weights, which "
                f"{type(pl_module).__name__} lacks: use lightning_proxy's ClassificationModule or give yours a "
                "loss_weights tensor (one weight per pool index) that its training_step multiplies the losses by"
            )
        if not trainer.reload_dataloaders_every_n_epochs:
            trainer.reload_dataloaders_every_n_epochs = 1
        self._trainer = trainer
        datamodule.choose_each_epoch(self.choose)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and getattr(trainer.datamodule, "epoch_chooser", None) == self.choose:
            trainer.datamodule.choose_each_epoch(None)
            pl_module.loss_weights = None

    def prunes(self, epoch: int, max_epochs: int) -> bool:
        """Whether ``epoch`` is pruned: not the first (no losses yet), nor in the last ``1 - delta`` of the epochs."""
        return self.ratio > 0 and 0 < epoch < self.delta * max_epochs

    def choose(self, epoch: int, train_indices: np.ndarray) -> np.ndarray:
        """This epoch's pool indices, and the module's loss weights set to match (a pure function of the state)."""
        trainer, module = self._trainer, self._trainer.lightning_module
        module.loss_weights = None
        if not self.prunes(epoch, trainer.max_epochs) or not self._state:
            return train_indices
        pool = torch.as_tensor(train_indices, dtype=torch.int64)
        on_device = pool.to(self._state["last"].device)
        seen, last = self._state["epochs"][on_device].cpu() > 0, self._state["last"][on_device].cpu()
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if self.seed is None else self.seed
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        dropped, weights = prune(last, seen, self.ratio, self.policy, generator)
        if self.policy == "infobatch":
            module.loss_weights = torch.ones(self.pool_size(trainer)).index_copy_(0, pool, weights).to(module.device)
        return pool[~dropped].numpy()

    # --- the losses: reduced at the epoch's last training batch, before validation and any checkpoint ----------
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._advance_schedules(trainer, trainer.current_epoch + batch_idx / max(trainer.num_training_batches, 1))

    def _advance_schedules(self, trainer: L.Trainer, progress: float) -> None:
        """Step step-interval schedules to where ``progress`` (in epochs) puts them in the unpruned training: a
        pruned epoch has fewer steps, and the schedule still ends where it was planned to."""
        if trainer.max_steps != -1 or not trainer.max_epochs or not trainer.lr_scheduler_configs:
            return
        datamodule = trainer.datamodule
        planned = math.ceil(
            datamodule.batches_per_epoch(len(datamodule.train_indices)) / trainer.accumulate_grad_batches
        )
        total = planned * trainer.max_epochs
        target = min(total, round(total * progress / trainer.max_epochs))
        for config in trainer.lr_scheduler_configs:
            if config.interval == "step":
                while config.scheduler.last_epoch < target:
                    config.scheduler.step()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if batch_idx + 1 >= trainer.num_training_batches:
            self._reduce(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reduce(trainer)  # an epoch that ended before its last batch
        self._advance_schedules(trainer, trainer.current_epoch + 1)

    def _reduce(self, trainer: L.Trainer) -> None:
        if self._reduced_epoch == trainer.current_epoch:
            return
        self._reduced_epoch = trainer.current_epoch
        presented, mean = self.average_epoch(trainer)
        self._state["last"] = torch.where(presented, mean, self._state["last"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.write_ranking:
            super().on_train_end(trainer, pl_module)

    def metadata(self, trainer: L.Trainer, pl_module: L.LightningModule, **extra: Any) -> dict[str, Any]:
        rule = {"ratio": self.ratio, "delta": self.delta, "policy": self.policy}
        return super().metadata(trainer, pl_module, online_pruning=rule, **extra)
