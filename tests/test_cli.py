"""Every documented config, through the real command, on tiny data written in its real on-disk format."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fakedata import write_cifar, write_image_folders

from lightning_proxy.cli import cli, main
from lightning_proxy.datamodules.imagefolder import IMAGENETTE_CLASSES, IMAGEWOOF_CLASSES
from lightning_proxy.datamodules.text import write_synthetic_reviews

CONFIGS = Path(__file__).parents[1] / "configs"
TRAINING_CONFIGS = sorted(
    p.name for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("coreset", "active", "sweep"))
)


def fake_root(config: str, tmp_path: Path) -> Path:
    """Write the tiny dataset ``config`` reads and return its --data.root."""
    if config.startswith("cifar100"):
        write_cifar(tmp_path, num_classes=100, train_per_class=1, test_per_class=1)
    elif config.startswith("cifar10"):
        write_cifar(tmp_path, num_classes=10, train_per_class=2, test_per_class=1)
    elif config.startswith("imagenette"):
        write_image_folders(tmp_path / "imagenette2-160", list(IMAGENETTE_CLASSES), {"train": 1, "val": 1})
    elif config.startswith("imagewoof"):
        write_image_folders(tmp_path / "imagewoof2-160", list(IMAGEWOOF_CLASSES), {"train": 1, "val": 1})
    elif config.startswith("amazon"):
        write_synthetic_reviews(tmp_path, "full" if "_full_" in config else "polarity", train_rows=8, test_rows=4)
    elif config.startswith("imagenet"):
        wnids = [f"n{i:08d}" for i in range(1000)]
        write_image_folders(tmp_path, wnids, {"train": 1, "val": 1}, size=(8, 8))
    return tmp_path


@pytest.mark.parametrize("config", TRAINING_CONFIGS)
def test_config_prints(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["arch"] == yaml.safe_load((CONFIGS / config).read_text())["model"]["arch"]


@pytest.mark.parametrize("config", TRAINING_CONFIGS)
def test_config_fits_one_batch(config, tmp_path):
    root = fake_root(config, tmp_path / "data")
    args = [
        "fit",
        "--config",
        str(CONFIGS / config),
        "--trainer.fast_dev_run",
        "1",
        "--trainer.precision",
        "32-true",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger",
        "false",
        "--data.batch_size",
        "2",
        "--data.num_workers",
        "0",
    ]
    if config != "digits.yaml":
        args += ["--data.root", str(root)]
    if config.startswith(("imagenet", "imagenette", "imagewoof")):
        args += ["--data.image_size", "32"]
    run = cli(args)
    assert run.trainer.state.finished
    assert run.model.hparams.num_classes == run.datamodule.num_classes  # linked from the data


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for option in ("--model.arch", "--model.lr", "--model.label_smoothing", "--data", "--trainer.precision"):
        assert option in out
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "lightning_proxy.datamodules.DigitsDataModule"])
    out = capsys.readouterr().out
    for option in ("--data.subset.fraction", "--data.subset.ranking", "--data.subset.keep", "--data.flip_p"):
        assert option in out


def test_digits_subset_from_the_command_line_and_predict_of_its_checkpoint(tmp_path, capsys):
    run = cli(
        [
            "fit",
            "--config",
            str(CONFIGS / "digits.yaml"),
            "--trainer.max_epochs",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--data.subset.classes",
            "[1, 4, 7]",
            "--data.subset.fraction",
            "0.5",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    dm = run.datamodule
    assert run.model.hparams.num_classes == 3
    assert len(dm.train_indices) == round(0.5 * sum(t in (1, 4, 7) for t in dm.targets))
    with open(next(Path(tmp_path).rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("val/acc_best") for row in rows)

    # the config's callbacks wrote ranking files into the run's log dir, readable with numpy and pandas alone
    run_dir = Path(run.trainer.log_dir)
    kept_classes = np.flatnonzero(np.isin(dm.targets, [1, 4, 7]))
    expected = {"forgetting": dm.train_indices, "el2n": dm.train_indices, "aum": dm.train_indices}
    expected |= {"loss": kept_classes, "entropy": np.arange(dm.pool_size), "margin": np.arange(dm.pool_size)}
    for name, indices in expected.items():
        with np.load(run_dir / f"{name}.npz") as f:
            frame = pd.DataFrame({"index": f["indices"], "score": f["scores"]})
            metadata = json.loads(str(f["metadata"]))
        assert sorted(frame["index"]) == sorted(indices.tolist()), name
        assert frame["score"].is_monotonic_decreasing
        assert (
            metadata["statistic"] == name and metadata["dataset"] == "digits" and metadata["model"] == "preact_resnet20"
        )
        assert metadata["num_examples"] == dm.pool_size and metadata["fingerprint"] == dm.fingerprint
        assert metadata["subset"]["classes"] == ["1", "4", "7"] and metadata["subset"]["fraction"] == 0.5
        assert metadata["train_examples"] == len(dm.train_indices)
    assert np.load(run_dir / "embeddings.npy").shape == (dm.pool_size, 64)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o644}, modes  # the embeddings too, as every other output

    # predict of the checkpoint (the config already has PostTrainingScores) writes beside it and says where
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    main(
        [
            "predict",
            "--config",
            str(CONFIGS / "digits.yaml"),
            "--ckpt_path",
            str(checkpoint),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--data.subset.classes",
            "[1, 4, 7]",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    scored = checkpoint.with_suffix("")
    assert f"predict wrote its files to {scored}" in capsys.readouterr().out
    assert sorted(p.name for p in scored.iterdir()) == sorted(
        ["config.yaml", "embeddings.npy", "entropy.npz", "least_confidence.npz", "loss.npz", "margin.npz"]
    )
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]  # no new log version
    for name in ("loss", "margin"):
        with np.load(run_dir / f"{name}.npz") as fit, np.load(scored / f"{name}.npz") as predicted:
            assert np.array_equal(fit["indices"], predicted["indices"])
            np.testing.assert_allclose(fit["scores"], predicted["scores"], rtol=1e-5, atol=1e-6)
            assert json.loads(str(predicted["metadata"]))["epochs"] == 1  # the checkpoint's trained epochs


def last_error_line(argv: list[str], capsys) -> str:
    """The last line ``lightning-proxy`` prints on stderr for ``argv``, which must fail without a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "override, message",
    [
        (["--data.subset.fraction", "1.5"], r"subset.fraction must be in \(0, 1\], got 1.5"),
        (["--data.subset.fraction=abc"], r"data.subset.fraction: expected a float. Got value: abc"),
        (
            ["--data.subset.fracton", "0.5"],
            r"--data.subset.fracton is not an option; did you mean --data.subset.fraction\?",
        ),
        (["--trainer.max_epoch", "3"], r"--trainer.max_epoch is not an option; did you mean --trainer.max_epochs\?"),
        (["--model.arch", "resnet2O"], r"Unknown model 'resnet2O'. Did you mean 'preact_resnet20', .*"),
        (["--data.subset.classes", "[ten, 3]"], r"unknown class names \['ten'\].*"),
        (["--data.subset.classes", "[3]"], r".*at least 2.*"),
        (["--data.subset.ranking", "missing.npz"], r"--data.subset.ranking missing.npz: no such file .*"),
    ],
)
def test_bad_input_ends_in_one_clear_line_and_leaves_no_run_folder(override, message, tmp_path, capsys):
    argv = ["fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    line = last_error_line([*argv, *override], capsys)
    assert re.fullmatch(f"lightning-proxy fit: error: {message}", line), line
    assert not list(tmp_path.rglob("version_*"))  # a fit that failed before its first step left nothing


def test_bad_files_are_named_in_the_line(tmp_path, capsys):
    argv = ["fit", "--config", str(CONFIGS / "digits.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    typo = tmp_path / "mine.yaml"
    typo.write_text("trainer:\n  max_epoch: 3\n")
    line = last_error_line([*argv, "--config", str(typo)], capsys)
    assert line == (
        f"lightning-proxy fit: error: trainer.max_epoch in {typo} is not an option; did you mean trainer.max_epochs?"
    )
    indices = tmp_path / "labelled.npy"
    np.save(indices, np.array([3, 5000, 7000]))
    line = last_error_line([*argv, "--data.subset.indices", str(indices)], capsys)
    expected = f"lightning-proxy fit: error: subset.indices {indices}: 5000 falls outside the pool [0, 1437)"
    assert line.startswith(expected)
    assert "(2 values do)" in line
    assert not list(tmp_path.rglob("version_*"))


def test_debug_shows_the_traceback_instead(tmp_path):
    with pytest.raises(ValueError, match=r"subset.fraction must be in \(0, 1\]"):
        main(["fit", "--config", str(CONFIGS / "digits.yaml"), "--data.subset.fraction", "1.5", "--debug"])


def test_values_are_checked_before_lightning_is_imported():
    code = (
        "import sys\nfrom lightning_proxy.cli import main\ntry:\n"
        f"    main(['fit', '--config', {str(CONFIGS / 'digits.yaml')!r}, '--data.subset.fraction', '1.5'])\n"
        "except SystemExit as e:\n    print(e.code, 'lightning.pytorch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["1", "False"], run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("lightning-proxy fit: error: subset.fraction")


def test_experiment_options_are_checked_before_any_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    base = ["coreset", "--config", "configs/coreset_digits.yaml", "--output", str(tmp_path / "out")]
    line = last_error_line([*base, "--target_args", "{trainer.max_epocs: 1}"], capsys)
    assert line == (
        "lightning-proxy coreset: error: target_args (with data_args) (over configs/digits.yaml): "
        "trainer.max_epocs is not an option; did you mean trainer.max_epochs?"
    )
    line = last_error_line([*base, "--target_args", "{trainer.max_epoch: 1}"], capsys)  # no abbreviations
    assert line.endswith("trainer.max_epoch is not an option; did you mean trainer.max_epochs?")
    line = last_error_line([*base, "--fractons", "[0.3]"], capsys)
    assert line == "lightning-proxy coreset: error: --fractons is not an option; did you mean --fractions?"
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    active = ["active", "--config", "configs/active_digits.yaml", "--output", str(tmp_path / "active")]
    line = last_error_line([*active, "--target_args", "{trainer.max_epocs: 1}"], capsys)
    assert line.startswith("lightning-proxy active: error: target_args") and line.endswith(
        "trainer.max_epocs is not an option; did you mean trainer.max_epochs?"
    )
    assert not (tmp_path / "active").exists()


def test_the_last_bad_inputs_are_one_line_before_lightning(tmp_path, capsys):
    """Each refused before any training: epochs that train nothing, a missing checkpoint, a pickle, repeats."""
    argv = ["--config", str(CONFIGS / "digits.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    line = last_error_line(["fit", *argv, "--trainer.max_epochs", "0"], capsys)
    assert line.startswith("lightning-proxy fit: error: --trainer.max_epochs 0 trains nothing")
    line = last_error_line(["predict", *argv, "--ckpt_path", str(tmp_path / "nowhere.ckpt")], capsys)
    assert line == f"lightning-proxy predict: error: --ckpt_path {tmp_path / 'nowhere.ckpt'}: no such checkpoint " + (
        f"(paths are relative to {Path.cwd()})"
    )
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"index": 3}], dtype=object), allow_pickle=True)
    line = last_error_line(["fit", *argv, "--data.subset.indices", str(pickled)], capsys)
    assert line.startswith(f"lightning-proxy fit: error: subset.indices {pickled} holds Python objects (a pickle)")
    assert "allow_pickle" not in line
    repeated = tmp_path / "repeated.npy"
    np.save(repeated, np.array([4, 9, 9, 2]))
    line = last_error_line(["fit", *argv, "--data.subset.indices", str(repeated)], capsys)
    assert line == f"lightning-proxy fit: error: subset.indices {repeated} repeat index 9"
    assert not list(tmp_path.rglob("version_*"))


def test_an_empty_review_file_is_named(tmp_path):
    from lightning_proxy.datamodules.text import read_reviews

    empty = tmp_path / "train.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"{empty} holds no reviews"):
        list(read_reviews(empty, 5))
