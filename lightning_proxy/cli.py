"""The ``lightning-proxy`` command: LightningCLI's fit/validate/test/predict plus the experiment commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_proxy.datamodules.base import PoolDataModule
from lightning_proxy.module import ClassificationModule

# name -> (entry point taking argv, one-line description); the experiments register themselves here.
EXPERIMENTS: dict[str, tuple[Callable[[list[str]], object], str]] = {}


class ProxyCLI(LightningCLI):
    """LightningCLI whose model learns its class count and input channels from the datamodule."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")


def cli(args: Sequence[str] | None = None, run: bool = True) -> ProxyCLI:
    """Build (and by default run) the training CLI; ``args`` as on the command line, without the program name."""
    return ProxyCLI(
        ClassificationModule,
        PoolDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXPERIMENTS:
        EXPERIMENTS[argv[0]][0](argv[1:])
        return
    cli(argv)


if __name__ == "__main__":
    main()
