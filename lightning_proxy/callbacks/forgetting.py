"""Forgetting events (Toneva et al., 2019), from the minibatch predictions training already computes."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from lightning_proxy.callbacks.base import ExampleStatistic

NEVER_LEARNED = ("infinite", "epochs", "zero")


class ForgettingEvents(ExampleStatistic):
    """Counts, for every example, correct -> incorrect transitions between consecutive presentations.

    A presentation is an epoch: an example is correct in an epoch when the training minibatch classified it
    correctly (at any of its presentations that epoch, should a sampler repeat it). An example never
    classified correctly has no event; the forgetting and SVP papers treat it as infinitely forgettable
    (``never_learned="infinite"``, the default), DeepCore as unforgettable (``"zero"``), and ``"epochs"``
    scores it as epochs + 1, above any possible count but finite. The policy is stored in the metadata.
    Examples never presented (outside the training subset) are left out. Writes ``forgetting.npz``;
    a higher score is harder.

    Args:
        dirpath: folder of the ranking file (default: the trainer's log dir).
        num_examples: size of the full training pool (default: the datamodule's ``pool_size``).
        never_learned: score of examples never classified correctly: ``infinite``, ``epochs`` or ``zero``.
        filename: file stem (two instances in one trainer need two names).
        observe_every: training steps kept before they are scattered into the state (see ``ExampleStatistic``).
    """

    statistic = "forgetting"

    def __init__(
        self,
        dirpath: str | None = None,
        num_examples: int | None = None,
        never_learned: Literal["infinite", "epochs", "zero"] = "infinite",
        filename: str | None = None,
        observe_every: int = 32,
    ) -> None:
        super().__init__(dirpath, num_examples, filename, observe_every)
        if never_learned not in NEVER_LEARNED:
            raise ValueError(f"never_learned must be one of {NEVER_LEARNED}, got {never_learned!r}")
        self.never_learned = never_learned

    def state_names(self) -> dict[str, torch.dtype]:
        # last: 0 = never presented, 1 = wrong at its latest presentation, 2 = right
        return {"last": torch.int32, "forgets": torch.int32, "learned": torch.bool, "presentations": torch.int32}

    def epoch_names(self) -> dict[str, torch.dtype]:
        return {"code": torch.int32}  # this epoch's code, same meaning as last

    def observe(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        code = 1 + (logits.argmax(dim=1) == targets).int()
        self._epoch["code"].scatter_reduce_(0, indices, code, reduce="amax")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        s = self._state
        code = self.reduce_epoch(trainer, op="max")["code"].to(torch.int32)
        presented, correct = code > 0, code == 2
        s["forgets"] += (presented & (s["last"] == 2) & ~correct).int()
        s["last"] = torch.where(presented, code, s["last"])
        s["learned"] |= correct
        s["presentations"] += presented.int()

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores with the never-learned policy applied, and the mask of examples ever presented."""
        s = self._state
        never = {"infinite": float("inf"), "epochs": float(self.epochs_seen + 1), "zero": 0.0}[self.never_learned]
        forgets = s["forgets"].double()
        return torch.where(s["learned"], forgets, torch.full_like(forgets, never)), s["last"] > 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores, presented = self.scores()
        meta = self.metadata(trainer, pl_module, direction="higher_is_harder", never_learned=self.never_learned)
        self.write(trainer, self.filename, scores, presented, meta)
