"""The LightningModule: any registered model, Adam/SGD/RMSprop, one-cycle or step schedule, label smoothing.

``training_step`` returns the per-example logits, targets and pool indices (detached) next to the loss,
so the per-example callbacks need no second forward pass. A callback may weigh each example's loss
(``loss_weights``, one weight per pool index), and every training counts and logs its example passes
(``train/examples_seen``, summed over ranks), so the cost of a pruned training compares without arithmetic.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from lightning_proxy.batches import INPUT_KEYS, TARGET_KEYS, describe, split_batch
from lightning_proxy.models import build_model


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x, y, indices = split_batch(batch)
    if x is None or y is None:
        raise ValueError(
            f"ClassificationModule reads (input, target[, index]) batches or dicts with keys from {INPUT_KEYS} "
            f"and {TARGET_KEYS}; got {describe(batch)}"
        )
    return x, y, indices


class ClassificationModule(L.LightningModule):
    """Image classification with everything the two papers vary, configurable from YAML.

    Args:
        arch: a name from :func:`lightning_proxy.models.available_models` (``xresnet50``,
            ``preact_resnet20``, ``torchvision/resnet18``, ``timm/<name>``, ...).
        num_classes: set from the datamodule by the CLI.
        in_channels: set from the datamodule by the CLI.
        arch_kwargs: extra model arguments, e.g. ``{"stem_widths": [32, 48]}`` for xresnets.
        optimizer: ``adam`` (decoupled weight decay, as fastai), ``sgd`` (momentum, L2) or ``rmsprop``.
        lr: peak learning rate.
        weight_decay: weight decay (not applied to norm layers and biases unless ``decay_norm_and_bias``).
        momentum: SGD and RMSprop momentum; Adam's beta1.
        beta2: Adam's beta2 (fastai's 0.99) and RMSprop's alpha.
        eps: optimizer epsilon.
        nesterov: Nesterov momentum for SGD.
        decay_norm_and_bias: apply weight decay to 1-D parameters too (He et al. do; fastai does not).
        schedule: ``one_cycle`` (per step), ``multistep`` (per epoch: warm-up, then x ``gamma`` at each
            milestone, as SVP's CIFAR runs), ``cosine`` (per step) or ``constant``.
        pct_start: share of steps spent warming up in one-cycle.
        div_factor: one-cycle starting lr = lr / div_factor.
        final_div_factor: one-cycle final lr = starting lr / final_div_factor.
        milestones: epochs at which ``multistep`` multiplies the lr by ``gamma``.
        gamma: the ``multistep`` factor.
        warmup_epochs: ``multistep`` epochs at ``lr * warmup_factor`` first.
        warmup_factor: the warm-up multiplier.
        label_smoothing: cross-entropy label smoothing (the 000 paper's "on" is 0.1).
        channels_last: keep images and weights in channels-last memory format (faster convs with AMP on GPUs).
    """

    def __init__(
        self,
        arch: str = "preact_resnet20",
        num_classes: int = 10,
        in_channels: int = 3,
        arch_kwargs: dict[str, Any] | None = None,
        optimizer: Literal["adam", "sgd", "rmsprop"] = "sgd",
        lr: float = 0.1,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        beta2: float = 0.99,
        eps: float = 1e-6,
        nesterov: bool = False,
        decay_norm_and_bias: bool = False,
        schedule: Literal["one_cycle", "multistep", "cosine", "constant"] = "one_cycle",
        pct_start: float = 0.3,
        div_factor: float = 10.0,
        final_div_factor: float = 1e4,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        warmup_epochs: int = 0,
        warmup_factor: float = 0.1,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if optimizer not in ("adam", "sgd", "rmsprop"):
            raise ValueError(f"optimizer must be one of adam, sgd, rmsprop; got {optimizer!r}")
        if schedule not in ("one_cycle", "multistep", "cosine", "constant"):
            raise ValueError(f"schedule must be one_cycle, multistep, cosine or constant; got {schedule!r}")
        self.save_hyperparameters()
        self.model = build_model(arch, num_classes=num_classes, in_channels=in_channels, **(arch_kwargs or {}))
        sparse = any(getattr(m, "sparse", False) for m in self.model.modules() if isinstance(m, torch.nn.EmbeddingBag))
        if sparse and (optimizer != "sgd" or momentum or weight_decay):
            raise ValueError(
                f"{arch} with sparse gradients updates with plain SGD (fastText's updates): give --model.optimizer sgd "
                f"--model.momentum 0 --model.weight_decay 0, or arch_kwargs sparse false; got {optimizer}, momentum "
                f"{momentum}, weight decay {weight_decay}"
            )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.loss_weights: torch.Tensor | None = None  # one weight per pool index, set by a callback; None: all 1
        self.examples_seen = 0  # forward and backward passes of one example, summed over ranks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._prepare(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embeddings (for greedy k-centers)."""
        return self.model.forward_features(self._prepare(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from penultimate-layer embeddings."""
        return self.model.forward_head(features)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)

    def training_loss(self, logits: torch.Tensor, y: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
        """The batch's loss: the mean, or with ``loss_weights`` the mean of the weighted per-example losses (the
        rescaling of InfoBatch's kept examples keeps the expected gradient)."""
        if self.loss_weights is None or indices is None:
            return self._loss(logits, y)
        losses = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing, reduction="none")
        return (losses * self.loss_weights.to(losses.device)[indices.to(losses.device)]).mean()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y, indices = _split(batch)
        logits = self(x)
        loss = self.training_loss(logits, y, indices)
        ranks = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        self.examples_seen += y.shape[0] * ranks
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        out = {"loss": loss, "logits": logits.detach(), "targets": y}
        if indices is not None:
            out["indices"] = indices
        return out

    def on_train_epoch_end(self) -> None:
        self.log("train/examples_seen", float(self.examples_seen))  # once an epoch: a count, not a step's value

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["examples_seen"] = self.examples_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.examples_seen = int(checkpoint.get("examples_seen", 0))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _ = _split(batch)
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", self._loss(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _ = _split(batch)
        logits = self(x)
        self.val_acc(logits, y)
        self.log("test/loss", self._loss(logits, y), sync_dist=True)
        self.log("test/acc", self.val_acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Logits, penultimate features, targets and pool indices of a scoring batch."""
        x, y, indices = _split(batch)
        features = self.forward_features(x)
        out = {"logits": self.forward_head(features), "features": features, "targets": y}
        if indices is not None:
            out["indices"] = indices
        return out

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 or hp.decay_norm_and_bias else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": hp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if hp.optimizer == "adam":
            opt = torch.optim.AdamW(groups, lr=hp.lr, betas=(hp.momentum, hp.beta2), eps=hp.eps)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov)
        else:
            opt = torch.optim.RMSprop(groups, lr=hp.lr, alpha=hp.beta2, eps=hp.eps, momentum=hp.momentum)
        if hp.schedule == "constant":
            return opt
        if hp.schedule == "multistep":
            milestones = sorted(hp.milestones or [])

            def factor(epoch: int) -> float:
                if epoch < hp.warmup_epochs:
                    return hp.warmup_factor
                return hp.gamma ** sum(epoch >= m for m in milestones)

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ValueError(f"schedule={hp.schedule} needs a finite run: set trainer.max_epochs or max_steps")
        total = max(int(steps), 1)
        if hp.schedule == "one_cycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt,
                max_lr=hp.lr,
                total_steps=total,
                # a warm-up shorter than a step is no warm-up (and exactly one step divides by zero in torch)
                pct_start=hp.pct_start if hp.pct_start * total > 1 else 0.0,
                div_factor=hp.div_factor,
                final_div_factor=hp.final_div_factor,
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
