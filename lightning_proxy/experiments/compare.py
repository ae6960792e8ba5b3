"""How much rankings agree (SVP Figure 3): Spearman, Pearson and top-k overlap, with a heatmap.

lightning-proxy compare-rankings runs/a/forgetting.npz runs/b/forgetting.npz ... --top 0.1 --output cmp.png
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from lightning_proxy.experiments.plots import new_figure
from lightning_proxy.files import save_figure, write_csv
from lightning_proxy.selection.ranking import Ranking, aggregate_rankings, load_ranking, save_ranking


def _finite(scores: np.ndarray) -> np.ndarray:
    """Infinite scores (never-learned examples) become just beyond the finite range, for Pearson."""
    finite = scores[np.isfinite(scores)]
    top, bottom = (finite.max(), finite.min()) if len(finite) else (0.0, 0.0)
    return np.where(np.isposinf(scores), top + 1, np.where(np.isneginf(scores), bottom - 1, scores))


def compare_pair(a: Ranking, b: Ranking, top: float = 0.1) -> dict[str, float]:
    """Correlations over the examples both rank, and the overlap of their top ``top`` share of those."""
    if a.metadata.get("fingerprint") != b.metadata.get("fingerprint"):
        raise ValueError("the rankings were made on different pools (their fingerprints differ)")
    common, ia, ib = np.intersect1d(a.indices, b.indices, return_indices=True)
    if len(common) < 2:
        raise ValueError(f"the rankings share {len(common)} examples; correlations need at least 2")
    sa, sb = a.scores[ia], b.scores[ib]
    k = max(1, round(top * len(common)))
    top_a = set(common[np.lexsort((common, -sa))[:k]].tolist())
    top_b = set(common[np.lexsort((common, -sb))[:k]].tolist())
    return {
        "spearman": float(stats.spearmanr(sa, sb).statistic),
        "pearson": float(stats.pearsonr(_finite(sa), _finite(sb)).statistic),
        f"top{top:g}_overlap": len(top_a & top_b) / k,
        "examples": len(common),
    }


def compare_rankings(rankings: Sequence[Ranking], names: Sequence[str], top: float = 0.1) -> pd.DataFrame:
    """One row per pair of rankings."""
    if not 0 < top <= 1:
        raise ValueError(f"top must be a fraction in (0, 1], got {top}")
    rows = []
    for (i, a), (j, b) in itertools.combinations(enumerate(rankings), 2):
        rows.append({"a": names[i], "b": names[j], **compare_pair(a, b, top)})
    return pd.DataFrame(rows)


def plot_heatmap(table: pd.DataFrame, names: Sequence[str], path: str | Path) -> Path:
    """One symmetric heatmap per measure in ``table`` (Spearman, Pearson, top-k overlap), as SVP's Figure 3."""
    index = {n: i for i, n in enumerate(names)}
    values = [c for c in table.columns if c not in ("a", "b", "examples")]
    size = 1.2 + 0.9 * len(names)
    fig, axes = new_figure(1, len(values), ((size + 1.5) * len(values), size))
    for ax, value in zip(axes[0], values, strict=True):
        matrix = np.eye(len(names))
        for a, b, v in zip(table["a"], table["b"], table[value], strict=True):
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = v
        image = ax.imshow(matrix, vmin=-1 if matrix.min() < 0 else 0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i, j in itertools.product(range(len(names)), repeat=2):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w" if matrix[i, j] < 0.6 else "k")
        fig.colorbar(image, ax=ax, label=value)
        top = re.fullmatch(r"top([\d.]+)_overlap", value)
        ax.set_title(f"overlap of the top {float(top[1]):.0%}" if top else value.capitalize())
    fig.suptitle("Agreement between rankings")
    return save_figure(fig, Path(path))


def compare(
    rankings: list[str], names: list[str] | None = None, top: float = 0.1, output: str = "ranking_comparison.png"
) -> pd.DataFrame:
    """Spearman and Pearson correlations and top-k overlap between ranking files of one pool, and a heatmap.

    Args:
        rankings: two or more ranking files (``.npz``) of one pool.
        names: labels for the heatmap (default: parent folder/statistic).
        top: share of examples for the top-k overlap.
        output: the heatmap PNG; the table goes beside it as CSV.
    """
    if len(rankings) < 2:
        raise ValueError("compare-rankings needs at least two ranking files")
    names = names or [f"{Path(p).parent.name}/{Path(p).stem}" for p in rankings]
    if len(names) != len(rankings) or len(set(names)) != len(names):
        raise ValueError("--names needs one distinct name per ranking file")
    table = compare_rankings([load_ranking(p) for p in rankings], names, top)
    png = plot_heatmap(table, names, output)
    write_csv(png.with_suffix(".csv"), table)
    print(table.to_string(index=False, float_format="%.3f"))
    print(f"heatmap: {png}, table: {png.with_suffix('.csv')}")
    return table


def aggregate(
    rankings: list[str], output: str, how: Literal["mean", "sum"] = "mean", allow_mixed: bool = False
) -> Path:
    """Aggregate the rankings of several runs (seeds) of one proxy into one ranking file.

    Args:
        rankings: ranking files (``.npz``) of one model and statistic on one pool.
        output: the ranking file to write (``.npz``).
        how: how the scores combine.
        allow_mixed: combine rankings of different models, statistics or pools of one size, recording each
            run's under ``mixed`` in the metadata.
    """
    ranking = aggregate_rankings([load_ranking(p) for p in rankings], how=how, allow_mixed=allow_mixed)
    path = save_ranking(output, ranking)
    print(f"{path}: {ranking.metadata['statistic']}, {how} of {len(rankings)} runs")
    return path
