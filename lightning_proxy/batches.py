"""The one reader of a batch: ``(input, target, index)`` tuples, or dicts under common key names.

The module's steps and the per-example callbacks both read batches here, so a batch the module trains on is
a batch the callbacks understand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

INPUT_KEYS = ("input", "inputs", "image", "images", "x")
TARGET_KEYS = ("target", "targets", "label", "labels", "y")
INDEX_KEYS = ("index", "indices", "idx")


def _first(batch: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((batch[k] for k in keys if k in batch), None)


def split_batch(batch: Any) -> tuple[Any, Any, Any]:
    """``(inputs, targets, indices)`` of a batch; ``None`` for a part it does not carry.

    A tuple or list is ``(input, target)`` or ``(input, target, index, ...)``; a dict names them with one
    of :data:`INPUT_KEYS`, :data:`TARGET_KEYS` and :data:`INDEX_KEYS`.
    """
    if isinstance(batch, Mapping):
        return _first(batch, INPUT_KEYS), _first(batch, TARGET_KEYS), _first(batch, INDEX_KEYS)
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1], (batch[2] if len(batch) >= 3 else None)
    return None, None, None


def describe(batch: Any) -> str:
    """What a batch is, for error messages."""
    return f"a dict with keys {sorted(batch)}" if isinstance(batch, Mapping) else type(batch).__name__
