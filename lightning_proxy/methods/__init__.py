"""Selection methods as objects: what the proxy must record, and how its records become a subset or a batch.

``forgetting``, ``entropy`` or any recorded statistic (hardest or most uncertain first), ``kcenters``,
``ccs``, ``d2`` and ``random``; :func:`build_method` makes one from its name or from
``{name: ccs, statistic: forgetting, ...}``. A new method is one class here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_proxy.methods.base import (
    EMBEDDINGS,
    STATISTICS,
    Records,
    SelectionMethod,
    callbacks_for,
    class_shares,
)
from lightning_proxy.methods.ccs import CCS
from lightning_proxy.methods.d2 import D2Pruning
from lightning_proxy.methods.kcenters import KCenters
from lightning_proxy.methods.ranked import UNCERTAINTY, Ranked
from lightning_proxy.methods.uniform import RandomSubset

METHODS: dict[str, type[SelectionMethod]] = {"random": RandomSubset, "kcenters": KCenters, "ccs": CCS, "d2": D2Pruning}


def known_methods() -> list[str]:
    return [*METHODS, *STATISTICS]


def build_method(
    spec: str | Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> SelectionMethod:
    """A method from its name (a statistic's name keeps its hardest first) or ``{name: ..., option: value}``;
    ``defaults`` are options by method name (e.g. ``{"kcenters": {"start": 0.02}}``), which ``spec`` overrides."""
    options = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
    name = options.pop("name", None)
    if name in STATISTICS and name not in METHODS:
        if options:
            raise ValueError(f"method {name} (hardest first by {name}) takes no options, got {sorted(options)}")
        return Ranked(name)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {known_methods()}")
    options = {**(defaults or {}).get(name, {}), **options}
    try:
        return METHODS[name](**options)
    except TypeError as error:
        raise ValueError(f"method {name}: {error}") from None


__all__ = [
    "CCS",
    "EMBEDDINGS",
    "METHODS",
    "STATISTICS",
    "UNCERTAINTY",
    "D2Pruning",
    "KCenters",
    "RandomSubset",
    "Ranked",
    "Records",
    "SelectionMethod",
    "build_method",
    "callbacks_for",
    "class_shares",
    "known_methods",
]
