"""The coreset experiment end to end on digits (tiny trainings), its resume, and compare-rankings."""

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lightning_proxy.experiments.coreset as coreset_module
from lightning_proxy.cli import main
from lightning_proxy.experiments.compare import compare_rankings
from lightning_proxy.experiments.runs import Progress, read_result, run_files, written
from lightning_proxy.methods import KCenters, Records
from lightning_proxy.methods.kcenters import start_count
from lightning_proxy.selection import Ranking, save_ranking
from lightning_proxy.selection.kcenters import greedy_k_centers

DIGITS = str(Path(__file__).parents[1] / "configs" / "digits.yaml")
QUICK = {  # every example seen (rankings must cover the pool to supply subsets)
    "model.arch": "preact_resnet8",
    "trainer.max_epochs": 2,
    "trainer.limit_val_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.enable_checkpointing": False,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
}
POOL = 1437
RESULT_COLUMNS = ["seed", "method", "fraction", "val_error", "train_examples"]


def tiny_coreset(output: Path, **kw):
    args = {
        "proxy_config": DIGITS,
        "target_config": DIGITS,
        "output": str(output),
        "proxy_args": QUICK,
        "target_args": {**QUICK, "trainer.max_epochs": 1},
        "methods": ["forgetting", "entropy", "kcenters", "random"],
        "fractions": [0.3, 0.6],
        "seeds": [0],
        "oracle": True,
    }
    return coreset_module.coreset(**{**args, **kw})


def test_tiny_coreset_run_then_resume_after_a_crash(tmp_path, monkeypatch, capsys, caplog):
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        summary = tiny_coreset(tmp_path / "straight")
    out = tmp_path / "straight"
    said = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("GPU available") for m in said) == 1, "Lightning's start-up lines, once per experiment"
    assert sum(m.startswith("Seed set to") for m in said) == 1
    assert "-" in (out / "summary.txt").read_text() and "nan" not in (out / "summary.txt").read_text().lower()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 14 and lines[0].startswith("[1/14] proxy: error ")  # one line per finished training
    assert lines[1].startswith("[2/14] full: error ") and lines[-1].startswith("[14/14] oracle_entropy 0.6: ")
    assert all(" left" in line for line in lines[:-1]) and " left" not in lines[-1]
    results = pd.read_csv(out / "results.csv")
    # a subset that keeps a class at less than half its share of the pool is said, naming method and size
    thin = results[(results.method != "full") & (results.min_class_share < 0.5)]
    said = {str(w.message).split(" (seed")[0] for w in warned if "share of the pool" in str(w.message)}
    assert said == {f"{row.method} at {row.fraction:g}" for row in thin.itertuples()}
    methods = ["forgetting", "entropy", "kcenters", "random", "oracle_entropy", "oracle_forgetting"]
    assert sorted(set(results.method)) == sorted(["full", *methods])
    for row in results.itertuples():
        assert row.train_examples == (POOL if row.method == "full" else round(row.fraction * POOL))
        assert 0 <= row.val_error <= 1
    assert (results.end_to_end_seconds >= results.seconds).all()
    assert set(summary.columns) >= {"error_mean", "error_std", "end_to_end_seconds", "speedup"}
    for name in ("coreset.png", "ranking_correlation.png", "summary.txt", "summary.csv", "ranking_correlation.csv"):
        assert (out / name).stat().st_size > 0, name

    # the k-centers subset is the greedy order on the proxy's embeddings, from one seeded point, of its size
    embeddings = np.load(out / "seed0" / "proxy" / "embeddings.npy")
    for fraction in (0.3, 0.6):
        subset = np.load(out / "seed0" / "kcenters" / f"{fraction:g}" / "subset.npy")
        expected = greedy_k_centers(embeddings, round(fraction * POOL), seed=0).numpy()
        assert subset.tolist() == sorted(expected.tolist())
    # every subset is exactly round(fraction * pool), the one the target trained on, and its class shares recorded
    for row in results[results.method != "full"].itertuples():
        subset = np.load(out / "seed0" / row.method / f"{row.fraction:g}" / "subset.npy")
        assert len(subset) == len(set(subset.tolist())) == round(row.fraction * POOL)
        assert 0 <= row.min_class_share <= 1
    assert {"vs_random_mean", "vs_random_std", "min_class_share"} <= set(summary.columns)
    random_rows = summary[summary.method == "random"]
    assert (random_rows.vs_random_mean == 0).all()

    # each run hands back the files its callbacks wrote, relative to its folder
    proxy_files = read_result(out / "seed0" / "proxy")["files"]
    assert proxy_files == {"forgetting": "forgetting.npz", "entropy": "entropy.npz", "embeddings": "embeddings.npy"}
    assert read_result(out / "seed0" / "full")["files"] == {"forgetting": "forgetting.npz", "entropy": "entropy.npz"}
    assert read_result(out / "seed0" / "random" / "0.3")["files"] == {}

    # a crash in the middle of the fifth training (its folder half written), then a resume; the straight run
    # proved the trainings, so here a training is the straight run's folder copied into place (files and all)
    calls, crash_at = [], [5]

    def replayed_train(folder, *args, **kwargs):
        if (folder / "result.json").is_file():
            return read_result(folder)
        calls.append(folder)
        if len(calls) in crash_at:
            folder.mkdir(parents=True, exist_ok=True)  # its subset.npy is written before it trains
            (folder / "metrics.csv").write_text("epoch,val/acc\n0,")
            raise RuntimeError("simulated crash")
        shutil.copytree(out / folder.relative_to(crashed), folder, dirs_exist_ok=True)
        return read_result(folder)

    crashed = tmp_path / "crashed"
    monkeypatch.setattr(coreset_module, "train", replayed_train)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_coreset(crashed)
    finished = sorted(p.parent for p in crashed.rglob("result.json"))
    stamps = {p: (p / "result.json").stat().st_mtime_ns for p in finished}
    assert len(finished) == 4 and not (crashed / "results.csv").exists()
    calls.clear()
    crash_at.clear()
    tiny_coreset(crashed)
    assert all((p / "result.json").stat().st_mtime_ns == stamps[p] for p in finished)  # not trained again
    trainings = 2 + 6 * 2  # the proxy, the target on everything, six methods at two fractions
    assert not set(calls) & set(finished) and len(calls) == trainings - 4  # the rest, each once
    resumed = pd.read_csv(crashed / "results.csv")
    pd.testing.assert_frame_equal(resumed[RESULT_COLUMNS], results[RESULT_COLUMNS])


def test_the_files_of_a_run_are_read_from_its_result_and_a_missing_one_says_what_to_do(tmp_path):
    folder = tmp_path / "run"
    save_ranking(folder / "forgetting.npz", ranking(np.arange(4.0)))
    np.save(folder / "embeddings.npy", np.zeros((4, 2), dtype=np.float32))
    recorded = {"files": {"forgetting": "forgetting.npz"}}
    assert run_files(folder, recorded) == {"forgetting": folder / "forgetting.npz"}
    # a result written before runs recorded their files: the callbacks' default names in the folder
    assert run_files(folder, {}) == {"embeddings": folder / "embeddings.npy", "forgetting": folder / "forgetting.npz"}
    with pytest.raises(FileNotFoundError, match=r"wrote no entropy file \(\['forgetting'\]\): delete .* to train"):
        written(folder, recorded, "entropy")
    (folder / "forgetting.npz").unlink()
    with pytest.raises(FileNotFoundError, match="its forgetting file .* is gone: delete .* to train it again"):
        written(folder, recorded, "forgetting")


def test_progress_lines_estimate_from_the_trainings_done_here():
    progress = Progress(4)
    assert progress.finished("proxy", {"val_error": 0.5, "seconds": 99}, trained=False) == (
        "[1/4] proxy: error 50.0%, done before"
    )  # found on disk: no estimate yet
    assert progress.finished("full", {"val_error": 0.033, "seconds": 41}, trained=True) == (
        "[2/4] full: error 3.3%, 41 s; about 82 s left"
    )
    assert progress.finished("random 0.5", {"val_error": 0.1, "seconds": 179}, trained=True) == (
        "[3/4] random 0.5: error 10.0%, 179 s; about 2 min left"
    )
    last = progress.finished("last", {"val_error": None, "seconds": 1}, trained=True)
    assert last == "[4/4] last: no validation, 1 s"


def test_coreset_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'vibes'; choose from \['random', 'kcenters', 'ccs', 'd2'"):
        tiny_coreset(tmp_path, methods=["forgetting", "vibes"])
    with pytest.raises(ValueError, match="method ccs: .*unexpected keyword argument 'strta'"):
        tiny_coreset(tmp_path, methods=[{"name": "ccs", "strta": 5}])
    with pytest.raises(ValueError, match="name one method twice"):
        tiny_coreset(tmp_path, methods=["random", "random"])
    with pytest.raises(ValueError, match="seeds is empty"):
        tiny_coreset(tmp_path, seeds=[])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        tiny_coreset(tmp_path, fractions=[0.5, 1.5])
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        tiny_coreset(tmp_path, target_config="nowhere.yaml")


def ranking(scores, **meta):
    return Ranking.from_scores(scores, {"statistic": "s", "num_examples": len(scores), "fingerprint": "f", **meta})


def test_compare_rankings_values_and_heatmap(tmp_path, capsys):
    a = ranking([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    b = ranking([2.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 9.0])  # two swaps at both ends
    c = ranking([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, np.inf])  # reversed but the never-learned last
    table = compare_rankings([a, b, c], ["a", "b", "c"], top=0.2).set_index(["a", "b"])
    # Spearman of a and b: 1 - 6 * sum(d^2) / (n (n^2 - 1)) with four rank differences of 1
    assert table.loc[("a", "b"), "spearman"] == pytest.approx(1 - 6 * 4 / (10 * 99))
    assert table.loc[("a", "b"), "top0.2_overlap"] == 1.0  # both put examples 8 and 9 on top
    assert table.loc[("a", "c"), "top0.2_overlap"] == 0.5  # {9, 8} against {9, 0}
    ranks_c = [9, 8, 7, 6, 5, 4, 3, 2, 1, 10]
    expected = np.corrcoef(np.arange(1, 11), ranks_c)[0, 1]
    assert table.loc[("a", "c"), "spearman"] == pytest.approx(expected)

    paths = []
    for name, r in {"a": a, "b": b}.items():
        paths.append(str(save_ranking(tmp_path / name / "s.npz", r)))
    main(["compare-rankings", *paths, "--top", "0.2", "--output", str(tmp_path / "cmp.png")])
    assert (tmp_path / "cmp.png").stat().st_size > 0
    assert pd.read_csv(tmp_path / "cmp.csv").spearman.iloc[0] == pytest.approx(1 - 24 / 990)
    assert "a/s" in capsys.readouterr().out
    other = ranking([1.0] * 10, fingerprint="g")
    with pytest.raises(ValueError, match="different pools"):
        compare_rankings([a, other], ["a", "other"])


@pytest.mark.parametrize("config", sorted(p.name for p in (Path(DIGITS).parent).glob("coreset_*.yaml")))
def test_coreset_configs_parse_and_name_existing_training_configs(config, capsys, monkeypatch):
    monkeypatch.chdir(Path(DIGITS).parents[1])
    with pytest.raises(SystemExit) as exit_info:
        main(["coreset", "--config", f"configs/{config}", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for key in ("proxy_config", "target_config"):
        path = next(line.split(":", 1)[1].strip() for line in printed.splitlines() if line.startswith(key))
        assert Path(path).is_file(), path


def test_kcenters_start_keeps_its_random_points_then_adds_the_farthest(tmp_path):
    # points on a line; SVP's start: random points (here 2, drawn with the seed: indices 3 and 4, at 3 and 10)
    x = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 20.0, 30.0], dtype=np.float32)
    np.save(tmp_path / "embeddings.npy", x[:, None])
    records = Records({"embeddings": tmp_path / "embeddings.npy"}, np.zeros(8, dtype=np.int64))
    assert np.random.default_rng(1).choice(8, 2, replace=False).tolist() == [3, 4]
    # nearest-center distances from {3, 10}: 30 is farthest (20), then 20 (10), then 0 (3)
    assert KCenters(start=2).choose(records, np.arange(8), 5, seed=1).tolist() == [3, 4, 7, 6, 0]
    assert KCenters(start=2).subset(records, 5, seed=1).tolist() == [0, 3, 4, 6, 7]
    assert start_count(0.25, 8, 8) == 2 and start_count(1000, 8, 8) == 1000 and start_count(1000, 4, 8) == 500
    with pytest.raises(ValueError, match="kcenters_start must be"):
        KCenters(start=1.5)


def test_a_proxy_no_better_than_the_largest_class_is_reported():
    from lightning_proxy.experiments.coreset import _warn_if_uninformed

    targets = np.repeat(np.arange(4), [40, 30, 20, 10])  # always class 0: 60 % wrong
    with pytest.warns(UserWarning, match=r"error of 59.5%, no better than always predicting the largest class \(60.0%"):
        _warn_if_uninformed(0.595, targets, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_uninformed(0.58, targets, seed=3)  # two points better: it has learned something
        _warn_if_uninformed(None, targets, seed=3)


def test_nested_overrides_flatten_except_dict_options_and_classes():
    from lightning_proxy.experiments.runs import flat

    nested = {"data.subset": {"fraction": 0.5}, "model.arch_kwargs": {"widths": [8]}, "trainer": {"max_epochs": 2}}
    assert flat(nested) == {"data.subset.fraction": 0.5, "model.arch_kwargs": {"widths": [8]}, "trainer.max_epochs": 2}
    assert flat({"data": {"class_path": "X"}}) == {"data": {"class_path": "X"}}


def test_a_resume_with_other_settings_refuses_or_retrains_and_redoes_what_is_damaged(tmp_path, capsys):
    out, small = tmp_path / "out", {"methods": ["forgetting"], "fractions": [0.3], "oracle": False}
    tiny_coreset(out, **small)
    proxy = out / "seed0" / "proxy"
    (proxy / ".forgetting.x1y2.tmp.npz").write_bytes(b"half")  # a write a kill cut short
    two_epochs = {"target_args": {**QUICK, "trainer.max_epochs": 2}}
    with pytest.raises(ValueError, match=r"seed0/full holds .* \(trainer\.max_epochs: 1 -> 2\).*--retrain_changed"):
        tiny_coreset(out, **small, **two_epochs)
    assert not list(proxy.glob(".*.tmp*")), "the orphaned temporary file is gone"
    assert len(read_result(out / "seed0" / "full")["epoch_val_acc"]) == 1, "nothing was overwritten"
    capsys.readouterr()
    tiny_coreset(out, **small, **two_epochs, retrain_changed=True)
    results = pd.read_csv(out / "results.csv")
    said = capsys.readouterr().out
    assert said.startswith("[1/3] proxy: error") and "done before" in said.splitlines()[0]  # the proxy is unchanged
    for folder in (out / "seed0" / "full", out / "seed0" / "forgetting" / "0.3"):
        assert len(read_result(folder)["epoch_val_acc"]) == 2, f"{folder} trained again, for two epochs"
    # a ranking file deleted under the finished proxy: the proxy trains again, the rest is read back
    (proxy / "forgetting.npz").unlink()
    stamp = (out / "seed0" / "full" / "result.json").stat().st_mtime_ns
    tiny_coreset(out, **small, **two_epochs)
    assert "forgetting file is missing or damaged; training it again" in capsys.readouterr().out
    assert (proxy / "forgetting.npz").is_file()
    assert (out / "seed0" / "full" / "result.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv")[RESULT_COLUMNS], results[RESULT_COLUMNS])
