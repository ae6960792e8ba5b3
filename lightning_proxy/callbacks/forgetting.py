"""Forgetting events (Toneva et al., 2019), from the minibatch predictions training already computes."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch

from lightning_proxy.callbacks.statistic import ExampleStatistic

NEVER_LEARNED = ("infinite", "epochs", "zero")


class ForgettingEvents(ExampleStatistic):
    """Counts, for every example, correct -> incorrect transitions between consecutive presentations.

    With ``presentations="epoch"`` (the default) a presentation is an epoch: an example is correct in an
    epoch when the training minibatch classified it correctly at any of its presentations that epoch, should
    a sampler repeat it; its state is all-reduced once per epoch under DDP. With ``"each"`` every
    presentation counts in the order training made them, as the forgetting paper defines and SVP's code
    counts (``[right, wrong]`` in one epoch then ``[right]`` is one event, not none); it stays on the device
    without a host sync, on one process (the ranks of DDP share no order of presentations). The two differ
    only when a sampler repeats an example within an epoch. An example never
    classified correctly has no event; the forgetting and SVP papers treat it as infinitely forgettable
    (``never_learned="infinite"``, the default), DeepCore as unforgettable (``"zero"``), and ``"epochs"``
    scores it as epochs + 1, above any possible count but finite. The policy is stored in the metadata.
    Examples never presented (outside the training subset) are left out. Writes ``forgetting.npz``;
    a higher score is harder.

    Args:
        dirpath: folder of the ranking file (default: the trainer's log dir).
        num_examples: size of the full training pool (default: the datamodule's ``pool_size``).
        never_learned: score of examples never classified correctly: ``infinite``, ``epochs`` or ``zero``.
        presentations: ``epoch`` (an epoch is one presentation) or ``each`` (every presentation counts).
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
        presentations: Literal["epoch", "each"] = "epoch",
    ) -> None:
        super().__init__(dirpath, num_examples, filename, observe_every)
        if never_learned not in NEVER_LEARNED:
            raise ValueError(f"never_learned must be one of {NEVER_LEARNED}, got {never_learned!r}")
        if presentations not in ("epoch", "each"):
            raise ValueError(f"presentations must be 'epoch' or 'each', got {presentations!r}")
        self.never_learned, self.presentations = never_learned, presentations

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.presentations == "each" and trainer.world_size > 1:
            raise ValueError(
                "ForgettingEvents(presentations='each') follows each example's presentations in order, which "
                f"the {trainer.world_size} ranks of DDP do not share: use presentations='epoch' under DDP"
            )
        super().setup(trainer, pl_module, stage)

    def state_names(self) -> dict[str, torch.dtype]:
        # last: 0 = never presented, 1 = wrong at its latest presentation, 2 = right
        return {"last": torch.int32, "forgets": torch.int32, "learned": torch.bool, "presentations": torch.int32}

    def epoch_names(self) -> dict[str, torch.dtype]:
        return {"code": torch.int32}  # this epoch's code, same meaning as last

    def observe(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        correct = logits.argmax(dim=1) == targets
        if self.presentations == "each":
            self._observe_each(correct, indices)
            return
        self._epoch["code"].scatter_reduce_(0, indices, 1 + correct.int(), reduce="amax")

    def _observe_each(self, correct: torch.Tensor, indices: torch.Tensor) -> None:
        """Every presentation in order: an example's presentations grouped (a stable sort keeps their order),
        each compared with the one before it, the first with the example's last before these steps."""
        s = self._state
        idx, order = torch.sort(indices, stable=True)
        right = correct[order]
        first = torch.ones_like(right)
        first[1:] = idx[1:] != idx[:-1]
        final = torch.ones_like(right)
        final[:-1] = first[1:]
        before = torch.cat([right[:1], right[:-1]])
        before = torch.where(first, s["last"][idx] == 2, before)
        s["forgets"].index_add_(0, idx, (before & ~right).to(torch.int32))
        code = torch.where(final, 1 + right.to(torch.int32), torch.zeros_like(idx, dtype=torch.int32))
        s["last"].scatter_reduce_(0, idx, code, reduce="amax", include_self=False)  # only the final one is > 0
        s["learned"] |= torch.zeros_like(s["presentations"]).index_add_(0, idx, right.to(torch.int32)) > 0
        s["presentations"].index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        s = self._state
        if self.presentations == "each":
            self.reduce_epoch(trainer)  # the kept steps, in order; the state is already up to date
            return
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
        meta = self.metadata(
            trainer,
            pl_module,
            direction="higher_is_harder",
            never_learned=self.never_learned,
            presentations=self.presentations,
        )
        self.write(trainer, self.filename, scores, presented, meta)
