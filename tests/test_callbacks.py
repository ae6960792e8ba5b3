"""Per-example callbacks: hand-worked sequences, direct computations, DDP against one process, resume."""

import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax, softmax
from torch.utils.data import DataLoader, Subset, TensorDataset

from lightning_proxy.callbacks import EL2N, AreaUnderMargin, ExampleStatistic, ForgettingEvents, PostTrainingScores
from lightning_proxy.datamodules import DigitsDataModule, IndexedDataset, SubsetSpec
from lightning_proxy.module import ClassificationModule
from lightning_proxy.selection import aggregate_rankings, load_ranking, pool_fingerprint
from lightning_proxy.selection.subset import select_subset

README = Path(__file__).parents[1] / "README.md"


class Scripted(L.LightningModule):
    """Returns ``logits[epoch, index]`` from a fixed table: the callbacks see exactly the predictions we chose."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = logits
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        _, y, idx = batch
        return {"loss": self.weight**2, "logits": self.table[self.current_epoch, idx], "targets": y, "indices": idx}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def scripted_fit(logits, targets, callbacks, keep=None, epochs=None, ckpt_path=None, checkpoint_dir=None, **kw):
    """Fit the scripted module for ``epochs`` on the examples ``keep`` (default all), batches of 2, shuffled."""
    dataset = IndexedDataset(TensorDataset(torch.zeros(len(targets), 1), torch.as_tensor(targets)))
    if keep is not None:
        dataset = Subset(dataset, keep)
    extra = {"enable_checkpointing": False}
    if checkpoint_dir is not None:
        extra = {"callbacks": [L.pytorch.callbacks.ModelCheckpoint(checkpoint_dir, save_last=True)]}
    trainer = L.Trainer(
        max_epochs=epochs or logits.shape[0],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **{**extra, "callbacks": list(callbacks) + extra.get("callbacks", [])},
        **kw,
    )
    L.seed_everything(0)
    trainer.fit(Scripted(logits), DataLoader(dataset, batch_size=2, shuffle=True), ckpt_path=ckpt_path)


def logits_from_correctness(correct: np.ndarray, targets: np.ndarray) -> torch.Tensor:
    """Two-class logits whose argmax is the target exactly where ``correct[epoch, example]``."""
    predicted = np.where(correct, targets, 1 - targets)
    return F.one_hot(torch.as_tensor(predicted), 2).float() * 2.0


# epochs x examples; example 6 is never presented (outside the training subset)
CORRECT = np.array(
    [
        # 0  1  2  3  4  5  6
        [1, 0, 1, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 0, 0],
        [1, 0, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 1, 0],
    ],
    dtype=bool,
)
# 0: learned, never forgotten; 1: never learned; 2: forgotten twice; 3: once; 4: once, never relearned;
# 5: learned in the last epoch only
FORGETS = {0: 0, 2: 2, 3: 1, 4: 1, 5: 0}


# observe_every=2 scatters the kept steps within the epoch (3 batches) and at its end, 32 only at its end
@pytest.mark.parametrize("observe_every", [2, 32])
@pytest.mark.parametrize("policy, never", [("infinite", np.inf), ("epochs", 6.0), ("zero", 0.0)])
def test_forgetting_counts_hand_worked_sequences(tmp_path, policy, never, observe_every):
    targets = np.array([0, 1, 1, 0, 1, 0, 1])
    callback = ForgettingEvents(
        dirpath=str(tmp_path), num_examples=7, never_learned=policy, observe_every=observe_every
    )
    scripted_fit(logits_from_correctness(CORRECT, targets), targets, [callback], keep=list(range(6)))
    ranking = load_ranking(tmp_path / "forgetting.npz")
    got = dict(zip(ranking.indices.tolist(), ranking.scores.tolist(), strict=True))
    assert got == {**FORGETS, 1: never}  # example 6 was never presented, so it is not ranked
    assert ranking.metadata["never_learned"] == policy and ranking.metadata["direction"] == "higher_is_harder"
    assert ranking.metadata["epochs"] == 5 and ranking.metadata["num_examples"] == 7
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)


@pytest.mark.parametrize("observe_every", [1, 2, 32])
def test_el2n_and_aum_average_over_epochs(tmp_path, observe_every):
    rng = np.random.default_rng(0)
    epochs, n, classes = 3, 9, 4
    logits = rng.normal(size=(epochs, n, classes)).astype(np.float32) * 3
    targets = rng.integers(0, classes, n)
    kw = {"dirpath": str(tmp_path), "num_examples": n, "observe_every": observe_every}
    callbacks = [EL2N(**kw), AreaUnderMargin(**kw)]
    scripted_fit(torch.as_tensor(logits), targets, callbacks)

    onehot = np.eye(classes)[targets]
    el2n = np.linalg.norm(softmax(logits.astype(np.float64), axis=2) - onehot, axis=2).mean(axis=0)
    assigned = np.take_along_axis(logits, targets[None, :, None], axis=2)[..., 0]
    others = np.where(onehot.astype(bool), -np.inf, logits).max(axis=2)
    aum = (assigned - others).mean(axis=0)
    for name, expected, direction in [("el2n", el2n, "higher_is_harder"), ("aum", aum, "higher_is_easier")]:
        ranking = load_ranking(tmp_path / f"{name}.npz")
        np.testing.assert_allclose(ranking.scores, expected[ranking.indices], rtol=1e-5)
        assert sorted(ranking.indices) == list(range(n)) and ranking.metadata["direction"] == direction


def test_resumed_fit_writes_the_same_rankings(tmp_path):
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(rng.normal(size=(6, 10, 3)), dtype=torch.float32)
    targets = rng.integers(0, 3, 10)

    def callbacks(where):
        kw = {"dirpath": str(tmp_path / where), "num_examples": 10}
        return [ForgettingEvents(**kw), EL2N(**kw), AreaUnderMargin(**kw)]

    scripted_fit(logits, targets, callbacks("straight"))
    scripted_fit(logits, targets, callbacks("killed"), epochs=3, checkpoint_dir=tmp_path / "ckpt")
    scripted_fit(logits, targets, callbacks("resumed"), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    for name in ("forgetting", "el2n", "aum"):
        straight, resumed = (load_ranking(tmp_path / w / f"{name}.npz") for w in ("straight", "resumed"))
        killed = load_ranking(tmp_path / "killed" / f"{name}.npz")
        assert np.array_equal(straight.indices, resumed.indices), name
        assert np.array_equal(straight.scores, resumed.scores), name
        assert straight.metadata["epochs"] == resumed.metadata["epochs"] == 6 and killed.metadata["epochs"] == 3
        assert not np.array_equal(straight.scores, killed.scores)  # so the resumed state mattered


def test_callbacks_refuse_a_training_step_without_logits(tmp_path):
    class NoLogits(Scripted):
        def training_step(self, batch, batch_idx):
            return self.weight**2

    dataset = IndexedDataset(TensorDataset(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.callbacks.append(ForgettingEvents(dirpath=str(tmp_path), num_examples=4))
    with pytest.raises(RuntimeError, match="'logits'"):
        trainer.fit(NoLogits(torch.zeros(1, 4, 2)), DataLoader(dataset, batch_size=2))
    with pytest.raises(ValueError, match="never_learned"):
        ForgettingEvents(never_learned="sometimes")
    with pytest.raises(ValueError, match="observe_every"):
        EL2N(observe_every=0)
    with pytest.raises(ValueError, match="num_examples"):
        L.Trainer(callbacks=[EL2N()], logger=False).fit(NoLogits(torch.zeros(1, 4, 2)), DataLoader(dataset))


def digits_module():
    return ClassificationModule(arch="preact_resnet8", num_classes=10, in_channels=1, lr=0.05)


def direct_scores(model: ClassificationModule, dm: DigitsDataModule) -> dict[str, np.ndarray]:
    """The four scores and the features of every pool example, computed here with scipy from plain forwards."""
    model.eval()
    logits, features, targets = [], [], []
    with torch.no_grad():
        for x, y, _ in dm.scoring_dataloader():
            logits.append(model(x).double().numpy())
            features.append(model.forward_features(x).numpy())
            targets.append(y.numpy())
    z, y = np.concatenate(logits), np.concatenate(targets)
    p, log_p = softmax(z, axis=1), log_softmax(z, axis=1)
    top = np.sort(p, axis=1)[:, ::-1]
    return {
        "loss": -log_p[np.arange(len(y)), y],
        "entropy": -(p * log_p).sum(axis=1),
        "least_confidence": 1 - top[:, 0],
        "margin": top[:, 0] - top[:, 1],
        "embeddings": np.concatenate(features),
    }


def quiet_trainer(callbacks, epochs: int = 1) -> L.Trainer:
    """A trainer on the CPU without validation, logs, checkpoints, a model summary or a progress bar."""
    return L.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def test_post_training_scores_match_a_direct_computation(tmp_path):
    L.seed_everything(0)
    dm, model = DigitsDataModule(batch_size=64, subset=SubsetSpec(fraction=0.2)), digits_module()
    trainer = quiet_trainer([PostTrainingScores(dirpath=str(tmp_path))])
    trainer.fit(model, dm)
    expected = direct_scores(model, dm)
    for name in ("loss", "entropy", "least_confidence", "margin"):
        ranking = load_ranking(tmp_path / f"{name}.npz")
        assert len(ranking) == dm.pool_size  # the whole pool, not only the 20% trained on
        np.testing.assert_allclose(ranking.scores, expected[name][ranking.indices], rtol=1e-4, atol=1e-6)
        assert ranking.metadata["fingerprint"] == dm.fingerprint and ranking.metadata["dataset"] == "digits"
    np.testing.assert_allclose(np.load(tmp_path / "embeddings.npy"), expected["embeddings"], rtol=1e-4, atol=1e-5)


def test_loss_of_a_class_subset_uses_the_model_labels(tmp_path):
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=64, subset=SubsetSpec(classes=[3, 7]))
    model = ClassificationModule(arch="preact_resnet8", num_classes=2, in_channels=1)
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.callbacks.append(PostTrainingScores(dirpath=str(tmp_path), statistics=["loss", "margin"], embeddings=False))
    trainer.fit(model, dm)
    loss, margin = load_ranking(tmp_path / "loss.npz"), load_ranking(tmp_path / "margin.npz")
    kept = np.flatnonzero(np.isin(dm.targets, dm.class_ids))
    assert sorted(loss.indices) == kept.tolist() and len(margin) == dm.pool_size
    model.eval()
    x, y, _ = next(iter(dm.scoring_dataloader(kept[:5])))
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, reduction="none")
    # the scoring loader serves the model's labels (3 -> 0, 7 -> 1), mapped once, by the datamodule
    assert y.tolist() == dm.label_map()[dm.targets[kept[:5]]].tolist()
    got = dict(zip(loss.indices.tolist(), loss.scores.tolist(), strict=True))
    np.testing.assert_allclose([got[i] for i in kept[:5]], expected.numpy(), rtol=1e-4)


def test_ddp_two_processes_score_like_one_and_count_each_example_once_per_epoch(tmp_path, ddp_fits):
    out = ddp_fits / "callbacks"
    dm = DigitsDataModule(batch_size=64)
    counts = np.load(out / "presentations.npz")
    assert (counts["raw"].sum(axis=1) == dm.pool_size + 1).all()  # 1437 examples: the sampler repeats one
    assert (counts["forgetting"] == 2).all()  # yet every example counts once in each of the 2 epochs
    for name in ("forgetting", "el2n", "aum"):
        assert sorted(load_ranking(out / f"{name}.npz").indices) == list(range(dm.pool_size))

    model = digits_module()
    model.load_state_dict(torch.load(out / "model.pt"))
    single = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single.callbacks.append(PostTrainingScores(dirpath=str(tmp_path / "single")))
    single.predict(model, dm, return_predictions=False)
    for name in ("loss", "entropy", "least_confidence", "margin"):
        ddp, one = load_ranking(out / f"{name}.npz"), load_ranking(tmp_path / "single" / f"{name}.npz")
        assert sorted(ddp.indices) == list(range(dm.pool_size))
        np.testing.assert_allclose(ddp.scores[np.argsort(ddp.indices)], one.scores[np.argsort(one.indices)], atol=1e-5)
        assert ddp.metadata["world_size"] == 2 and ddp.metadata["epochs"] == 2
    np.testing.assert_allclose(
        np.load(out / "embeddings.npy"), np.load(tmp_path / "single" / "embeddings.npy"), atol=1e-5
    )


def test_readme_adoption_example_runs_with_a_foreign_module(tmp_path, monkeypatch):
    """The README's example: a module and dataset written elsewhere (dict batches) adopt the callbacks."""
    text = README.read_text()
    code = re.search(r"<!-- adoption example -->\s*```python\n(.*?)```", text, re.S)
    assert code, "README lost its adoption example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    n = len(namespace["dataset"])
    for name in ("forgetting", "el2n", "aum", "loss", "margin"):
        assert sorted(load_ranking(tmp_path / "rankings" / f"{name}.npz").indices) == list(range(n)), name
    model = namespace["model"].eval()
    points, labels = namespace["points"], namespace["labels"]
    with torch.no_grad():
        expected = F.cross_entropy(model(points), labels, reduction="none").numpy()
    loss = load_ranking(tmp_path / "rankings" / "loss.npz")
    np.testing.assert_allclose(loss.scores, expected[loss.indices], rtol=1e-4, atol=1e-6)
    assert loss.metadata["fingerprint"] == pool_fingerprint(labels.numpy())  # from data.targets
    # the user's own scores: a ranking file the subset rules take, the farthest points first
    far = SubsetSpec(ranking=str(tmp_path / "rankings" / "distance.npz"), fraction=0.1)
    chosen = select_subset(far, labels.numpy(), ["a", "b", "c"])
    assert sorted(chosen.tolist()) == sorted(np.argsort(-points.norm(dim=1).numpy())[:30].tolist())


def test_a_num_examples_below_the_pool_fails_with_the_index_it_met(tmp_path):
    targets = np.zeros(7, dtype=int)
    logits = logits_from_correctness(np.ones((1, 7), dtype=bool), targets)
    with pytest.raises(ValueError, match=r"ForgettingEvents: a batch holds pool index [3-6], but num_examples is 3"):
        scripted_fit(logits, targets, [ForgettingEvents(dirpath=str(tmp_path), num_examples=3, observe_every=1)])


def test_a_datamodule_without_targets_is_warned_about(tmp_path):
    targets = np.zeros(4, dtype=int)
    logits = logits_from_correctness(np.ones((1, 4), dtype=bool), targets)
    with pytest.warns(UserWarning, match="neither `targets` nor `fingerprint`.*give the datamodule a `targets`"):
        scripted_fit(logits, targets, [EL2N(dirpath=str(tmp_path), num_examples=4)])
    assert load_ranking(tmp_path / "el2n.npz").metadata["fingerprint"] == "unknown"


def test_ranking_metadata_names_the_statistic_not_the_file(tmp_path):
    """Two seeds' forgetting saved under other names still aggregate as one statistic."""
    targets = np.array([0, 1, 0, 1, 0, 1, 0])
    logits = logits_from_correctness(CORRECT, targets)
    for name in ("f_seed0", "f_seed1"):
        scripted_fit(
            logits,
            targets,
            [ForgettingEvents(dirpath=str(tmp_path), num_examples=7, filename=name)],
            keep=list(range(6)),
        )
    runs = [load_ranking(tmp_path / f"f_seed{seed}.npz") for seed in (0, 1)]
    assert [r.metadata["statistic"] for r in runs] == ["forgetting", "forgetting"]
    merged = aggregate_rankings(runs)
    assert merged.metadata["statistic"] == "forgetting" and merged.metadata["runs"] == 2
    scores = PostTrainingScores(dirpath=str(tmp_path), statistics=["margin"], prefix="p_")
    assert scores.statistic == "scores"  # the class names its files; each file's metadata names its statistic


class FloatMax(ExampleStatistic):
    def epoch_names(self):
        return {"peak": torch.float32}


def test_epoch_reduction_keeps_float_values():
    statistic = FloatMax(num_examples=3)
    statistic._epoch = {"peak": torch.tensor([0.75, 2.5, -1.25])}
    reduced = statistic.reduce_epoch(SimpleNamespace(world_size=1), op="max")
    assert reduced["peak"].tolist() == [0.75, 2.5, -1.25]  # not truncated to int
    assert statistic._epoch["peak"].tolist() == [0.0, 0.0, 0.0] and statistic.epochs_seen == 1


def test_scores_of_augmented_views_as_svp_scores(tmp_path):
    L.seed_everything(0)
    dm, model = DigitsDataModule(batch_size=64, subset=SubsetSpec(fraction=0.2)), digits_module()
    plain, augmented = (
        PostTrainingScores(dirpath=str(tmp_path)),
        PostTrainingScores(dirpath=str(tmp_path), prefix="aug_", augment=True, embeddings=False),
    )
    trainer = quiet_trainer([plain, augmented])
    trainer.fit(model, dm)
    # the scoring loader with augment: the same examples in the same order, each a training-augmented view
    (x, y, i), (xa, ya, ia) = next(iter(dm.scoring_dataloader())), next(iter(dm.scoring_dataloader(augment=True)))
    assert torch.equal(i, ia) and torch.equal(y, ya) and not torch.equal(x, xa)
    loss, aug_loss = load_ranking(tmp_path / "loss.npz"), load_ranking(tmp_path / "aug_loss.npz")
    assert aug_loss.metadata["augmented"] is True and loss.metadata["augmented"] is False
    assert sorted(aug_loss.indices.tolist()) == sorted(loss.indices.tolist())
    by_index = dict(zip(loss.indices.tolist(), loss.scores.tolist(), strict=True))
    pairs = zip(aug_loss.indices.tolist(), aug_loss.scores.tolist(), strict=True)
    changed = np.mean([abs(by_index[k] - v) > 1e-6 for k, v in pairs])
    assert changed > 0.5  # scored on other views of the examples


class Sequenced(Scripted):
    """Returns the logits ``table[step]`` for step ``step`` (batches of one): one presentation at a time."""

    def training_step(self, batch, batch_idx):
        _, y, idx = batch
        return {"loss": self.weight**2, "logits": self.table[self.global_step][None], "targets": y, "indices": idx}


@pytest.mark.parametrize("observe_every", [1, 32])
def test_forgetting_per_presentation_as_the_forgetting_paper_counts(tmp_path, observe_every):
    # presentations in order (a sampler that repeats examples within an epoch), R right, W wrong:
    #   epoch 0: 0 R, 0 W, 1 W, 2 R        epoch 1: 0 R, 1 R, 2 W, 2 R
    # each presentation: 0 R->W once; 1 never forgets; 2 R->W once (in epoch 1) = [1, 0, 1]
    # an epoch as one presentation (right if any was): 0 R, R; 1 W, R; 2 R, R = no event at all
    order = [[0, 0, 1, 2], [0, 1, 2, 2]]
    right = [[True, False, False, True], [True, True, False, True]]
    targets = torch.zeros(3, dtype=torch.int64)
    correct = [r for epoch in right for r in epoch]
    table = torch.stack([torch.tensor([2.0, 0.0]) if r else torch.tensor([0.0, 2.0]) for r in correct])

    class InOrder(torch.utils.data.Sampler):
        def __init__(self):
            self.epoch = 0

        def __iter__(self):
            yield from order[self.epoch]

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 4

    for presentations, expected in (("each", [1.0, 0.0, 1.0]), ("epoch", [0.0, 0.0, 0.0])):
        dataset = IndexedDataset(TensorDataset(torch.zeros(3, 1), targets))
        folder = str(tmp_path / presentations)
        callback = ForgettingEvents(folder, 3, presentations=presentations, observe_every=observe_every)
        trainer = quiet_trainer([callback], epochs=2)
        trainer.fit(Sequenced(table), DataLoader(dataset, batch_size=1, sampler=InOrder()))
        ranking = load_ranking(tmp_path / presentations / "forgetting.npz")
        by_index = dict(zip(ranking.indices.tolist(), ranking.scores.tolist(), strict=True))
        assert [by_index[i] for i in range(3)] == expected, presentations
        assert ranking.metadata["presentations"] == presentations


def test_per_presentation_forgetting_is_refused_under_ddp():
    trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ValueError, match="presentations='epoch' under DDP"):
        ForgettingEvents(presentations="each").setup(trainer, None, "fit")
