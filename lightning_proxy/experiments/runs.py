"""Training runs that an experiment composes, and what the experiments share around them.

A run is a :class:`~lightning_proxy.training.Training` (a fit config plus overrides) trained in its own
folder (the log dir, so the callbacks' ranking files land there too, beside the resolved ``config.yaml``).
When it finishes, ``result.json`` is written atomically; an experiment started again skips every run that
has one, so a killed experiment picks up at the first unfinished training and never loses a finished one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_proxy.files import remove_orphans, write_csv, write_json, write_text

if TYPE_CHECKING:  # the training layer imports Lightning: only when a run really trains
    from lightning_proxy.training import Training

RESULT = "result.json"
CONFIG = "config.yaml"


# --- checks shared by the experiments ----------------------------------------------------------------------
def check_choices(values: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    """``values`` when every one is in ``known``; else one clear error naming the unknown ones."""
    if unknown := [v for v in values if v not in known]:
        raise ValueError(f"unknown {what} {unknown}; choose from {list(known)}")
    return list(values)


def seeds_or_default(seeds: Sequence[int] | None) -> list[int]:
    """The experiment's seeds (default ``[0]``); an empty list is refused (it would train nothing)."""
    if seeds is not None and not list(seeds):
        raise ValueError("--seeds is empty: give at least one, e.g. --seeds '[0]'")
    return list(seeds) if seeds is not None else [0]


ERRORS = ("best", "final")  # which validation error an experiment's tables report
ERROR_TEXT = {"best": "best over epochs (SVP's)", "final": "the last epoch's"}


def errors_of(result: Mapping[str, Any], error: str) -> dict[str, Any]:
    """A training's ``val_error`` as the tables report it (``best``: 1 - the best validation accuracy at any
    epoch, as SVP reports; ``final``: the last epoch's), with both kept beside it."""
    check_choices([error], ERRORS, "error")
    best = None if result.get("best_val_acc") is None else 1.0 - result["best_val_acc"]
    final = result.get("val_error")
    return {"val_error": best if error == "best" else final, "best_error": best, "final_error": final}


def flat(overrides: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested overrides as dotted keys: ``{"data.subset": {"fraction": 0.5}}`` -> ``{"data.subset.fraction": 0.5}``;
    a dict-valued option (``model.arch_kwargs``) and a class (``class_path``) stay whole."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and "class_path" not in value and not name.endswith("_kwargs"):
            out |= flat(value, f"{name}.")
        else:
            out[name] = value
    return out


def proxy_and_target(
    proxy_config: str,
    target_config: str,
    proxy_args: Mapping[str, Any] | None,
    target_args: Mapping[str, Any] | None,
    data_args: Mapping[str, Any] | None,
) -> tuple[Training, Training]:
    """The proxy's and the target's trainings (``data_args`` under both), validated before anything trains."""
    from lightning_proxy.training import Training

    data = flat(data_args)
    proxy = Training(proxy_config, {**data, **flat(proxy_args)}, "proxy_args (with data_args)")
    target = Training(target_config, {**data, **flat(target_args)}, "target_args (with data_args)")
    for who, training in (("proxy", proxy), ("target", target)):
        # parse now: a bad key fails here, not after the proxy trained
        if training.resolved.trainer.get("max_epochs") == 0:
            raise ValueError(f"the {who}'s trainer.max_epochs is 0, which trains nothing: give 1 or more")
    return proxy, target


# --- progress ------------------------------------------------------------------------------------------------
class Progress:
    """One line per finished training: how far the experiment is and, from its trainings so far, how long is left.

    ``[7/17] forgetting 0.5: error 3.3%, 41 s; about 2 min left``. Runs found finished on disk (a resumed
    experiment) count as done but not in the estimate.
    """

    def __init__(self, total: int) -> None:
        self.total, self.done, self.trained, self.seconds = total, 0, 0, 0.0

    def finished(self, label: str, result: Mapping[str, Any], trained: bool) -> str:
        self.done += 1
        if trained:
            self.trained += 1
            self.seconds += float(result.get("seconds") or 0.0)
        error = result.get("val_error")
        parts = [f"error {error:.1%}" if error is not None else "no validation"]
        parts.append(f"{result.get('seconds', 0.0):.0f} s" if trained else "done before")
        line = f"[{self.done}/{self.total}] {label}: {', '.join(parts)}"
        if self.done < self.total and self.trained:
            line += f"; about {_duration(self.seconds / self.trained * (self.total - self.done))} left"
        print(line, flush=True)
        return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- one training --------------------------------------------------------------------------------------------
# Lightning's start-up lines (seed, devices, the step estimate, why fit stopped): said once per experiment
_LIGHTNING_INFO = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)


@contextlib.contextmanager
def _lightning_info(shown: bool) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _LIGHTNING_INFO]
    levels = [logger.level for logger in loggers]
    if not shown:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # the run's folder holds its own files (and a killed attempt's, whose metrics train() removed)
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            if not shown:  # Lightning's own deprecation notice on this torch, once is enough
                warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def read_result(folder: Path) -> dict[str, Any] | None:
    path = folder / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def run_files(folder: Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """Every file the callbacks of the run in ``folder`` wrote, by stem (``forgetting``, ``entropy``,
    ``embeddings``), as its result records them."""
    files = result.get("files")
    if files is None:  # a result written before runs recorded their files: the callbacks' default names
        return {found.stem: found for found in sorted(folder.glob("*.np[yz]"))}
    return {name: folder / path for name, path in files.items()}


def written(folder: Path, result: Mapping[str, Any], name: str) -> Path:
    """The file ``name`` that the callbacks of the run in ``folder`` wrote; missing, a line that says how to
    make it again."""
    files = run_files(folder, result)
    path = files.get(name)
    if path is None or not path.is_file():
        what = f"its {name} file {path} is gone" if path is not None else f"it wrote no {name} file ({sorted(files)})"
        raise FileNotFoundError(f"the run in {folder} finished but {what}: delete {folder} to train it again")
    return path


def _validation_history() -> Any:
    """A callback that keeps every validation epoch's accuracy (the 000 paper's curve and best at any epoch)
    and the seconds of the training epochs without their validation (SVP's training time: no sanity pass,
    validation or checkpointing; the device is synchronised at epoch and validation bounds, not per step)."""
    from lightning.pytorch.callbacks import Callback

    from lightning_proxy.callbacks.writer import synchronised_time as now

    class ValidationHistory(Callback):
        def __init__(self) -> None:
            self.accuracies: list[float] = []
            self.train_seconds, self._since = 0.0, None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._since = now(pl_module)

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            if self._since is not None and not trainer.sanity_checking:
                self.train_seconds += now(pl_module) - self._since
                self._since = None

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
                self.accuracies.append(float(trainer.callback_metrics["val/acc"]))

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if self._since is not None:  # an epoch without validation
                self.train_seconds += now(pl_module) - self._since
                self._since = None

    return ValidationHistory()


def train(
    folder: Path,
    training: Training,
    callbacks: list[dict[str, Any]] | None = None,
    seed: int = 0,
    progress: tuple[Progress, str] | None = None,
    extra_callbacks: Sequence[Any] = (),
    retrain_changed: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Fit ``training`` in ``folder`` (skipped when its result exists); return the result.

    ``callbacks`` replaces the config's ``trainer.callbacks`` (``class_path``/``init_args`` dicts);
    ``extra_callbacks`` are callback objects added to them (e.g. one that reports to a live Optuna trial). The
    result holds the final validation accuracy and loss, the best validation accuracy at any epoch and
    every epoch's, the wall time of the fit and of its training epochs alone (``train_seconds``), the number
    of training examples and of example passes (``examples_seen``), the files its callbacks wrote (``files``:
    stem -> path in ``folder``, read with :func:`written`) and ``extra``. ``progress``:
    the experiment's :class:`Progress` and this run's label, for its line when it finishes.

    A run keeps no checkpoint and makes no sanity pass: what an experiment keeps of it is its result, its
    config and the callbacks' files, and a killed run starts again from its beginning (its partial metrics
    and temporary files dropped). A finished run is read back only when it trained the configuration asked
    for (else refused with the first differing key, or trained again with ``retrain_changed``) and every
    file it wrote is still whole (else trained again). Lightning's start-up lines are shown for an
    experiment's first training only.
    """
    remove_orphans(folder)
    run = _for_folder(training, folder, seed, callbacks)
    done = read_result(folder)
    if done is not None and _reusable(folder, done, run, retrain_changed):
        if progress is not None:
            progress[0].finished(progress[1], done, trained=False)
        return done
    (folder / RESULT).unlink(missing_ok=True)
    (folder / "metrics.csv").unlink(missing_ok=True)  # a killed attempt's: this one starts from its beginning
    with _lightning_info(shown=progress is None or progress[0].trained == 0):
        trainer, model, datamodule = run.instantiate()
        history = _validation_history()
        trainer.callbacks.extend([history, *extra_callbacks])
        start = time.perf_counter()
        trainer.fit(model, datamodule)
        seconds = time.perf_counter() - start
    if trainer.interrupted:
        raise KeyboardInterrupt(f"training in {folder} was interrupted; start the experiment again to resume")
    result = _result(trainer, model, datamodule, history, folder, seconds, seed, extra)
    write_text(folder / CONFIG, run.dump())
    write_json(folder / RESULT, result)
    # the trainer, module and callbacks refer to one another: free this training's model, optimizer and
    # loaders now, before the next training allocates its own (a text model's embedding is 400 MB)
    del trainer, model, datamodule, history
    gc.collect()
    if progress is not None:
        progress[0].finished(progress[1], result, trained=True)
    return result


def _for_folder(training: Training, folder: Path, seed: int, callbacks: list[dict[str, Any]] | None) -> Training:
    """``training`` as it runs in ``folder``: seeded, logging there, without checkpoints or a sanity pass."""
    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(folder), "name": "", "version": ""},
    }
    return training.with_overrides(
        {
            "seed_everything": seed,
            "trainer.default_root_dir": str(folder),
            "trainer.logger": logger,
            "trainer.enable_checkpointing": False,
            "trainer.num_sanity_val_steps": 0,
            "trainer.enable_model_summary": False,
            **({"trainer.callbacks": callbacks} if callbacks is not None else {}),
        }
    )


def _result(
    trainer: Any, model: Any, datamodule: Any, history: Any, folder: Path, seconds: float, seed: int, extra: Any
) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    made = {name: path for cb in trainer.callbacks for name, path in getattr(cb, "written", {}).items()}
    return {
        "val_acc": metrics.get("val/acc"),
        "val_error": None if metrics.get("val/acc") is None else 1.0 - metrics["val/acc"],
        "val_loss": metrics.get("val/loss"),
        "best_val_acc": max(history.accuracies, default=metrics.get("val/acc")),
        "epoch_val_acc": history.accuracies,
        "seconds": seconds,
        "train_seconds": history.train_seconds,
        "train_examples": len(datamodule.train_indices),
        "examples_seen": getattr(model, "examples_seen", None),  # example passes, summed over ranks
        "pool_size": datamodule.pool_size,
        "seed": seed,
        "files": {name: os.path.relpath(path, folder) for name, path in made.items()},
        **extra,
    }


_PER_FOLDER = ("trainer.default_root_dir", "trainer.logger")  # where a run logs, not what it trains


def first_difference(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> str | None:
    """The first key whose value differs between what a finished step recorded and what is asked now, as
    ``key: recorded -> asked``; None when they agree."""
    for key in [*asked, *(k for k in recorded if k not in asked)]:
        if recorded.get(key, "<unset>") != asked.get(key, "<unset>"):
            return f"{key}: {recorded.get(key, '<unset>')!r} -> {asked.get(key, '<unset>')!r}"
    return None


def first_change(recorded: str, asked: str) -> str | None:
    """:func:`first_difference` of two resolved configurations (YAML, dotted keys), without where a run logs;
    the recorded run may have had more callbacks than asked for (active learning's target round as its
    selector)."""
    import yaml

    old, new = (flat(yaml.safe_load(text) or {}) for text in (recorded, asked))
    for both in (old, new):
        for key in _PER_FOLDER:
            both.pop(key, None)
    if all(c in (old.get("trainer.callbacks") or []) for c in new.get("trainer.callbacks") or []):
        old["trainer.callbacks"] = new.get("trainer.callbacks")
    return first_difference(old, new)


def _whole(path: Path) -> bool:
    """Whether a file a run wrote is there and not cut short (an ``.npz``'s zip directory, an ``.npy``'s size)."""
    import zipfile

    import numpy as np

    if not path.is_file():
        return False
    if path.suffix == ".npz":
        return zipfile.is_zipfile(path)
    if path.suffix == ".npy":
        try:
            np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return False
    return True


def _reusable(folder: Path, done: Mapping[str, Any], run: Training, retrain_changed: bool) -> bool:
    """Whether the finished run in ``folder`` is what ``run`` asks for, with its files whole."""
    if damaged := sorted(name for name, path in run_files(folder, done).items() if not _whole(path)):
        print(f"[resume] {folder}: its {', '.join(damaged)} file is missing or damaged; training it again", flush=True)
        return False
    if not (folder / CONFIG).is_file():
        return True  # a result from before runs recorded their configuration
    change = first_change((folder / CONFIG).read_text(), run.dump())
    if change is None:
        return True
    if retrain_changed:
        print(f"[resume] {folder} trained another configuration ({change}); training it again", flush=True)
        return False
    raise ValueError(
        f"{folder} holds a finished training of another configuration ({change}): give another --output, "
        "or --retrain_changed true to train what changed again"
    )


# --- the report ------------------------------------------------------------------------------------------------
def write_report(
    out: Path,
    title: str,
    results: Any,
    summary: Any,
    figures: Iterable[Callable[[], Any]] = (),
    extra: Iterable[tuple[str, str, Any]] = (),
) -> None:
    """``results.csv``, ``summary.csv`` and ``summary.txt`` (``title``, the summary, then each ``extra``
    ``(heading, csv name, frame)``, whose frame also goes to its CSV), written atomically; then the figures.
    A standard deviation of one seed is undefined: the CSV keeps it empty, the text shows ``-``."""
    write_csv(out / "results.csv", results)
    write_csv(out / "summary.csv", summary)
    text = [title, "", summary.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")]
    for heading, name, frame in extra:
        write_csv(out / name, frame)
        text += ["", heading, frame.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    write_text(out / "summary.txt", "\n".join(text) + "\n")
    for draw in figures:
        draw()
    print("\n".join(text))
