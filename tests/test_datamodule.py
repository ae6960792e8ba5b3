import numpy as np
import pytest
import torch
from ddp_checks import assert_every_example_once_per_epoch

from lightning_proxy.datamodules import DigitsDataModule, SubsetSpec
from lightning_proxy.selection import Ranking, pool_fingerprint, save_ranking


@pytest.mark.parametrize("data_path", ["tensor", "items"])
def test_digits_items_carry_their_pool_index(data_path):
    dm = DigitsDataModule(batch_size=50, subset=SubsetSpec(fraction=0.25, seed=3), data_path=data_path)
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 1, 8, 8) and x.dtype == torch.float32
    assert set(idx.tolist()) <= set(dm.train_indices.tolist())
    assert torch.equal(y, torch.as_tensor(dm.targets[idx.numpy()]))  # the index names the example
    assert dm.pool_size == 1437 and len(dm.train_indices) == round(0.25 * 1437)
    seen = np.concatenate([b[2].numpy() for b in dm.train_dataloader()])
    assert sorted(seen.tolist()) == dm.train_indices.tolist()


@pytest.mark.parametrize("data_path", ["tensor", "items"])
def test_scoring_loader_is_the_whole_pool_in_order_without_augmentation(data_path):
    dm = DigitsDataModule(batch_size=64, subset=SubsetSpec(fraction=0.1), data_path=data_path)
    batches = list(dm.scoring_dataloader())
    indices = torch.cat([b[2] for b in batches])
    assert indices.tolist() == list(range(dm.pool_size))
    again = torch.cat([b[0] for b in dm.scoring_dataloader()])
    assert torch.equal(torch.cat([b[0] for b in batches]), again)


@pytest.mark.parametrize("data_path", ["tensor", "items"])
def test_class_subset_remaps_labels_and_restricts_validation(data_path):
    dm = DigitsDataModule(batch_size=2000, subset=SubsetSpec(classes=["3", "7", "9"]), data_path=data_path)
    assert dm.num_classes == 3
    x, y, idx = next(iter(dm.train_dataloader()))
    original = dm.targets[idx.numpy()]
    assert set(original.tolist()) == {3, 7, 9}
    assert (np.array([3, 7, 9])[y.numpy()] == original).all()
    vx, vy, _ = next(iter(dm.val_dataloader()))
    assert set(vy.tolist()) == {0, 1, 2} and len(vy) == sum(int(c) in (3, 7, 9) for c in dm._val_set.targets)


def test_ranking_subset_through_the_datamodule(tmp_path):
    dm = DigitsDataModule()
    scores = np.random.default_rng(0).normal(size=dm.pool_size)
    meta = {"statistic": "loss", "num_examples": dm.pool_size, "fingerprint": dm.fingerprint}
    path = save_ranking(tmp_path / "loss.npz", Ranking.from_scores(scores, meta))
    easy = DigitsDataModule(subset=SubsetSpec(ranking=str(path), keep="lowest", fraction=0.2))
    easy.setup("fit")
    expected = np.sort(np.argsort(scores)[: round(0.2 * dm.pool_size)])
    assert easy.train_indices.tolist() == expected.tolist()


def test_ranking_from_another_dataset_is_refused_before_training(tmp_path):
    other_targets = np.zeros(1437, dtype=np.int64)
    meta = {
        "statistic": "loss",
        "num_examples": 1437,
        "fingerprint": pool_fingerprint(other_targets),
        "dataset": "cifar10",
    }
    path = save_ranking(tmp_path / "loss.npz", Ranking.from_scores(np.arange(1437.0), meta))
    dm = DigitsDataModule(subset=SubsetSpec(ranking=str(path), fraction=0.5))
    with pytest.raises(ValueError, match="cifar10.*fingerprint"):
        dm.setup("fit")


def test_bad_datamodule_arguments():
    with pytest.raises(ValueError, match="flip_p"):
        DigitsDataModule(flip_p=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)


@pytest.mark.parametrize("data_path", ["tensor", "items"])
def test_ddp_two_processes_see_every_subset_example_once_per_epoch(ddp_fits, data_path):
    out = ddp_fits / f"subset_{data_path}"
    subset = np.load(out / "subset.npy")
    targets = np.load(out / "targets.npy")
    assert len(set(targets[subset].tolist())) == 7
    assert_every_example_once_per_epoch(out, subset)


def test_other_half_of_the_classes_on_digits():
    dm = DigitsDataModule(batch_size=2000, subset=SubsetSpec(classes=["3", "7", "9"], other_classes=True))
    assert dm.num_classes == 7
    _, y, idx = next(iter(dm.train_dataloader()))
    assert set(dm.targets[idx.numpy()].tolist()) == {0, 1, 2, 4, 5, 6, 8}
    assert set(y.tolist()) == set(range(7))
    _, vy, _ = next(iter(dm.val_dataloader()))
    assert len(vy) == sum(int(c) not in (3, 7, 9) for c in dm._val_set.targets)
