"""A training as a value: a ``lightning-proxy fit`` config plus overrides, resolved once by the fit command's parser.

``lightning-proxy fit`` (:class:`ProxyCLI`) and the trainings an experiment composes (:class:`Training`) read
one set of options: the trainer, the model, the datamodule (any :class:`PoolDataModule`) and
``seed_everything``, with the model's class count and input channels linked from the datamodule. A
``Training`` is parsed with jsonargparse's ``parse_object`` (no command line rebuilt from strings), so a bad
key or value is refused when the value is made, before anything trains, and the message names where the
overrides came from. Its datamodule can be built alone, to read a pool size or a class count without a model.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentError, Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_proxy.datamodules.pool import PoolDataModule
from lightning_proxy.errors import explain, suggestion
from lightning_proxy.module import ClassificationModule
from lightning_proxy.selection.subset import SubsetSpec


def link_data_to_model(parser: LightningArgumentParser) -> None:
    """The model learns its class count and input channels from the datamodule."""
    parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
    parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")


class ForgetFailedStart(Callback):
    """A run that fails before its first training step leaves no log folder behind.

    Otherwise every failed attempt keeps an empty ``version_N`` holding only its ``config.yaml``, and the
    next run's folder is not the one the README names. Only the files a starting run writes are removed, and
    the folder only when that leaves it empty.
    """

    STARTING_FILES = ("config.yaml", "hparams.yaml", "metrics.csv")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0 or not trainer.is_global_zero or trainer.log_dir is None:
            return
        folder = Path(trainer.log_dir)
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.is_file() and (path.name in self.STARTING_FILES or path.name.startswith("events.out.tfevents")):
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


class ProxyCLI(LightningCLI):
    """``lightning-proxy fit|validate|test|predict``: LightningCLI over any :class:`PoolDataModule`.

    The module configures its own optimizer and schedule (``--model.optimizer``, ``--model.schedule``), so
    LightningCLI's generic ``--optimizer`` / ``--lr_scheduler`` groups are not added.
    """

    def __init__(self, **kwargs: Any) -> None:
        strict = {"exit_on_error": False, "allow_abbrev": False}  # errors reach lightning-proxy's one line
        super().__init__(
            ClassificationModule,
            PoolDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_kwargs={**strict, **{command: strict for command in self.subcommands()}},
            trainer_defaults={"callbacks": [ForgetFailedStart()]},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_data_to_model(parser)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """``predict`` of a checkpoint writes beside it, in ``<checkpoint without .ckpt>/`` (its scores and the
        config), rather than in a new log version of the training run."""
        ckpt = self.config.predict.get("ckpt_path") if self.subcommand == "predict" else None
        if ckpt and Path(ckpt).is_file():
            kwargs = {"logger": False, "default_root_dir": str(Path(ckpt).with_suffix("")), **kwargs}
            # predict saves no checkpoint: ModelCheckpoint's notice that its unused folder moved is noise
            warnings.filterwarnings("ignore", message="The dirpath has changed from", category=UserWarning)
        return super().instantiate_trainer(**kwargs)

    def after_predict(self) -> None:
        if self.trainer.is_global_zero:
            print(f"predict wrote its files to {self.trainer.log_dir}", flush=True)


@functools.cache
def training_parser() -> LightningArgumentParser:
    """The options of ``lightning-proxy fit`` (what :class:`ProxyCLI` builds for its subcommand), for Python use."""
    parser = LightningArgumentParser(exit_on_error=False, allow_abbrev=False)
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
            hint = suggestion(key, known) if what == "is not an option" else ""
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


def known_training_options() -> list[str]:
    """The option names of ``lightning-proxy fit``, every datamodule's included: for a suggestion in an error."""
    from lightning_proxy import datamodules  # every datamodule, not only the base the parser knows

    keys = [key.replace(".init_args.", ".") for key in training_parser().get_defaults().keys()]  # noqa: SIM118 (a Namespace iterates items)
    data_classes = [c for c in vars(datamodules).values() if isinstance(c, type) and c.__name__.endswith("DataModule")]
    arguments = {name for c in data_classes for name in inspect.signature(c.__init__).parameters} - {"self"}
    keys += [f"data.{name}" for name in sorted(arguments)]
    return keys + [f"data.subset.{f.name}" for f in fields(SubsetSpec)]
