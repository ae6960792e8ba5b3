"""The ``lightning-proxy`` command: LightningCLI's fit/validate/test/predict plus the experiment commands.

Every experiment command is a typed Python function of ``lightning_proxy.experiments``, parsed by
jsonargparse from its signature and docstring in one way (``--config`` YAML and ``--key value`` options,
``--help``); a command that takes ranking files takes them as positional arguments.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class Command(NamedTuple):
    target: str  # "module:function", imported only when the command runs
    description: str
    positional: str | None = None  # a list parameter given as positional arguments


COMMANDS: dict[str, Command] = {
    "coreset": Command("lightning_proxy.experiments.coreset:coreset", "core-set selection via proxy, end to end"),
    "active": Command("lightning_proxy.experiments.active:active", "batch active learning via proxy, round by round"),
    "sweep": Command("lightning_proxy.experiments.sweep:sweep", "proxy datasets for hyperparameter search (Optuna)"),
    "report": Command("lightning_proxy.experiments.sweep:sweep_report", "proxy-quality report of a sweep"),
    "compare-rankings": Command(
        "lightning_proxy.experiments.compare:compare", "correlations and top-k overlap of rankings", "rankings"
    ),
    "aggregate-rankings": Command(
        "lightning_proxy.experiments.compare:aggregate", "combine several seeds' rankings", "rankings"
    ),
}


def run_command(name: str, argv: Sequence[str]) -> Any:
    """Parse ``argv`` for the command's function (its signature and docstring) and call it."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    command = COMMANDS[name]
    module, function_name = command.target.split(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), function_name)
    summary = (function.__doc__ or command.description).split("\n\n")[0]  # the options carry the Args
    parser = ArgumentParser(prog=f"lightning-proxy {name}", description=summary)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of this command's options")
    skip = set()
    if command.positional is not None:
        parser.add_argument(command.positional, nargs="+", help="ranking files (.npz) of one pool")
        skip.add(command.positional)
    parser.add_function_arguments(function, skip=skip, as_positional=False)
    config = parser.parse_args(list(argv))
    kwargs = {k: v for k, v in config.as_dict().items() if k != "config"}
    return function(**kwargs)


def cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """The training CLI (``fit``, ``validate``, ``test``, ``predict``); ``args`` as on the command line, or sys.argv."""
    from lightning_proxy.training import ProxyCLI

    return ProxyCLI(args=list(args) if args is not None else None, run=run)


def main(args: Sequence[str] | None = None) -> None:
    from lightning_proxy.threads import apply_thread_policy

    try:
        apply_thread_policy()  # before any work: this process and every one it starts
    except ValueError as error:
        raise SystemExit(f"lightning-proxy: {error}") from None
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in COMMANDS:
        run_command(argv[0], argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print("experiment commands (each has --help):")
        for name, command in sorted(COMMANDS.items()):
            print(f"  {name:22s}{command.description}")
        print()
    cli(args)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
