"""Training dynamics at no extra forward pass: EL2N and the area under the margin, averaged over epochs."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from lightning_proxy.callbacks.statistic import ExampleStatistic


class EpochAverage(ExampleStatistic):
    """A per-presentation value, averaged within each epoch, then over the epochs an example was presented.

    Averaging within the epoch first gives every epoch the same weight, however often a sampler (or
    DistributedSampler's padding) presented the example in it. Subclasses define :meth:`values`.
    """

    direction = "higher_is_harder"

    def values(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_names(self) -> dict[str, torch.dtype]:
        return {"total": torch.float64, "epochs": torch.int32}

    def epoch_names(self) -> dict[str, torch.dtype]:
        return {"sum": torch.float32, "count": torch.float32}

    def observe(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        values = self.values(logits.float(), targets)
        self._epoch["sum"].index_add_(0, indices, values)
        self._epoch["count"].index_add_(0, indices, torch.ones_like(values))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.average_epoch(trainer)

    def average_epoch(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduce the epoch over the ranks and add its per-example means to the average; the examples presented
        in it and their means."""
        epoch = self.reduce_epoch(trainer, op="sum")
        presented = epoch["count"] > 0
        mean = epoch["sum"] / epoch["count"].clamp(min=1)
        self._state["total"] += torch.where(presented, mean, 0.0)
        self._state["epochs"] += presented.int()
        return presented, mean

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Average over epochs, and the mask of examples ever presented."""
        epochs = self._state["epochs"]
        return self._state["total"] / epochs.clamp(min=1), epochs > 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores, presented = self.scores()
        self.write(
            trainer, self.filename, scores, presented, self.metadata(trainer, pl_module, direction=self.direction)
        )


class EL2N(EpochAverage):
    """Error L2-norm (Paul et al., 2021): ``||softmax(logits) - onehot(y)||_2``; higher is harder.

    Writes ``el2n.npz``. Paul et al. score early in training over several seeds: train for a few epochs
    (``trainer.max_epochs``) and aggregate seeds with ``lightning-proxy aggregate-rankings``.
    """

    statistic = "el2n"

    def values(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        error = logits.softmax(dim=1) - F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return error.norm(dim=1)


class AreaUnderMargin(EpochAverage):
    """Area under the margin (Pleiss et al., 2020): the assigned logit minus the largest other, averaged.

    Writes ``aum.npz``. A higher score is easier; low and negative scores flag hard or mislabelled examples.
    """

    statistic = "aum"
    direction = "higher_is_easier"

    def values(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assigned = logits.gather(1, targets[:, None]).squeeze(1)
        others = logits.scatter(1, targets[:, None], float("-inf"))
        return assigned - others.max(dim=1).values
