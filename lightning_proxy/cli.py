"""The ``lightning-proxy`` command: LightningCLI's fit/validate/test/predict plus the experiment commands."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_proxy.datamodules.base import PoolDataModule
from lightning_proxy.module import ClassificationModule

# name -> ("module:function" taking argv, one-line description); imported only when the command runs
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "coreset": ("lightning_proxy.experiments.coreset:main", "core-set selection via proxy, end to end"),
    "active": ("lightning_proxy.experiments.active:main", "batch active learning via proxy, round by round"),
    "sweep": ("lightning_proxy.experiments.sweep:main", "proxy datasets for hyperparameter search (Optuna studies)"),
    "report": ("lightning_proxy.experiments.sweep:report_command", "proxy-quality report of a sweep's storage"),
    "compare-rankings": ("lightning_proxy.experiments.compare:main", "correlations and top-k overlap of rankings"),
    "aggregate-rankings": ("lightning_proxy.cli:aggregate_rankings_command", "combine several seeds' rankings"),
}


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


def aggregate_rankings_command(argv: list[str]) -> None:
    """``lightning-proxy aggregate-rankings A.npz B.npz ... --output OUT.npz [--how mean|sum]``."""
    import argparse

    from lightning_proxy.selection import aggregate_rankings, load_ranking, save_ranking

    parser = argparse.ArgumentParser(
        prog="lightning-proxy aggregate-rankings",
        description="Aggregate the rankings of several runs (seeds) of one proxy into one ranking file.",
    )
    parser.add_argument("rankings", nargs="+", help="ranking files (.npz) of one statistic on one pool")
    parser.add_argument("--output", "-o", required=True, help="the ranking file to write (.npz)")
    parser.add_argument("--how", choices=("mean", "sum"), default="mean", help="how scores combine (default: mean)")
    ns = parser.parse_args(argv)
    ranking = aggregate_rankings([load_ranking(p) for p in ns.rankings], how=ns.how)
    print(f"{save_ranking(ns.output, ranking)}: {ranking.metadata['statistic']}, {ns.how} of {len(ns.rankings)} runs")


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXPERIMENTS:
        module, function = EXPERIMENTS[argv[0]][0].split(":")
        getattr(importlib.import_module(module), function)(argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print("experiment commands (each has --help):")
        for name, (_, description) in sorted(EXPERIMENTS.items()):
            print(f"  {name:22s}{description}")
        print()
    cli(argv)


if __name__ == "__main__":
    main()
