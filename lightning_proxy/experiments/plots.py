"""Error curves of the experiments (SVP Figures 2 and 6 style), written as PNG without a display."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd


def plot_error_curves(
    curves: Iterable[tuple[str, pd.Series, pd.DataFrame, dict[str, Any]]],
    path: Path,
    xlabel: str,
    title: str,
    reference: tuple[str, float] | None = None,
) -> None:
    """One error-bar line per ``(label, x, group with error_mean/error_std, style)``; errors in %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, x, group, style in curves:
        yerr = 100 * group.error_std.fillna(0)
        ax.errorbar(x, 100 * group.error_mean, yerr=yerr, label=label, capsize=3, **style)
    if reference is not None:
        ax.axhline(100 * reference[1], color="k", linestyle=":", label=reference[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("target top-1 error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
