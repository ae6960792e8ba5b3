"""A training as a value: a ``lightning-proxy fit`` config plus overrides, resolved once by the fit command's parser.

``lightning-proxy fit`` (:class:`ProxyCLI`) and the trainings an experiment composes (:class:`Training`) read
one set of options: the trainer, the model, the datamodule (any :class:`PoolDataModule`) and
``seed_everything``, with the model's class count and input channels linked from the datamodule. A
``Training`` is parsed with jsonargparse's ``parse_object`` (no command line rebuilt from strings), so a bad
key or value is refused when the value is made, before anything trains, and the message names where the
overrides came from. Its datamodule can be built alone, to read a pool size or a class count without a model.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentError, Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_proxy.datamodules.base import PoolDataModule
from lightning_proxy.module import ClassificationModule


def link_data_to_model(parser: LightningArgumentParser) -> None:
    """The model learns its class count and input channels from the datamodule."""
    parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
    parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")


class ProxyCLI(LightningCLI):
    """``lightning-proxy fit|validate|test|predict``: LightningCLI over any :class:`PoolDataModule`.

    The module configures its own optimizer and schedule (``--model.optimizer``, ``--model.schedule``), so
    LightningCLI's generic ``--optimizer`` / ``--lr_scheduler`` groups are not added.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            ClassificationModule,
            PoolDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_data_to_model(parser)


@functools.cache
def training_parser() -> LightningArgumentParser:
    """The options of ``lightning-proxy fit`` (what :class:`ProxyCLI` builds for its subcommand), for Python use."""
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="a training config (YAML)")
    parser.add_argument("--seed_everything", type=bool | int, default=True, help="seed of the run (True: random)")
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_lightning_class_args(ClassificationModule, "model")
    parser.add_lightning_class_args(PoolDataModule, "data", subclass_mode=True)
    link_data_to_model(parser)
    return parser


@functools.cache
def _data_parser() -> LightningArgumentParser:
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(PoolDataModule, "data", subclass_mode=True)
    return parser


class TrainingConfigError(ValueError):
    """A training config or override that the fit command's parser refuses; the message says where and why."""


_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Problem with given class_path", "Given value type:")


def explain(error: Exception) -> tuple[str, str]:
    """``(key, what is wrong)`` from a jsonargparse error, without its union-type dump.

    A nested error names its key piece by piece (``Parser key "data":`` ... ``Parser key "subset.fraction":``);
    the first line that is neither a key nor part of the dump says what was wrong.
    """
    keys: list[str] = []
    for raw in str(error).splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line or line.startswith(_NOISE) or line.startswith("Given value:"):
            continue
        if found := re.fullmatch(r'Parser key "([^"]+)":', line):
            keys.append(found[1])
            continue
        if found := re.fullmatch(r"Group '([\w.]+)' does not accept (?:nested key|option) '([\w.]+)'", line):
            return ".".join([*keys, found[1], found[2]]), "is not an option"
        if found := re.fullmatch(r"Option '([\w.]+)' is not accepted", line):
            return ".".join([*keys, found[1]]), "is not an option"
        what = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", line)
        return ".".join(keys), what[0].lower() + what[1:]
    return ".".join(keys), str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _suggestion(key: str, known: list[str]) -> str:
    """``; did you mean trainer.max_epochs?`` for a key that is a typo of a known one."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""


@dataclass(frozen=True)
class Training:
    """One training: the ``config`` file of ``lightning-proxy fit`` plus ``overrides`` by dotted key.

    ``overrides`` take the keys of the fit command without dashes (``{"trainer.max_epochs": 5,
    "data.subset.fraction": 0.5, "model.arch": "preact_resnet8"}``); a value replaces the config's (a
    ``trainer.callbacks`` list replaces the config's list). ``origin`` names where the overrides came from in
    error messages (``"target_args"``).
    """

    config: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    origin: str = "overrides"

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, origin: str | None = None) -> Training:
        """The same training with more overrides (later ones win)."""
        return Training(self.config, {**self.overrides, **(overrides or {})}, origin or self.origin)

    @functools.cached_property
    def resolved(self) -> Namespace:
        """The parsed, validated configuration (as ``lightning-proxy fit --config ... --key value`` would parse it)."""
        if not Path(self.config).is_file():
            raise FileNotFoundError(
                f"training config {self.config} does not exist (paths are relative to {Path.cwd()})"
            )
        parser = training_parser()
        try:
            base = parser.parse_args(["--config", str(self.config)])
        except ArgumentError as error:
            key, what = explain(error)
            raise TrainingConfigError(f"{self.config}: {key} {what}") from None
        try:
            return parser.parse_object(dict(self.overrides), namespace=base)
        except ArgumentError as error:
            key, what = explain(error)
            known = [k.replace(".init_args.", ".") for k in list(base.keys())]
            hint = _suggestion(key, known) if what == "is not an option" else ""
            sep = " " if what == "is not an option" else ": "
            raise TrainingConfigError(f"{self.origin} (over {self.config}): {key}{sep}{what}{hint}") from None

    def datamodule(self) -> PoolDataModule:
        """The configured datamodule alone (no model, no trainer): its pool size, class count and subset."""
        parser = _data_parser()
        return parser.instantiate_classes(parser.parse_object({"data": self.resolved.data})).data

    def instantiate(self) -> tuple[Trainer, LightningModule, LightningDataModule]:
        """Seed as the config says, then build the trainer, the model and the datamodule."""
        config = self.resolved
        if config.seed_everything is not False:
            seed_everything(None if config.seed_everything is True else config.seed_everything, workers=True)
        init = training_parser().instantiate_classes(config)
        return Trainer(**init.trainer), init.model, init.data

    def dump(self) -> str:
        """The resolved configuration as YAML (written beside an experiment's run as ``config.yaml``)."""
        return training_parser().dump(self.resolved, skip_link_targets=False, skip_none=False)
