"""Online pruning: InfoBatch's rule by hand, its expected gradient, DDP choices, resume, schedules, example passes."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_proxy.callbacks import ForgettingEvents, OnlinePruning
from lightning_proxy.callbacks.pruning import prune
from lightning_proxy.datamodules import TensorPoolDataModule
from lightning_proxy.module import ClassificationModule
from lightning_proxy.selection import load_ranking


def test_infobatch_prunes_only_below_mean_losses_and_rescales_the_kept_ones():
    last = torch.tensor([0.1, 0.2, 1.0, 2.0, 0.3, 9.0])
    seen = torch.tensor([True, True, True, True, True, False])  # the last one never trained: never pruned
    drops = torch.zeros(6)
    for epoch in range(2000):
        dropped, weights = prune(last, seen, 0.5, "infobatch", torch.Generator().manual_seed(epoch))
        drops += dropped
        # the mean of the seen losses is 0.72: examples 0, 1 and 4 may sit out; kept, they weigh 2
        assert not dropped[[2, 3, 5]].any()
        assert torch.equal(weights, torch.where(~dropped & torch.tensor([1, 1, 0, 0, 1, 0]).bool(), 2.0, 1.0))
    assert np.allclose(drops[[0, 1, 4]] / 2000, 0.5, atol=0.04)

    dropped, weights = prune(last, seen, 0.5, "random", torch.Generator().manual_seed(0))
    assert torch.equal(weights, torch.ones(6)) and dropped.sum() > 0
    dropped, _ = prune(last, seen, 0.99, "random", torch.Generator().manual_seed(0))
    assert (~dropped).sum() >= 1  # an epoch keeps at least one example


def test_the_rescaled_expected_gradient_equals_the_unpruned_one():
    """By hand: losses 0.1, 0.2, 1.0, 2.0 have mean 0.825, so examples 0 and 1 sit out with probability r and
    weigh 1/(1-r) when kept. Over the four outcomes, the epoch's gradient (the module's weighted loss, summed
    over the kept examples) averages to the unpruned epoch's."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 16), torch.tensor([0, 1, 0, 1])
    module = ClassificationModule(arch="cnn1d", num_classes=2, in_channels=1, arch_kwargs={"widths": [4]})
    module.eval()  # batch norm's running statistics: each example's loss independent of the others in its batch
    r = 0.25

    def epoch_gradient(kept: list[int], weights: torch.Tensor | None) -> torch.Tensor:
        module.zero_grad()
        module.loss_weights = weights
        index = torch.tensor(kept)
        loss = module.training_loss(module(x[index]), y[index], index) * len(kept)  # the sum, not the mean
        loss.backward()
        return torch.cat([p.grad.flatten() for p in module.parameters()])

    full = epoch_gradient([0, 1, 2, 3], None)
    last, seen = torch.tensor([0.1, 0.2, 1.0, 2.0]), torch.ones(4, dtype=torch.bool)
    outcomes = {}
    for epoch in range(200):  # the rule's own weights, for each outcome it draws
        dropped, weights = prune(last, seen, r, "infobatch", torch.Generator().manual_seed(epoch))
        outcomes[tuple(dropped.tolist())] = weights
    assert set(outcomes) == {(a, b, False, False) for a in (False, True) for b in (False, True)}
    expected = sum(
        (r if a else 1 - r) * (r if b else 1 - r) * epoch_gradient([i for i in range(4) if not d[i]], w)
        for d, w in outcomes.items()
        for a, b in [d[:2]]
    )
    torch.testing.assert_close(expected, full, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(epoch_gradient([2, 3], outcomes[(True, True, False, False)]), full)


def blobs() -> TensorPoolDataModule:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    x = torch.randn(96, 1, 16, generator=g) + y[:, None, None].float()
    return TensorPoolDataModule(train=(x, y), val=(x[:30], y[:30]), batch_size=16)


def pruned_fit(folder: Path, epochs: int = 6, stop_after: int | None = None, ckpt_path=None) -> tuple:
    class StopAfter(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if stop_after is not None and trainer.current_epoch + 1 == stop_after:
                trainer.should_stop = True

    L.seed_everything(0)
    module = ClassificationModule(arch="cnn1d", num_classes=3, in_channels=1, arch_kwargs={"widths": [8]}, lr=0.05)
    pruning = OnlinePruning(ratio=0.5, dirpath=str(folder))
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            pruning,
            ForgettingEvents(dirpath=str(folder)),
            ModelCheckpoint(dirpath=folder / "ckpt", save_last=True),
            StopAfter(),
        ],
    )
    trainer.fit(module, blobs(), ckpt_path=ckpt_path)
    return module, trainer


def test_a_resumed_pruned_fit_equals_the_uninterrupted_one_and_its_schedule_ends_where_planned(tmp_path):
    straight, trainer = pruned_fit(tmp_path / "straight")
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    planned = 6 * 6  # 96 examples in batches of 16, 6 epochs
    assert trainer.global_step < planned  # pruned epochs take fewer steps...
    assert scheduler.last_epoch == planned  # ...and the one-cycle schedule still ends where planned
    assert scheduler.get_last_lr()[0] < 0.05 / 100  # annealed from the peak of 0.05, as the unpruned run
    assert 96 + 96 < straight.examples_seen < 6 * 96  # the first and last epochs whole, the others pruned

    pruned_fit(tmp_path / "killed", stop_after=3)
    resumed, _ = pruned_fit(tmp_path / "killed", ckpt_path=tmp_path / "killed" / "ckpt" / "last.ckpt")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.examples_seen == straight.examples_seen
    for name in ("online_loss", "forgetting"):
        a, b = (load_ranking(tmp_path / w / f"{name}.npz") for w in ("straight", "killed"))
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.scores, b.scores), name


def test_statistics_count_only_the_presentations_that_happened(tmp_path):
    module, trainer = pruned_fit(tmp_path)
    forgetting = next(c for c in trainer.callbacks if isinstance(c, ForgettingEvents))
    pruning = next(c for c in trainer.callbacks if isinstance(c, OnlinePruning))
    presentations = forgetting.state_dict()["presentations"]
    epochs = pruning.state_dict()["epochs"]
    assert torch.equal(presentations, epochs.to(presentations.dtype))  # both count the epochs each example trained
    assert presentations.min() >= 2 and presentations.max() == 6 and presentations.min() < 6  # some sat out
    assert module.examples_seen == int(presentations.sum())


def test_pruning_refuses_a_datamodule_or_module_without_its_seams(tmp_path):
    with pytest.raises(ValueError, match="ratio"):
        OnlinePruning(ratio=1.0)
    with pytest.raises(ValueError, match="policy"):
        OnlinePruning(policy="hardest")
    data = L.LightningDataModule.from_datasets(train_dataset=torch.utils.data.TensorDataset(torch.zeros(4, 1)))
    module = ClassificationModule(arch="cnn1d", num_classes=3, in_channels=1)
    trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[OnlinePruning(num_examples=4)])
    with pytest.raises(TypeError, match="choose_each_epoch"):
        trainer.fit(module, data)


@pytest.mark.parametrize("path", ["tensor", "items", "text"])
def test_ddp_ranks_make_the_same_choice_and_train_each_chosen_example_once(ddp_fits, path):
    out = ddp_fits / f"pruning_{path}"
    subset = np.load(out / "subset.npy")
    seen_total = 0
    for epoch in range(4):
        choices = [np.load(out / f"choice_rank{r}_epoch{epoch}.npz") for r in range(2)]
        chosen = choices[0]["chosen"]
        assert np.array_equal(chosen, choices[1]["chosen"]) and np.array_equal(*(c["weights"] for c in choices))
        assert set(chosen.tolist()) <= set(subset.tolist())
        assert (len(chosen) == len(subset)) == (epoch == 0)  # epoch 0 has no losses yet; the others are pruned
        assert epoch == 0 or set(np.unique(choices[0]["weights"])) == {1.0, 2.5}  # kept low-loss ones: 1 / 0.4
        padding = len(chosen) % 2
        ranks = [np.load(out / f"rank{r}_epoch{epoch}.npy") for r in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == (len(chosen) + padding) // 2
        trained = np.concatenate(ranks)
        assert set(trained.tolist()) == set(chosen.tolist()) and len(trained) - len(np.unique(trained)) == padding
        seen_total += len(trained)
    for r in range(2):  # example passes, summed over ranks, on every rank
        assert int(np.load(out / f"examples_seen_rank{r}.npy")) == seen_total
