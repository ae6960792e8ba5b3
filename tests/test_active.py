"""Active learning via proxy: the schedule, the selection rules, a tiny run on digits and its resume."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy
from torch.utils.data import DataLoader

import lightning_proxy.experiments.active as active_module
from lightning_proxy.callbacks import PostTrainingScores
from lightning_proxy.experiments.active import labelled_sizes
from lightning_proxy.experiments.runs import read_result
from lightning_proxy.methods import KCenters, RandomSubset, Ranked, Records

DIGITS = str(Path(__file__).parents[1] / "configs" / "digits.yaml")
POOL_OF_DIGITS = 1437


# --- the schedule ----------------------------------------------------------------------------------------
def test_schedule_of_shares_accumulates_before_rounding():
    assert labelled_sizes(1000, [0.02, 0.08, 0.1], 0.5) == [20, 100, 200, 300, 400, 500]
    # 3 % steps of 1437: rounding each cumulative share, never the step, so no drift
    sizes = labelled_sizes(1437, [0.03], 0.3)
    assert sizes == [round(0.03 * k * 1437) for k in range(1, 11)]


def test_schedule_of_counts_and_the_budget_cap():
    assert labelled_sizes(100, [5, 10], 30) == [5, 15, 25, 30]
    assert labelled_sizes(100, [5, 0.1], 0.3) == [5, 15, 25, 30]  # counts and shares mix


@pytest.mark.parametrize("pool", [1, 7, 49, 1001])
def test_schedule_never_exceeds_the_pool_and_always_grows(pool):
    sizes = labelled_sizes(pool, [0.02, 0.08, 0.1], 1.0)
    assert sizes[-1] == pool and all(b > a for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[0] >= 1


def test_schedule_refuses_bad_steps():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        labelled_sizes(100, [0.02, 1.5], 0.5)
    with pytest.raises(ValueError, match="positive count"):
        labelled_sizes(100, [0], 0.5)
    with pytest.raises(ValueError, match="exceeds the pool"):
        labelled_sizes(100, [10], 200)
    with pytest.raises(ValueError, match="initial"):
        labelled_sizes(100, [], 0.5)


# --- selection on a pool that is a strict subset of the dataset -------------------------------------------
N = 60
POOL = np.sort(np.random.default_rng(0).choice(N, 40, replace=False))  # dataset indices
LABELLED = POOL[[3, 17, 25, 31]]


class FixedLogits(L.LightningDataModule):
    """Items ``(logits_i, label_i, i)``: the model below returns its input, so the logits are hand-made."""

    name = "fixed"

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.pool_size = logits, len(logits)

    def items(self, indices) -> list:
        return [(self.logits[i], 0, int(i)) for i in indices]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.items(LABELLED), batch_size=4)

    def scoring_dataloader(self, indices=None) -> DataLoader:
        return DataLoader(self.items(range(self.pool_size) if indices is None else indices), batch_size=7)


class Identity(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        x = batch[0]
        return {"loss": (x * self.w).sum(), "logits": x}

    def predict_step(self, batch, batch_idx):
        return {"logits": batch[0] + 0 * self.w, "features": batch[0]}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("method", ["least_confidence", "entropy"])
def test_uncertainty_picks_the_most_uncertain_among_the_unlabelled(tmp_path, method):
    logits = torch.randn(N, 5, generator=torch.Generator().manual_seed(1)) * 3
    unlabelled = np.setdiff1d(POOL, LABELLED)
    scored_file = active_module.save_indices(tmp_path / "scored.npy", unlabelled)
    scorer = PostTrainingScores(dirpath=str(tmp_path), statistics=[method], embeddings=False, indices=str(scored_file))
    trainer = L.Trainer(
        max_epochs=1, callbacks=[scorer], logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(Identity(), FixedLogits(logits))
    assert set(scorer.written) == {method}  # what the run hands on, not a path rebuilt by name
    chosen = Ranked(method).next_batch(Records(scorer.written), POOL, LABELLED, 6, seed=0)

    p = softmax(logits.double().numpy(), axis=1)
    # least confidence: 1 - max p; SVP's entropy: -sum p log p of the predicted distribution
    uncertainty = 1 - p.max(axis=1) if method == "least_confidence" else scipy_entropy(p, axis=1)
    expected = unlabelled[np.argsort(-uncertainty[unlabelled], kind="stable")[:6]]  # dataset indices, most first
    assert chosen.tolist() == expected.tolist()
    # what was scored is the unlabelled pool, nothing else (not the labelled set, not outside the pool)
    scored = np.load(tmp_path / f"{method}.npz")["indices"]
    assert sorted(scored.tolist()) == unlabelled.tolist()


def brute_force_farthest_first(x: np.ndarray, start: list[int], budget: int) -> list[int]:
    nearest = np.min(((x[:, None, :] - x[None, start, :]) ** 2).sum(-1), axis=1)
    order = []
    for _ in range(budget):
        j = int(np.argmax(nearest))
        order.append(j)
        nearest = np.minimum(nearest, ((x - x[j]) ** 2).sum(-1))
    return order


def test_k_centers_works_on_pool_positions_and_returns_dataset_indices(tmp_path):
    rng = np.random.default_rng(2)
    embeddings = np.full((N, 6), np.nan, dtype=np.float32)  # rows outside the pool were never scored
    embeddings[POOL] = rng.normal(size=(len(POOL), 6)) * rng.uniform(0.5, 3, size=(len(POOL), 1))
    np.save(tmp_path / "embeddings.npy", embeddings)
    records = Records({"embeddings": tmp_path / "embeddings.npy"})
    chosen = KCenters().next_batch(records, POOL, LABELLED, 8, seed=0)

    start = [int(np.flatnonzero(i == POOL)[0]) for i in LABELLED]
    expected = POOL[brute_force_farthest_first(embeddings[POOL].astype(np.float64), start, 8)]
    assert chosen.tolist() == expected.tolist()
    assert set(chosen) <= set(POOL) - set(LABELLED)


def test_random_batch_is_new_and_inside_the_pool():
    chosen = RandomSubset().next_batch(Records({}), POOL, LABELLED, 20, seed=5)
    assert len(set(chosen)) == 20 and set(chosen) <= set(POOL) - set(LABELLED)
    assert chosen.tolist() == RandomSubset().next_batch(Records({}), POOL, LABELLED, 20, seed=5).tolist()
    with pytest.raises(ValueError, match="only 36 pool examples are unlabelled"):
        RandomSubset().next_batch(Records({}), POOL, LABELLED, 37, seed=5)


# --- the experiment ----------------------------------------------------------------------------------------
QUICK = {
    "model.arch": "preact_resnet8",
    "trainer.max_epochs": 1,
    "trainer.limit_val_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.enable_checkpointing": False,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
}
RESULT_COLUMNS = ["seed", "selector", "method", "budget", "labelled", "val_error"]


def tiny_active(output: Path, **kw):
    args = {
        "proxy_config": DIGITS,
        "target_config": DIGITS,
        "output": str(output),
        "proxy_args": QUICK,
        "target_args": {**QUICK, "model.arch": "preact_resnet20"},
        # the pool: a seeded half of the dataset, so pool and dataset indices differ
        "data_args": {"data.subset.fraction": 0.5, "data.subset.seed": 3},
        "methods": ["least_confidence", "kcenters", "random"],
        "selectors": ["proxy", "target"],
        "schedule": [0.05],
        "budgets": [0.1, 0.15],
        "seeds": [0],
    }
    return active_module.active(**{**args, **kw})


def test_tiny_active_run_then_resume_after_a_crash(tmp_path, monkeypatch):
    pool = np.sort(np.random.default_rng(3).permutation(POOL_OF_DIGITS)[: round(0.5 * POOL_OF_DIGITS)])
    sizes = [36, 72, 108]  # 5 %, 10 %, 15 % of the 718-example pool
    out = tmp_path / "straight"
    summary = tiny_active(out)
    states = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("state.json")}
    assert sorted(states) == ["proxy_kcenters", "proxy_least_confidence", "random", "target_kcenters",
                              "target_least_confidence"]  # fmt: skip
    initial = {tuple(s["labelled"][:36]) for s in states.values()}
    assert len(initial) == 1  # every loop starts from the same random set
    for name, state in states.items():
        labelled = state["labelled"]
        assert len(labelled) == 108 and len(set(labelled)) == 108, name
        assert set(labelled) <= set(pool.tolist()), name  # dataset indices of pool examples only
        assert [r["size"] for r in state["rounds"]] == sizes
    # the round's selector trained on exactly the labelled prefix, and the target on the budget's prefix
    for name in ("proxy_least_confidence", "target_kcenters"):
        for size in sizes[:-1]:
            who = name.split("_")[0]
            assert (out / "seed0" / name / f"{who}_{size}" / "result.json").is_file()
            np.testing.assert_array_equal(
                np.load(out / "seed0" / name / f"labelled_{size}.npy"), states[name]["labelled"][:size]
            )
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 5 * 2 and set(results.labelled) == {72, 108}
    assert ((results.val_error >= 0) & (results.val_error <= 1)).all()
    assert np.allclose(results.val_error, results.best_error)  # the default: SVP's best over epochs
    # every fit starts from new weights: a seed per role and labelled size, the same in every loop
    by_size = results.groupby("labelled").training_seed.unique()
    assert all(len(seeds) == 1 for seeds in by_size) and by_size[72][0] != by_size[108][0]
    selector_seeds = {read_result(out / "seed0" / "proxy_kcenters" / f"proxy_{n}")["seed"] for n in (36, 72)}
    assert len(selector_seeds) == 2
    assert "seeding: per_training" in (out / "summary.txt").read_text()
    # SVP's selection time (training epochs, scoring, selecting) is part of the selector fits' wall time
    chosen = results[results.selector != "none"]
    assert (chosen.selection_seconds > 0).all() and (chosen.selection_wall_seconds > chosen.selection_seconds).all()
    rounds = states["proxy_least_confidence"]["rounds"][1:]
    assert all(0 < r["selector_train_seconds"] < r["selector_seconds"] and r["scoring_seconds"] > 0 for r in rounds)
    proxy = summary[summary.selector == "proxy"]
    assert proxy.selection_speedup.notna().all() and (proxy.selection_speedup > 0).all()
    for name in ("active.png", "summary.txt", "summary.csv"):
        assert (out / name).stat().st_size > 0, name

    # a crash in the sixth training, then a resume: same labelled sets, finished trainings kept; the straight
    # run proved the trainings, so here a training is the straight run's folder copied into place
    calls, crash_at = [], [6]

    def replayed_train(folder, training, *args, **kwargs):
        if (folder / "result.json").is_file():
            return read_result(folder)
        calls.append(folder)
        if len(calls) in crash_at:
            raise RuntimeError("simulated crash")
        labelled = Path(training.overrides["data.subset.indices"])  # the same labelled set as the straight run's
        np.testing.assert_array_equal(np.load(labelled), np.load(out / labelled.relative_to(crashed)))
        shutil.copytree(out / folder.relative_to(crashed), folder, dirs_exist_ok=True)
        return read_result(folder)

    crashed = tmp_path / "crashed"
    monkeypatch.setattr(active_module, "train", replayed_train)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_active(crashed)
    finished = sorted(p.parent for p in crashed.rglob("result.json"))
    stamps = {p: (p / "result.json").stat().st_mtime_ns for p in finished}
    calls.clear()
    crash_at.clear()
    tiny_active(crashed)
    assert all((p / "result.json").stat().st_mtime_ns == stamps[p] for p in finished)  # not trained again
    assert calls and not set(calls) & set(finished)
    for path in crashed.rglob("state.json"):
        assert json.loads(path.read_text())["labelled"] == states[path.parent.name]["labelled"], path
    resumed = pd.read_csv(crashed / "results.csv")
    pd.testing.assert_frame_equal(resumed[RESULT_COLUMNS], results[RESULT_COLUMNS])

    # the same folder with other settings is refused rather than mixed
    with pytest.raises(ValueError, match="other settings"):
        tiny_active(crashed, schedule=[0.05, 0.1], budgets=[0.15])


def test_active_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'vibes'"):
        tiny_active(tmp_path, methods=["least_confidence", "vibes"])
    with pytest.raises(ValueError, match=r"methods \['forgetting', 'ccs'\] pick no active-learning batch"):
        tiny_active(tmp_path, methods=["forgetting", "ccs", "random"])
    with pytest.raises(ValueError, match="not labelled-set sizes"):
        tiny_active(tmp_path, budgets=[0.12, 0.15])  # 86 examples: between the rounds of 72 and 108
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        tiny_active(tmp_path, proxy_config="nowhere.yaml")


def test_ddp_ranks_select_the_same_batches_and_train_on_the_same_labelled_sets(tmp_path):
    script = Path(__file__).parent / "scripts" / "ddp_active.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=900)
    runs = {}
    for rank in (0, 1):
        runs[rank] = {
            kind: [json.loads(line) for line in (tmp_path / f"rank{rank}_{kind}.jsonl").read_text().splitlines()]
            for kind in ("selected", "trained_on")
        }
    assert runs[0] == runs[1]
    assert [len(b) for b in runs[0]["selected"]] == [72, 72]  # one round per loop: 36 -> 108 of the 718
    assert len(runs[0]["trained_on"]) == 4  # two selector rounds, two target trainings
    states = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "run").rglob("state.json")}
    loops = ["proxy_least_confidence", "proxy_kcenters"]  # in the order they ran
    assert [states[name]["labelled"][36:] for name in loops] == runs[0]["selected"]
