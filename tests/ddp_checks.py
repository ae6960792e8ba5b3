"""What the 2-process DDP fits of ``scripts/ddp_fits.py`` must show, shared by the tests that read them."""

from pathlib import Path

import numpy as np


def assert_every_example_once_per_epoch(out: Path, subset: np.ndarray, epochs: int = 2) -> None:
    """Across both ranks each epoch covers ``subset`` exactly, repeating only the sampler's padding, in a new
    order every epoch (``rank{r}_epoch{e}.npy``: the pool indices rank r trained on in epoch e)."""
    padding = (-len(subset)) % 2
    orders = []
    for epoch in range(epochs):
        ranks = [np.load(out / f"rank{r}_epoch{epoch}.npy") for r in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == (len(subset) + padding) // 2
        seen = np.concatenate(ranks)
        assert set(seen.tolist()) == set(subset.tolist())  # every example of the subset, none outside it
        assert len(seen) - len(np.unique(seen)) == padding  # repeats only from the sampler's padding
        orders.append(ranks[0])
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
