"""Hugging Face ``datasets`` folders as pools: images (the digits) and text (reviews), through the fit command."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_proxy.cli import main
from lightning_proxy.datamodules import DigitsDataModule, HuggingFaceDataModule, SubsetSpec
from lightning_proxy.datamodules.text import write_synthetic_reviews
from lightning_proxy.selection import load_ranking

datasets = pytest.importorskip("datasets")
ROOT = Path(__file__).parents[1]


def digits_dict(folder: Path) -> Path:
    """The bundled digits' fixed split as a DatasetDict of PIL images and ClassLabel labels (1,437 / 360)."""
    from PIL import Image

    splits = {}
    for split, name in (("train", "train"), ("val", "test")):
        pool = DigitsDataModule().build_pool(split, None)
        images = [Image.fromarray(image[0].numpy(), mode="L") for image in pool.images]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=pool.classes)})
        splits[name] = datasets.Dataset.from_dict({"image": images, "label": pool.targets.tolist()}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def reviews_dict(folder: Path) -> Path:
    """Synthetic five-class reviews as a DatasetDict of (text, label): title and text as the release's reader
    joins them, its escaped newlines read as spaces."""
    release = write_synthetic_reviews(folder.parent / "csv", "full", train_rows=300, test_rows=60)
    splits = {}
    for split in ("train", "test"):
        with open(release / f"{split}.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        splits[split] = datasets.Dataset.from_dict(
            {"text": [f"{r[1]} {r[2]}".replace("\\n", " ") for r in rows], "label": [int(r[0]) - 1 for r in rows]}
        )
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_a_digits_folder_trains_writes_a_ranking_and_trains_on_it(tmp_path):
    folder = digits_dict(tmp_path / "digits_hf")
    dm = HuggingFaceDataModule(path=str(folder))
    assert (dm.in_channels, dm.num_base_classes, dm.pool_size) == (1, 10, 1437)
    bundled = DigitsDataModule()
    assert dm.fingerprint == bundled.fingerprint  # the same labels in the same order
    assert torch.equal(dm.train_pool.images, bundled.build_pool("train", None).images)
    assert dm.mean[0] == pytest.approx(bundled.train_pool.images.double().mean().item() / 255, rel=1e-6)

    common = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--model.arch", "preact_resnet8"]
    data = ["--data", "lightning_proxy.datamodules.HuggingFaceDataModule", "--data.path", str(folder)]
    out = tmp_path / "runs"
    main(
        [
            "fit",
            "--config",
            "configs/digits.yaml",
            *data,
            *common,
            "--trainer.default_root_dir",
            str(out / "a"),
            "--trainer.logger",
            "false",
        ]
    )
    ranking = load_ranking(next(out.glob("a/**/forgetting.npz")))
    assert ranking.metadata["fingerprint"] == dm.fingerprint and ranking.metadata["num_examples"] == 1437
    path = next(out.glob("a/**/forgetting.npz"))
    subset = HuggingFaceDataModule(path=str(folder), subset=SubsetSpec(ranking=str(path), fraction=0.5))
    subset.setup("fit")
    assert len(subset.train_indices) == round(0.5 * 1437)
    main(
        [
            "fit",
            "--config",
            "configs/digits.yaml",
            *data,
            *common,
            "--trainer.default_root_dir",
            str(out / "b"),
            "--trainer.logger",
            "false",
            "--data.subset.ranking",
            str(path),
            "--data.subset.fraction",
            "0.5",
        ]
    )


def test_a_text_folder_trains_fasttext_and_a_subset_of_its_ranking(tmp_path, monkeypatch):
    folder = reviews_dict(tmp_path / "reviews_hf")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    args = [
        "fit",
        "--config",
        "configs/amazon_full_fasttext.yaml",
        "--data",
        "lightning_proxy.datamodules.HuggingFaceDataModule",
        "--data.path",
        str(folder),
        "--data.text_column",
        "text",
        "--data.buckets",
        "1000",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.callbacks+=lightning_proxy.callbacks.ForgettingEvents",
    ]
    main(args)
    path = next(tmp_path.glob("runs/**/forgetting.npz"))
    dm = HuggingFaceDataModule(path=str(folder), text_column="text", buckets=1000)
    assert (dm.in_channels, dm.pool_size, dm.class_names) == (1001, 300, ["0", "1", "2", "3", "4"])
    assert load_ranking(path).metadata["fingerprint"] == dm.fingerprint
    main([*args, "--data.subset.ranking", str(path), "--data.subset.fraction", "0.5"])
    assert any((folder / ".token_cache").iterdir())  # tokenised once, beside the folder


def test_text_batches_are_the_same_tokens_as_the_amazon_path(tmp_path):
    from lightning_proxy.datamodules import AmazonReviewsDataModule

    folder = reviews_dict(tmp_path / "reviews_hf")
    hf = HuggingFaceDataModule(path=str(folder), text_column="text", buckets=1000, batch_size=50)
    amazon = AmazonReviewsDataModule(root=str(tmp_path / "csv"), variant="full", buckets=1000, batch_size=50)
    x_hf, y_hf, i_hf = next(iter(hf.scoring_dataloader()))
    x_am, y_am, i_am = next(iter(amazon.scoring_dataloader()))
    assert torch.equal(i_hf, i_am) and torch.equal(y_hf, y_am) and torch.equal(x_hf, x_am)


def test_bad_columns_and_splits_are_named_with_what_exists(tmp_path):
    folder = reviews_dict(tmp_path / "reviews_hf")
    with pytest.raises(ValueError, match=r"no column 'body'; the columns are \['text', 'label'\] \(text_column\)"):
        HuggingFaceDataModule(path=str(folder), text_column="body")
    with pytest.raises(ValueError, match=r"no split 'validation'; it has \['test', 'train'\]"):
        HuggingFaceDataModule(path=str(folder), text_column="text", val_split="validation")
    with pytest.raises(ValueError, match=r"no column 'image'.*\(image_column\)"):
        HuggingFaceDataModule(path=str(folder))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HuggingFaceDataModule(path=str(tmp_path / "nowhere"))


def test_a_dataset_from_python_and_images_of_several_sizes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, 6, 3), dtype=np.uint8)) for h in (6, 6, 8, 6)]
    data = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 0, 1]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    both = datasets.DatasetDict({"train": data, "test": data})
    with pytest.raises(ValueError, match="image 2 of train is 6x8 and the first 6x6: give data.image_size"):
        HuggingFaceDataModule(dataset=both).setup("fit")
    dm = HuggingFaceDataModule(dataset=both, image_size=4)
    dm.setup("fit")
    assert dm.train_pool.images.shape == (4, 3, 4, 4) and dm.in_channels == 3 and dm.class_names == ["0", "1"]


def test_ddp_two_processes_see_every_example_of_a_datasets_subset_once_per_epoch(ddp_fits):
    from ddp_checks import assert_every_example_once_per_epoch

    out = ddp_fits / "hf_text"
    subset = np.load(out / "subset.npy")
    assert len(subset) == round(0.5 * 301)
    assert_every_example_once_per_epoch(out, subset)
    assert load_ranking(out / "forgetting.npz").metadata["num_examples"] == 301
