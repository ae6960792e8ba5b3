"""The proxy-quality notebook runs end to end on a tiny sweep's results file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "proxy_quality.ipynb"


def tiny_results() -> pd.DataFrame:
    """Two datasets, the target and three proxies, six configs, with per-epoch accuracies."""
    rng = np.random.default_rng(0)
    configs = ["default", "model.lr=0.1", "model.lr=0.01", "model.lr=0.001", "model.wd=0.01", "model.wd=0.001"]
    strategies = {"target": (0.0, 10.0), "random-0.1": (1.0, 1.0), "easiest-0.1": (0.3, 1.2), "epochs-1": (1.5, 0.6)}
    rows = []
    for dataset, scale in (("digits", 0.9), ("digits_hard", 0.6)):
        truth = rng.normal(size=len(configs))
        for strategy, (noise, seconds) in strategies.items():
            for config, value in zip(configs, truth, strict=True):
                final = scale + 0.03 * (value + noise * rng.normal())
                curve = [round(final - 0.1 / (epoch + 1) + 0.01 * rng.normal(), 4) for epoch in range(4)]
                rows.append(
                    {
                        "dataset": dataset,
                        "strategy": strategy,
                        "family": strategy.split("-")[0],
                        "config": config,
                        "hyperparameter": config.split("=")[0],
                        "accuracy": max(curve),
                        "seconds": seconds * (1 + 0.1 * rng.random()),
                        "epoch_accuracies": json.dumps(curve),
                        "trial": 0,
                    }
                )
    return pd.DataFrame(rows)


def test_notebook_runs(tmp_path: Path):
    pytest.importorskip("nbclient")
    import nbformat
    from nbclient import NotebookClient

    results_path = tmp_path / "results.csv"
    tiny_results().to_csv(results_path, index=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = nb.cells[0]
    assert "parameters" in first.metadata.get("tags", [])
    assert 'results_path = "runs/sweep_digits/results.csv"' in first.source
    first.source = f"results_path = {str(results_path)!r}"
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit it without outputs"

    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = [o.data["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any(
        text.startswith("| strategy | r2 | spearman_good |") and "| target | 1.000 |" in text for text in markdown
    )
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "best cost-adjusted r2:" in printed
    assert (tmp_path / "quality" / "quality_vs_cost.png").is_file()
