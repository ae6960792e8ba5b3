"""Scores of the trained model: one pass over the scoring loader (no augmentation) when training ends."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from lightning_proxy.callbacks.writer import RankingWriter, provenance, synchronised_time, targets_and_indices
from lightning_proxy.files import write_atomically
from lightning_proxy.selection.subset import read_indices


def _loss(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(log_p, targets, ignore_index=-1, reduction="none")  # 0 where the target is -1


def _entropy(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(log_p.exp() * log_p).nan_to_num().sum(dim=1)


def _top2(log_p: torch.Tensor) -> torch.Tensor:
    p = log_p.exp()
    return p.topk(2, dim=1).values if p.shape[1] > 1 else torch.cat([p, torch.zeros_like(p)], dim=1)


def _least_confidence(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 1.0 - _top2(log_p)[:, 0]  # on probabilities, not raw logits


def _margin(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    top2 = _top2(log_p)
    return top2[:, 0] - top2[:, 1]


# score name -> (its value from log-probabilities and targets, its ranking direction)
SCORES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], str]] = {
    "loss": (_loss, "higher_is_harder"),
    "entropy": (_entropy, "higher_is_harder"),
    "least_confidence": (_least_confidence, "higher_is_harder"),
    "margin": (_margin, "higher_is_easier"),
}
STATISTICS = tuple(SCORES)


def example_scores(
    logits: torch.Tensor, targets: torch.Tensor, names: Sequence[str] = STATISTICS
) -> dict[str, torch.Tensor]:
    """Per-example loss (0 where the target is -1), entropy, least confidence ``1 - max p`` and margin ``p1 - p2``."""
    log_p = logits.float().log_softmax(dim=1)
    return {name: SCORES[name][0](log_p, targets) for name in names}


class PostTrainingScores(RankingWriter):
    """Loss, entropy, least confidence and margin of every pool example under the trained model; embeddings.

    When training ends, the module's ``predict_step`` (in eval mode, under the trainer's precision) scores
    the datamodule's ``scoring_dataloader()`` (else its ``predict_dataloader()``): the whole pool, not only
    the training subset, as a proxy ranks the examples it did not see. ``predict_step`` returns the
    logits, or a dict with ``logits`` and, for the embeddings, ``features`` (as ``ClassificationModule``'s
    does). Each rank scores a shard; one all-reduce assembles the scores. Writes
    ``<prefix><statistic>.npz`` per statistic and ``<prefix>embeddings.npy``: an ``(N, D)`` float32 array
    whose row ``i`` is pool example ``i``'s penultimate-layer features (NaN where unscored), gathered to
    rank zero in chunks and written through a memory map, so it never sits whole in memory.

    ``trainer.predict(model, datamodule)`` with this callback scores a trained checkpoint the same way.

    The loss uses the labels of the scoring batches, which are the model's: a class subset's datamodule
    serves ``0..k-1`` and -1 for examples of other classes, which are left out of the loss ranking.

    Args:
        dirpath: folder of the files (default: the trainer's log dir).
        num_examples: size of the full training pool (default: the datamodule's ``pool_size``).
        statistics: which of ``loss``, ``entropy``, ``least_confidence``, ``margin`` to write.
        embeddings: also write the embeddings.
        prefix: prepended to the file names, to keep several scorers apart.
        gather_rows: rows per all-gather when collecting embeddings on rank zero.
        indices: score only these pool indices (a list, or a ``.npy`` / ``.txt`` / ``.json`` file), e.g. active
            learning's unlabelled pool; the datamodule's ``scoring_dataloader(indices)`` serves them. Other
            examples are left out of the rankings and are NaN rows of the embeddings.
        augment: score the training-augmented examples (one random view each, as SVP does) through the
            datamodule's ``scoring_dataloader(augment=True)``; default: un-augmented, so a ranking is the
            same whenever it is recomputed (a checkpoint's ``predict`` gives the fit's).
    """

    statistic = "scores"

    def __init__(
        self,
        dirpath: str | None = None,
        num_examples: int | None = None,
        statistics: Sequence[str] = STATISTICS,
        embeddings: bool = True,
        prefix: str = "",
        gather_rows: int = 16384,
        indices: list[int] | str | None = None,
        augment: bool = False,
    ) -> None:
        super().__init__(dirpath, num_examples, filename=f"{prefix}scores")
        self.augment = augment
        unknown = set(statistics) - set(STATISTICS)
        if unknown or not statistics:
            raise ValueError(f"statistics must be a non-empty subset of {STATISTICS}, got {list(statistics)}")
        self.statistics = [s for s in STATISTICS if s in statistics]
        self.embeddings = embeddings
        self.prefix = prefix
        self.gather_rows = gather_rows
        self.indices = indices
        self._sums: torch.Tensor | None = None
        self._rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._checkpoint_epochs: int | None = None  # of the checkpoint predict scores

    # --- accumulation, shared by the post-training pass and trainer.predict ------------------------------
    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = self.pool_size(trainer)
        # rows: the statistics, then "has a model label", then the count of times scored
        self._sums = torch.zeros(len(self.statistics) + 2, n, dtype=torch.float64, device=pl_module.device)
        self._rows, self._range_checked = [], False

    def _add(self, logits: torch.Tensor, features: torch.Tensor | None, targets: torch.Tensor, indices: Any) -> None:
        assert self._sums is not None
        device = self._sums.device
        indices = torch.as_tensor(indices, device=device, dtype=torch.int64)
        if not self._range_checked:  # the first batch: one host sync per pass
            self.check_indices(indices, self._sums.shape[1])
            self._range_checked = True
        targets = targets.to(device, torch.int64)
        scores = example_scores(logits.to(device), targets, self.statistics)
        rows = torch.stack([scores[s] for s in self.statistics] + [(targets >= 0).float(), torch.ones_like(targets)])
        try:
            self._sums.index_add_(1, indices, rows.double())
        except (IndexError, RuntimeError):
            self.check_indices(indices, self._sums.shape[1])
            raise
        if self.embeddings and features is not None:
            self._rows.append((indices.cpu(), features.detach().float().flatten(1).cpu()))

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs: int | None, **extra: Any) -> None:
        assert self._sums is not None
        sums = self._sums if trainer.world_size == 1 else trainer.strategy.reduce(self._sums, reduce_op="sum")
        count = sums[-1]
        scored = count > 0
        labelled = sums[-2] > 0
        meta = provenance(trainer, pl_module, self.pool_size(trainer), epochs=epochs, **extra)
        for i, name in enumerate(self.statistics):
            mask = scored & labelled if name == "loss" else scored
            values = sums[i] / count.clamp(min=1)
            meta_of_name = {**meta, "statistic": name, "direction": SCORES[name][1]}
            self.write(trainer, f"{self.prefix}{name}", values, mask, meta_of_name)
        if self.embeddings:
            self._write_embeddings(trainer)
        self._sums, self._rows = None, []

    # --- the post-training pass --------------------------------------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = self._scoring_loader(trainer)
        self._start(trainer, pl_module)
        _broadcast_buffers(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        quiet = not trainer.is_global_zero or trainer.progress_bar_callback is None
        progress = tqdm(loader, desc="Scoring the pool", disable=quiet, leave=False)
        started = synchronised_time(pl_module)
        with torch.no_grad(), trainer.precision_plugin.predict_step_context():
            for batch_idx, batch in enumerate(progress):
                if trainer.fast_dev_run and batch_idx >= int(trainer.fast_dev_run):
                    break  # a smoke test scores as many batches as it trained on
                batch = trainer.strategy.batch_to_device(batch)
                self.on_predict_batch_end(
                    trainer, pl_module, pl_module.predict_step(batch, batch_idx), batch, batch_idx
                )
        pl_module.train(was_training)
        seconds = synchronised_time(pl_module) - started
        self._finish(trainer, pl_module, epochs=trainer.current_epoch, scoring_seconds=seconds, augmented=self.augment)

    def _scoring_loader(self, trainer: L.Trainer) -> Iterable:
        dm = trainer.datamodule
        if self.indices is not None or self.augment:  # only the datamodule's scoring_dataloader can
            if getattr(dm, "scoring_dataloader", None) is None:
                raise RuntimeError(
                    "PostTrainingScores(indices=..., augment=True) scores with the datamodule's "
                    "scoring_dataloader(indices, augment=True); fit with a datamodule that has one"
                )
            indices = None
            if self.indices is not None:
                indices = read_indices(self.indices, "PostTrainingScores indices", pool_size=self.pool_size(trainer))
            loader = dm.scoring_dataloader(indices, **({"augment": True} if self.augment else {}))
        else:
            make = getattr(dm, "scoring_dataloader", None) or getattr(dm, "predict_dataloader", None)
            if make is None:
                raise RuntimeError(
                    "PostTrainingScores scores the pool with the datamodule's scoring_dataloader() or "
                    "predict_dataloader() (in order, no augmentation, items carrying their pool index); "
                    "fit with a datamodule that has one"
                )
            loader = make()
        if trainer.world_size == 1:
            return loader
        if not isinstance(loader, DataLoader):  # the tensor path's batches split themselves
            return loader.shard(trainer.global_rank, trainer.world_size)
        sampler = DistributedSampler(
            loader.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
        )

    # --- trainer.predict ---------------------------------------------------------------------------------
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        targets, indices = targets_and_indices(batch)
        if isinstance(outputs, dict):
            logits, features = outputs["logits"], outputs.get("features")
        else:
            logits, features = outputs, None
        self._add(logits, features, targets, indices)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Keep the checkpoint's trained epochs for the rankings ``predict`` writes: the fit loop's count of epochs
        whose batches all ran (an end-of-epoch checkpoint of epoch index 14 has trained 15)."""
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        self._checkpoint_epochs = progress.get("processed", checkpoint.get("epoch"))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, epochs=self._checkpoint_epochs)

    # --- embeddings --------------------------------------------------------------------------------------
    def _write_embeddings(self, trainer: L.Trainer) -> None:
        """Gather the ranks' rows to rank zero in fixed-size chunks and write them through a memory map.

        Rank zero writes a temporary file that it renames when whole; the other ranks take part in the
        gathers that fill it.
        """
        if not self._rows:  # the same on every rank: the module (or predict_step) gives no features
            warnings.warn(
                "PostTrainingScores(embeddings=True) found no features: predict_step must return "
                "{'logits': ..., 'features': ...} for embeddings.npy",
                stacklevel=2,
            )
            return
        n = self.pool_size(trainer)
        indices = torch.cat([i for i, _ in self._rows])
        rows = torch.cat([r for _, r in self._rows])

        def fill(tmp: str | None) -> None:
            if trainer.world_size == 1:
                out = _unscored_rows(tmp, n, rows.shape[1])
                out[indices.numpy()] = rows.numpy()
            else:
                out = self._gather(trainer, indices, rows, tmp, n)
            if out is not None:
                out.flush()

        path = self.output_dir(trainer) / f"{self.prefix}embeddings.npy"  # every rank: log_dir is a broadcast
        if trainer.is_global_zero:
            write_atomically(path, fill)
        else:
            fill(None)
        trainer.strategy.barrier("embeddings_written")
        self.written[path.stem] = path

    def _gather(
        self, trainer: L.Trainer, indices: torch.Tensor, rows: torch.Tensor, tmp: str | None, n: int
    ) -> np.memmap | None:
        """Every rank's rows into rank zero's file ``tmp`` (``None`` on the other ranks), chunk by chunk."""
        device = trainer.strategy.root_device
        sizes = trainer.strategy.all_gather(torch.tensor([len(indices), rows.shape[1]], device=device))
        dim = int(sizes[:, 1].max())
        out = None if tmp is None else _unscored_rows(tmp, n, dim)
        chunk = self.gather_rows
        for start in range(0, int(sizes[:, 0].max()), chunk):
            idx = torch.full((chunk,), -1, dtype=torch.int64)
            part = torch.zeros(chunk, dim)
            piece = indices[start : start + chunk]
            idx[: len(piece)] = piece
            part[: len(piece)] = rows[start : start + chunk]
            all_idx = trainer.strategy.all_gather(idx.to(device)).reshape(-1).cpu()
            all_rows = trainer.strategy.all_gather(part.to(device)).reshape(-1, dim).cpu()
            if out is not None:
                keep = all_idx >= 0
                out[all_idx[keep].numpy()] = all_rows[keep].numpy()
        return out


def _unscored_rows(path: str, n: int, dim: int) -> np.memmap:
    """An ``(n, dim)`` float32 ``.npy`` memory map at ``path``, every row NaN until scored."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    out[:] = np.nan
    return out


def _broadcast_buffers(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Give every rank rank zero's buffers (the checkpointed ones) before scoring.

    DDP broadcasts buffers at the start of each training forward, so after the last step every rank holds
    BatchNorm statistics updated by its own last batch: scored as they are, each shard would see another model.
    """
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        for buffer in pl_module.buffers():
            torch.distributed.broadcast(buffer, src=0)
