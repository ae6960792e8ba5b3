"""Figures of the experiments, drawn on matplotlib's Agg canvas outside pyplot and written as PNG."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_proxy.files import save_figure


def new_figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, np.ndarray]:
    """A figure on the Agg canvas, outside pyplot: no display, no global backend switch, nothing to leak."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def plot_error_curves(
    curves: Iterable[tuple[str, pd.Series, pd.DataFrame, dict[str, Any]]],
    path: Path,
    xlabel: str,
    title: str,
    reference: tuple[str, float] | None = None,
) -> Path:
    """One error-bar line per ``(label, x, group with error_mean/error_std, style)``; errors in % (SVP Figures 2, 6)."""
    fig, axes = new_figure(1, 1, (6.4, 4.4))
    ax = axes[0, 0]
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
    return save_figure(fig, path)
