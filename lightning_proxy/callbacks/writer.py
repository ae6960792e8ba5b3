"""What every per-example callback shares at its end: the pool's size, the provenance, ranking files.

A :class:`RankingWriter` knows the size N of the full training pool and writes ``<dirpath>/<name>.npz`` on rank
zero, atomically, with what made it (model, seed, dataset, pool fingerprint, subset); the other ranks wait.
The statistics of the training steps (:class:`~lightning_proxy.callbacks.statistic.ExampleStatistic`) and the
scores of the trained model (:class:`~lightning_proxy.callbacks.scores.PostTrainingScores`) are writers.
"""

from __future__ import annotations

import dataclasses
import os
import time
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


class RankingWriter(L.Callback):
    """Base class: finds the pool size, checks pool indices, writes ranking files on rank zero.

    Args:
        dirpath: folder of the ranking files (default: the trainer's log dir, else its root dir).
        num_examples: size N of the full training pool; read from the datamodule's ``pool_size`` when omitted.
        filename: stem of the file written; two instances in one trainer need two names.
    """

    statistic = "statistic"

    def __init__(self, dirpath: str | None = None, num_examples: int | None = None, filename: str | None = None):
        if num_examples is not None and num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        self.dirpath = dirpath
        self.num_examples = num_examples
        self.filename = filename or self.statistic
        self.written: dict[str, Path] = {}  # file stem -> path, of every file this callback wrote

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=self.filename)

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

    def check_indices(self, indices: torch.Tensor, n: int) -> None:
        """A clear error for pool indices outside ``[0, n)``: ``num_examples`` smaller than the pool."""
        if len(indices) and (int(indices.max()) >= n or int(indices.min()) < 0):
            raise ValueError(
                f"{type(self).__name__}: a batch holds pool index {int(indices.max())}, but num_examples is {n}: "
                "pass the size of the full training pool (every item's index is below it), or omit "
                "num_examples to read the datamodule's pool_size"
            )

    def output_dir(self, trainer: L.Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir)

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
        self.written[name] = path
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
