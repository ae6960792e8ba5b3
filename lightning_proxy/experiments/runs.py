"""Training runs that an experiment composes: one ``lightning-proxy fit`` each, resumable by its result file.

A run is a training config plus command-line overrides, trained in its own folder (the log dir, so the
callbacks' ranking files land there too). When it finishes, ``result.json`` is written atomically; an
experiment started again skips every run that has one, so a killed experiment picks up at the first
unfinished training and never loses a finished one.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_proxy.files import write_atomically

RESULT = "result.json"


def as_cli_args(overrides: Mapping[str, Any] | None) -> list[str]:
    """``{"model.arch": "x", "trainer.max_epochs": 5}`` -> ``["--model.arch", "x", "--trainer.max_epochs", "5"]``."""
    args: list[str] = []
    for key, value in (overrides or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        args += [f"--{key.removeprefix('--')}", text]
    return args


def write_json(path: Path, data: Any) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, default=str)))


def _validation_history() -> Any:
    """A callback that keeps every validation epoch's accuracy (the 000 paper's curve and best at any epoch)."""
    from lightning.pytorch.callbacks import Callback

    class ValidationHistory(Callback):
        def __init__(self) -> None:
            self.accuracies: list[float] = []

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
                self.accuracies.append(float(trainer.callback_metrics["val/acc"]))

    return ValidationHistory()


def read_result(folder: Path) -> dict[str, Any] | None:
    path = folder / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def train(
    folder: Path,
    config: str,
    overrides: Mapping[str, Any] | None = None,
    callbacks: list[dict[str, Any]] | None = None,
    seed: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Fit ``config`` with ``overrides`` in ``folder`` (skipped when its result exists); return the result.

    ``callbacks`` replaces the config's ``trainer.callbacks`` (``class_path``/``init_args`` dicts). The
    result holds the final validation accuracy and loss, the best validation accuracy at any epoch and
    every epoch's, the wall time of the fit, the number of training examples and ``extra``.
    """
    done = read_result(folder)
    if done is not None:
        return done
    from lightning_proxy.cli import cli  # the CLI imports Lightning: only when a run really trains

    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(folder), "name": "", "version": ""},
    }
    args = ["--config", config, *as_cli_args(overrides)]
    args += [
        "--seed_everything",
        str(seed),
        "--trainer.default_root_dir",
        str(folder),
        "--trainer.logger",
        json.dumps(logger),
    ]
    if callbacks is not None:
        args += ["--trainer.callbacks", json.dumps(callbacks)]
    with warnings.catch_warnings():  # args given in Python, not on the command line: as intended here
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended")
        run = cli(args, run=False)
    history = _validation_history()
    run.trainer.callbacks.append(history)
    start = time.perf_counter()
    run.trainer.fit(run.model, run.datamodule)
    seconds = time.perf_counter() - start
    if run.trainer.interrupted:
        raise KeyboardInterrupt(f"training in {folder} was interrupted; start the experiment again to resume")
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith("val/")}
    result = {
        "val_acc": metrics.get("val/acc"),
        "val_error": None if metrics.get("val/acc") is None else 1.0 - metrics["val/acc"],
        "val_loss": metrics.get("val/loss"),
        "best_val_acc": max(history.accuracies, default=metrics.get("val/acc")),
        "epoch_val_acc": history.accuracies,
        "seconds": seconds,
        "train_examples": len(run.datamodule.train_indices),
        "pool_size": run.datamodule.pool_size,
        "seed": seed,
        **extra,
    }
    write_json(folder / RESULT, result)
    return result
