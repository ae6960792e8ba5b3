"""A pool of one's own tensors and MNIST-1D on it: batches, subsets, rankings, ranks, and the 1-D CNN."""

import random

import lightning as L
import numpy as np
import pytest
import torch
from ddp_checks import assert_every_example_once_per_epoch

from lightning_proxy.callbacks import ForgettingEvents
from lightning_proxy.datamodules import MNIST1DDataModule, SubsetSpec, TensorPoolDataModule
from lightning_proxy.models import build_model
from lightning_proxy.module import ClassificationModule
from lightning_proxy.selection.ranking import load_ranking


def features(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    generator = np.random.default_rng(seed)
    labels = generator.integers(3, size=n)
    inputs = torch.from_numpy(generator.normal(size=(n, 6)).astype(np.float32) + labels[:, None])
    return inputs, labels


def test_batches_are_the_pool_rows_with_their_labels_and_indices():
    inputs, labels = features(50)
    dm = TensorPoolDataModule(train=(inputs, labels), val=features(20, 1), classes=["a", "b", "c"], batch_size=8)
    assert (dm.num_classes, dm.in_channels, dm.pool_size) == (3, 6, 50)
    seen = []
    for x, y, index in dm.train_dataloader():
        assert torch.equal(x, inputs[index]) and torch.equal(y, torch.as_tensor(labels)[index])
        seen += index.tolist()
    assert sorted(seen) == list(range(50))
    scored = torch.cat([index for _, _, index in dm.scoring_dataloader()])
    assert scored.tolist() == list(range(50))  # in order, unshuffled


def test_rank_shards_of_an_epoch_cover_the_subset_once():
    inputs, labels = features(42)
    dm = TensorPoolDataModule(train=(inputs, labels), val=features(9, 1), subset=SubsetSpec(fraction=0.5, seed=1))
    dm.setup("fit")
    batches = dm.batches("train", dm.train_indices, 4, train=True)
    shards = [torch.cat([i for _, _, i in batches.shard(r, 2)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 11  # 21 kept, padded to 22
    assert set(torch.cat(shards).tolist()) == set(dm.train_indices.tolist())


def test_bad_pools_are_refused_in_one_line():
    inputs, labels = features(10)
    with pytest.raises(ValueError, match="10 inputs but labels of shape"):
        TensorPoolDataModule(train=(inputs, labels[:9]))
    with pytest.raises(ValueError, match="labels must be integers"):
        TensorPoolDataModule(train=(inputs, labels.astype(float)))
    with pytest.raises(ValueError, match="only 2 class names"):
        TensorPoolDataModule(train=(inputs, labels), classes=["a", "b"])
    dm = TensorPoolDataModule(train=(inputs, labels))
    with pytest.raises(ValueError, match="no 'val' split: pass val="):
        dm.setup("fit")


def test_mnist1d_is_the_published_generator_and_leaves_global_random_state_alone():
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(3)
    np.random.seed(3)
    expected = random.random(), np.random.random()
    random.seed(3)
    np.random.seed(3)
    dm = MNIST1DDataModule(num_samples=200)
    assert (dm.pool_size, len(dm.load_pool("val"))) == (160, 40)
    assert (random.random(), np.random.random()) == expected
    args = get_dataset_args()
    args.num_samples = 200
    reference = make_dataset(args)
    pool = dm.train_pool
    assert pool.inputs.shape == (160, 1, 40) and pool.inputs.dtype == torch.float32
    np.testing.assert_allclose(pool.inputs[:, 0].numpy(), reference["x"], rtol=1e-6)
    assert pool.targets.tolist() == reference["y"].tolist()


def test_cnn1d_reads_signals_of_any_length_and_gives_its_embeddings():
    model = build_model("cnn1d", num_classes=10, in_channels=2, widths=[8, 16], pooled=3)
    for length in (40, 17):
        x = torch.randn(4, 2, length)
        assert model(x).shape == (4, 10) and model.forward_features(x).shape == (4, 48)
    with pytest.raises(ValueError, match="at least one convolution"):
        build_model("cnn1d", num_classes=10, in_channels=1, widths=[])


def test_a_fit_on_mnist1d_writes_a_ranking_a_second_fit_trains_on(tmp_path):
    L.seed_everything(0)
    dm = MNIST1DDataModule(num_samples=400)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ForgettingEvents(dirpath=str(tmp_path))],
    )
    trainer.fit(ClassificationModule(arch="cnn1d", num_classes=10, in_channels=1), dm)
    ranking = load_ranking(tmp_path / "forgetting.npz")
    assert ranking.metadata["num_examples"] == 320 and ranking.metadata["fingerprint"] == dm.fingerprint
    spec = SubsetSpec(ranking=str(tmp_path / "forgetting.npz"), fraction=0.25)
    subset = MNIST1DDataModule(num_samples=400, subset=spec)
    subset.setup("fit")
    assert len(subset.train_indices) == 80
    assert set(subset.train_indices.tolist()) == set(ranking.indices[:80].tolist())


def test_ddp_two_processes_see_every_tensor_example_of_the_subset_once_per_epoch(ddp_fits):
    out = ddp_fits / "tensors"
    subset = np.load(out / "subset.npy")
    assert len(subset) == round(0.5 * 240)
    assert_every_example_once_per_epoch(out, subset)
    assert load_ranking(out / "forgetting.npz").metadata["num_examples"] == 240
