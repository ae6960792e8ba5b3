"""The ``lightning-proxy`` command: LightningCLI's fit/validate/test/predict plus the experiment commands.

Every experiment command is a typed Python function (of ``lightning_proxy.experiments``; ``distill`` of
``lightning_proxy.distill.matching``), parsed by jsonargparse from its signature and docstring in one way
(``--config`` YAML and ``--key value`` options, ``--help``); a command that takes ranking files takes them
as positional arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lightning_proxy.errors import USER_ERRORS, fail, user_message, wants_traceback

TRAINING_COMMANDS = ("fit", "validate", "test", "predict")


class Command(NamedTuple):
    target: str  # "module:function", imported only when the command runs
    description: str
    positional: str | None = None  # a list parameter given as positional arguments


COMMANDS: dict[str, Command] = {
    "coreset": Command("lightning_proxy.experiments.coreset:coreset", "core-set selection via proxy, end to end"),
    "active": Command("lightning_proxy.experiments.active:active", "batch active learning via proxy, round by round"),
    "sweep": Command("lightning_proxy.experiments.sweep:sweep", "proxy datasets for hyperparameter search (Optuna)"),
    "report": Command("lightning_proxy.experiments.sweep:sweep_report", "proxy-quality report of a sweep"),
    "distill": Command("lightning_proxy.distill.matching:distill", "a distilled synthetic set of a training's pool"),
    "compare-rankings": Command(
        "lightning_proxy.experiments.compare:compare", "correlations and top-k overlap of rankings", "rankings"
    ),
    "aggregate-rankings": Command(
        "lightning_proxy.experiments.compare:aggregate", "combine several seeds' rankings", "rankings"
    ),
}


def run_command(name: str, argv: Sequence[str]) -> Any:
    """Parse ``argv`` for the command's function (its signature and docstring) and call it."""
    from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

    command = COMMANDS[name]
    if name in ("sweep", "report"):
        _check_storage_first(argv, must_exist=name == "report")
    module, function_name = command.target.split(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), function_name)
    summary = (function.__doc__ or command.description).split("\n\n")[0]  # the options carry the Args
    parser = ArgumentParser(
        prog=f"lightning-proxy {name}", description=summary, exit_on_error=False, allow_abbrev=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of this command's options")
    skip = set()
    if command.positional is not None:
        parser.add_argument(command.positional, nargs="+", help="ranking files (.npz) of one pool")
        skip.add(command.positional)
    parser.add_function_arguments(function, skip=skip, as_positional=False)
    try:
        config = parser.parse_args(list(argv))
    except ArgumentError as error:
        raise ArgumentError(None, user_message(error, lambda: list(parser.get_defaults().keys()), list(argv))) from None
    kwargs = {k: v for k, v in config.as_dict().items() if k != "config"}
    return function(**kwargs)


def _check_storage_first(argv: Sequence[str], must_exist: bool) -> None:
    """A sweep's or report's ``--storage`` (the command line's, else its ``--config`` file's), checked before
    the command's options are parsed: parsing them imports Lightning, which takes seconds."""
    import yaml

    url = None
    for i, word in enumerate(argv):
        key, eq, value = word.partition("=")
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
        if key == "--storage":
            url = value
        elif key in ("-c", "--config") and value and url is None and Path(value).is_file():
            with contextlib.suppress(yaml.YAMLError):
                found = yaml.safe_load(Path(value).read_text())
                url = found.get("storage") if isinstance(found, dict) else None
    if isinstance(url, str):
        from lightning_proxy.experiments.storage import check_storage

        check_storage(url, must_exist=must_exist)


def check_training_args(argv: Sequence[str]) -> None:
    """What a fit/validate/test/predict command line can be refused for without importing Lightning.

    The config files exist and are YAML mappings, and the subset rule (the config's, then each
    ``--data.subset.KEY VALUE`` in order) has known keys of the right types and consistent values, checked
    by :class:`~lightning_proxy.selection.SubsetSpec` itself, and its ranking or indices file exists.
    Everything else is left to the fit parser.
    """
    import yaml
    from jsonargparse import ArgumentParser

    subset: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        takes_value = key in ("-c", "--config", "--ckpt_path", "--trainer.max_epochs")
        takes_value |= key.startswith(("--data.subset.", "--data.init_args.subset."))
        if takes_value and not eq:
            if i + 1 >= len(argv):
                return  # the parser reports the missing value
            value, i = argv[i + 1], i + 1
        i += 1
        if key in ("-c", "--config"):
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(f"--config {value}: no such file (paths are relative to {Path.cwd()})")
            try:
                config = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise ValueError(f"--config {value} is not valid YAML: {str(error).splitlines()[0]}") from None
            if not isinstance(config, dict):
                raise ValueError(f"--config {value} holds a {type(config).__name__}, expected a mapping of options")
            data = config.get("data")
            data = data.get("init_args", data) if isinstance(data, dict) else None
            if isinstance(data, dict) and isinstance(data.get("subset"), dict):
                subset |= data["subset"]
            if isinstance(config.get("trainer"), dict) and "max_epochs" in config["trainer"]:
                trainer["max_epochs"] = (config["trainer"]["max_epochs"], f"trainer.max_epochs in {value}")
        elif key == "--ckpt_path":
            if value not in ("last", "best", "hpc", "registry") and "://" not in value and not Path(value).is_file():
                raise FileNotFoundError(f"--ckpt_path {value}: no such checkpoint (paths are relative to {Path.cwd()})")
        elif key == "--trainer.max_epochs":
            trainer["max_epochs"] = (yaml.safe_load(value), "--trainer.max_epochs")
        elif takes_value:
            subset[key.rsplit(".", 1)[1]] = yaml.safe_load(value)
    epochs, where = trainer.get("max_epochs", (None, ""))
    if epochs == 0:
        raise ValueError(f"{where} 0 trains nothing: give 1 or more epochs (-1 with --trainer.max_steps for no limit)")
    if not subset:
        return
    from lightning_proxy.selection.subset import SubsetSpec

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--data.subset", type=SubsetSpec)
    spec = parser.instantiate_classes(parser.parse_object({"data": {"subset": subset}})).data.subset
    for name in ("ranking", "indices"):
        path = getattr(spec, name)
        if isinstance(path, str) and not Path(path).is_file():
            raise FileNotFoundError(f"--data.subset.{name} {path}: no such file (paths are relative to {Path.cwd()})")
    if isinstance(spec.indices, str):  # read now, as the subset rule will: a bad file is said before Lightning
        from lightning_proxy.selection.subset import distinct, read_indices

        distinct(read_indices(spec.indices), spec.indices)
    if isinstance(spec.ranking, str):
        from lightning_proxy.selection.ranking import load_ranking

        load_ranking(spec.ranking)


def cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """The training CLI (``fit``, ``validate``, ``test``, ``predict``); ``args`` as on the command line, or sys.argv."""
    from lightning_proxy.training import ProxyCLI

    return ProxyCLI(args=list(args) if args is not None else None, run=run)


def main(args: Sequence[str] | None = None) -> None:
    """``lightning-proxy``: bad input ends in one line ``lightning-proxy: error: ...``; ``--debug`` (or
    ``LIGHTNING_PROXY_DEBUG=1``) shows the traceback instead."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = wants_traceback(argv)
    argv = [a for a in argv if a != "--debug"]
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads them itself (and warns when given args beside sys.argv)
    try:
        _run(argv, None if args is None else argv)
    except USER_ERRORS as error:
        if debug:
            raise
        command = argv[0] if argv and argv[0] in (*COMMANDS, *TRAINING_COMMANDS) else None
        prog = f"lightning-proxy {command}" if command else "lightning-proxy"
        known = _known_training_options if command in TRAINING_COMMANDS else None
        fail(prog, user_message(error, known, argv[1:]), code=2 if isinstance(error, argparse.ArgumentError) else 1)


def _known_training_options() -> list[str]:
    """The fit command's option names, for a suggestion in an error message (imports Lightning)."""
    from lightning_proxy.training import known_training_options

    return known_training_options()


def _not_a_tip(record: logging.LogRecord) -> bool:
    """Lightning's advertising tips (litlogger, litmodels) say nothing about the run: not on our command line."""
    return not str(record.msg).startswith("💡 Tip:")


def _run(argv: list[str], args: list[str] | None) -> None:
    from lightning_proxy.threads import apply_thread_policy

    apply_thread_policy()  # before any work: this process and every one it starts
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_tip)
    if argv and argv[0] in COMMANDS:
        run_command(argv[0], argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print("experiment commands (each has --help):")
        for name, command in sorted(COMMANDS.items()):
            print(f"  {name:22s}{command.description}")
        print()
    if argv and argv[0] in TRAINING_COMMANDS:
        check_training_args(argv[1:])
    cli(args)


if __name__ == "__main__":
    main()
