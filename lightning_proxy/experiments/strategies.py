"""The cheaper versions of a target task that a sweep compares (000 paper), and its grid of configurations.

A *strategy* is a random fraction over all classes, half the classes (or the other half) and a random
fraction of them, the easiest or hardest fraction by a loss ranking (optionally after dropping a band at
that end), fewer epochs, or a distilled set of a few synthetic images per class (made once per dataset,
:mod:`lightning_proxy.distill`): each a set of training overrides. ``successive_halving`` and ``hyperband`` are
not proxies but multi-fidelity searches of the target task itself, with Optuna's pruner of that name. The
grid is the training config's defaults, then one hyperparameter changed at a time.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

FAMILIES = ("random", "half_classes", "other_half_classes", "easiest", "hardest", "epochs", "distilled")
# what a distilled strategy may set: lightning_proxy.distill.matching.distill's options, and its training's epochs
DISTILL_OPTIONS = (
    "name",
    "method",
    "ipc",
    "iterations",
    "lr",
    "init",
    "batch_real",
    "augment",
    "outer_loop",
    "inner_loop",
    "net_lr",
    "epochs",
)
DISTILL_SHORT = {"distribution_matching": "dm", "gradient_matching": "gm"}
PRUNERS = {"successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner"}  # on the target task


@dataclass
class Strategy:
    """A proxy of the target task: its name (``easiest-0.1``), family, and the overrides that build it.

    ``size`` is the share of the pool it trains on (a distilled set: its images per class); ``distill`` the
    options of the distillation that makes its synthetic set.
    """

    name: str
    family: str
    size: float = 1.0
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    needs_ranking: bool = False
    distill: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None  # multi-fidelity search on the target task: Optuna's pruner and its args

    def make_pruner(self, max_epochs: int) -> Any:
        if self.pruner is None:
            return None
        args = {k: v for k, v in self.pruner.items() if k != "name"}
        if self.family == "hyperband":
            args["max_resource"] = max_epochs
        return getattr(optuna.pruners, PRUNERS[self.family])(**args)


def _size_text(value: float) -> str:
    return f"{value:g}"


def strategies_from(spec: dict[str, list[Any]] | None, num_classes: int, seed: int = 0) -> list[Strategy]:
    """``{"random": [0.1, 0.5], "hardest": [{"fraction": 0.5, "skip": 0.05}], "epochs": [1, 5]}`` -> strategies.

    Sizes are shares of the (class-restricted) pool, or ``{fraction, skip}`` for a band of a loss ranking;
    ``epochs`` lists epoch counts. ``half_classes`` draws ``num_classes // 2`` classes with ``seed``;
    ``other_half_classes`` keeps the rest. ``successive_halving`` and ``hyperband`` search the target task
    itself with Optuna's pruner of that name, one per reduction factor (or ``{reduction_factor, min_resource}``
    in epochs). ``distilled`` takes ``{method, ipc, ...}``: a synthetic set made once by
    :func:`~lightning_proxy.distill.matching.distill` with those options (``epochs``: the training's epochs on
    it; ``name``: the strategy's name, where two differ in other options). The target comes first.
    """
    out = [Strategy("target", "target")]
    for family, sizes in (spec or {}).items():
        if family not in (*FAMILIES, *PRUNERS):
            raise ValueError(f"unknown strategy {family!r}; choose from {[*FAMILIES, *PRUNERS]}")
        for size in sizes:
            if family in PRUNERS:
                args = size if isinstance(size, dict) else {"reduction_factor": size}
                unknown = set(args) - {"reduction_factor", "min_resource"}
                if unknown or not isinstance(args.get("reduction_factor"), int) or args["reduction_factor"] < 2:
                    raise ValueError(
                        f"strategy {family} takes reduction factors >= 2 (or {{reduction_factor, min_resource}}), "
                        f"got {size!r}"
                    )
                pruner = {"min_resource": 1, **args}
                out.append(Strategy(f"{family}-{args['reduction_factor']}", family, pruner=pruner))
                continue
            if family == "distilled":
                out.append(_distilled(size))
                continue
            if family == "epochs":
                if not isinstance(size, int) or size < 1:
                    raise ValueError(f"strategy epochs takes whole numbers of epochs >= 1, got {size!r}")
                out.append(Strategy(f"epochs-{size}", family, epochs=size, overrides={"trainer.max_epochs": size}))
                continue
            band = size if isinstance(size, dict) else {"fraction": size}
            unknown = set(band) - {"fraction", "skip"}
            if unknown:
                raise ValueError(f"strategy {family} size {size!r}: unknown keys {sorted(unknown)} (fraction, skip)")
            fraction, skip = float(band["fraction"]), float(band.get("skip", 0.0))
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"strategy {family}: fraction must be in (0, 1], got {fraction}")
            if skip and family not in ("easiest", "hardest"):
                raise ValueError(f"strategy {family}: skip drops a band of the loss ranking (easiest, hardest only)")
            name = f"{family}-{_size_text(fraction)}" + (f"-skip{_size_text(skip)}" if skip else "")
            overrides: dict[str, Any] = {"data.subset.fraction": fraction, "data.subset.seed": seed}
            if family in ("half_classes", "other_half_classes"):
                if num_classes < 4:
                    raise ValueError(f"half the classes needs at least 4 classes, the dataset has {num_classes}")
                overrides["data.subset.classes"] = num_classes // 2
                overrides["data.subset.other_classes"] = family == "other_half_classes"
            if family in ("easiest", "hardest"):
                overrides["data.subset.keep"] = "lowest" if family == "easiest" else "highest"
                overrides["data.subset.skip"] = skip
            out.append(Strategy(name, family, fraction, None, overrides, family in ("easiest", "hardest")))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"strategies repeat a size: {names}")
    return out


def _distilled(spec: Any) -> Strategy:
    if not isinstance(spec, dict) or set(spec) - set(DISTILL_OPTIONS) or spec.get("method") not in DISTILL_SHORT:
        raise ValueError(
            f"strategy distilled takes {{method: {' or '.join(DISTILL_SHORT)}, ipc: N, ...}} with keys from "
            f"{list(DISTILL_OPTIONS)}; got {spec!r}"
        )
    ipc, epochs = spec.get("ipc", 10), spec.get("epochs")
    whole = {"ipc": 1, "epochs": 1, "outer_loop": 1, "inner_loop": 1, "batch_real": 1, "iterations": 0}
    for key, least in whole.items():
        value = ipc if key == "ipc" else spec.get(key)
        if value is not None and (not isinstance(value, int) or value < least):
            raise ValueError(f"strategy distilled: {key} is a whole number >= {least}, got {spec!r}")
    if spec.get("init", "real") not in ("real", "noise") or any(
        not isinstance(spec.get(k, 1.0), int | float) or spec.get(k, 1.0) <= 0 for k in ("lr", "net_lr")
    ):
        raise ValueError(f"strategy distilled: init is real or noise, lr and net_lr positive numbers; got {spec!r}")
    options = {k: v for k, v in spec.items() if k not in ("epochs", "name")} | {"ipc": ipc}
    name = spec.get("name") or f"distilled-{DISTILL_SHORT[spec['method']]}-ipc{ipc}"
    overrides = {"trainer.max_epochs": epochs} if epochs else {}
    return Strategy(name, "distilled", float(ipc), epochs, overrides, distill=options)


def lookup(tree: Any, key: str) -> Any:
    """The value at a dotted key of a training config, looking through ``init_args``; KeyError if absent."""
    node = tree
    for part in key.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def config_name(key: str, value: Any) -> str:
    return f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"


def grid_configs(grid: dict[str, list[Any]], config: str) -> dict[str, dict[str, Any]]:
    """The configurations: ``default`` (the training config as it is) and one per value that differs from it.

    A value equal to the config's own is the default and is not repeated.
    """
    defaults = config_defaults(grid, config)
    configs: dict[str, dict[str, Any]] = {"default": {}}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid.{key} must be a non-empty list of values, got {values!r}")
        for value in values:
            if key not in defaults or value != defaults[key]:  # not in the config: every value is a change
                configs[config_name(key, value)] = {key: value}
    return configs


def config_defaults(grid: dict[str, list[Any]], config: str) -> dict[str, Any]:
    """The training config's own value of every grid key it sets (through ``init_args``)."""
    tree = yaml.safe_load(Path(config).read_text()) or {}
    defaults = {}
    for key in grid:
        with contextlib.suppress(KeyError):
            defaults[key] = lookup(tree, key)
    return defaults
