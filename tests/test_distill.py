"""Dataset distillation: the matching losses against direct computations, the synthetic-set file, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_proxy.datamodules import DigitsDataModule, SubsetSpec
from lightning_proxy.distill import SyntheticSet, load_synthetic, matching, save_synthetic
from lightning_proxy.distill.matching import (
    Distillation,
    SiameseAugment,
    distill,
    distribution_matching_loss,
    gradient_distance,
    gradient_matching_loss,
    partial_path,
)
from lightning_proxy.experiments.strategies import strategies_from
from lightning_proxy.training import Training

TARGET = "configs/sweep_digits_target.yaml"
TINY = {"model.arch_kwargs": {"width": 4}}  # a preact ResNet8 of width 4: a fast network for the tests


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_distribution_matching_step_halves_the_distance_of_the_means():
    """Identity embedding, one synthetic image per class: the loss is sum_c |m_c - s_c|^2, its gradient
    -2 (m_c - s_c), so an SGD step of lr 0.25 moves each synthetic image half way to its class mean."""
    torch.manual_seed(0)
    real = torch.randn(3 * 8, 1, 2, 2)  # 3 classes x 8 images, in class order
    synthetic = torch.randn(3, 1, 2, 2, requires_grad=True)
    means = real.reshape(3, 8, -1).mean(1)
    before = ((means - synthetic.detach().reshape(3, -1)) ** 2).sum()
    loss = distribution_matching_loss(lambda x: x.flatten(1), real, synthetic, 3)
    assert torch.allclose(loss, before)
    (grad,) = torch.autograd.grad(loss, [synthetic])
    with torch.no_grad():
        synthetic -= 0.25 * grad
    after = distribution_matching_loss(lambda x: x.flatten(1), real, synthetic, 3)
    assert torch.allclose(after, before / 4)  # half the distance: a quarter of its square


def test_distribution_matching_loss_falls_under_a_random_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    real = torch.randn(2 * 16, 1, 6, 6) + torch.arange(2).repeat_interleave(16).view(-1, 1, 1, 1)
    synthetic = torch.randn(2 * 2, 1, 6, 6, requires_grad=True)
    optimizer = torch.optim.SGD([synthetic], lr=0.1, momentum=0.5)
    losses = []
    for _ in range(300):
        loss = distribution_matching_loss(net, real, synthetic, 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]


def test_gradient_matching_loss_against_the_closed_form_gradient():
    """A bias-free linear classifier: the mean cross-entropy's gradient is (softmax - onehot)^T x / n."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    weight = net[1].weight.detach()

    def gradient(x, y):
        p = torch.softmax(x.flatten(1) @ weight.T, 1)
        return (p - F.one_hot(y, 3).float()).T @ x.flatten(1) / len(x)

    real, real_y = torch.randn(6, 1, 2, 2), torch.tensor([1] * 6)
    synthetic, synthetic_y = torch.randn(2, 1, 2, 2, requires_grad=True), torch.tensor([1, 1])
    gr, gs = gradient(real, real_y), gradient(synthetic.detach(), synthetic_y)
    expected = (1 - (gr * gs).sum(1) / (gr.norm(dim=1) * gs.norm(dim=1) + 1e-6)).sum()
    loss = gradient_matching_loss(net, real, real_y, synthetic, synthetic_y)
    assert torch.allclose(loss, expected, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, [synthetic])  # differentiable in the synthetic images
    assert grad.abs().sum() > 0
    # 1-D gradients (biases, norm weights) are left out, as Zhao et al.'s distance leaves them
    assert gradient_distance([gs, torch.ones(3)], [gr, -torch.ones(3)]) == gradient_distance([gs], [gr])


def test_siamese_augmentation_is_the_same_for_one_seed_and_differentiable():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    augment = SiameseAugment(flip=True)
    seeds = range(12)  # every transformation is drawn for some seed
    for seed in seeds:
        a, b = augment(x, seed), augment(x.detach().clone(), seed)
        assert torch.equal(a.detach(), b), seed
        (grad,) = torch.autograd.grad(a.sum(), [x])
        assert torch.isfinite(grad).all()
    assert any(not torch.equal(augment(x, 0), augment(x, s)) for s in seeds[1:])


def _distill(tmp_path, name="set.npz", **options):
    options = {"ipc": 1, "iterations": 3, "batch_real": 8, "progress": False, "args": TINY, **options}
    return distill(TARGET, tmp_path / name, **options)


def test_synthetic_set_round_trips_and_trains_as_the_pool(tmp_path):
    path = _distill(tmp_path, ipc=2)
    made = load_synthetic(path)
    assert made.images.shape == (20, 1, 8, 8) and list(made.labels) == [c for c in range(10) for _ in range(2)]
    meta = made.metadata
    assert (meta["method"], meta["ipc"], meta["iterations"], meta["dataset"]) == (
        "distribution_matching",
        2,
        3,
        "digits",
    )
    assert meta["source_size"] == 1437 and meta["seconds"] > 0 and meta["network"]["arch"] == "preact_resnet8"
    copy = save_synthetic(tmp_path / "copy.npz", made)
    again = load_synthetic(copy)
    assert np.array_equal(again.images, made.images) and again.metadata == {**meta, "format": 1, "kind": "synthetic"}

    dm = DigitsDataModule(synthetic=str(path), batch_size=8)
    assert dm.pool_size == 20 and list(dm.targets) == list(made.labels)
    images, targets, indices = next(iter(dm.scoring_dataloader()))  # the tensor path, no augmentation
    expected = (torch.from_numpy(made.images[:16]) - dm.mean[0]) / dm.std[0]
    assert torch.allclose(images, expected, atol=1e-6) and indices.tolist() == list(range(16))
    items = DigitsDataModule(synthetic=str(path), batch_size=8, data_path="items")
    images, _, _ = next(iter(items.scoring_dataloader()))
    assert torch.allclose(images, expected, atol=1e-6)
    assert sum(len(targets) for _, targets, _ in dm.val_dataloader()) == 360  # validation: the real digits


def test_synthetic_set_is_refused_on_another_pool_and_with_subset_rules(tmp_path):
    path = _distill(tmp_path)
    with pytest.raises(
        ValueError, match=r"made on digits \(pool of 1437, fingerprint .*not on this digits pool \(pool of 1257"
    ):
        _ = DigitsDataModule(synthetic=str(path), val_fraction=0.3).train_pool
    with pytest.raises(ValueError, match="subset rules .* give one or the other"):
        DigitsDataModule(synthetic=str(path), subset=SubsetSpec(fraction=0.5))
    made = load_synthetic(path)
    with pytest.raises(ValueError, match="cannot save .*labels must lie in"):
        save_synthetic(tmp_path / "bad.npz", SyntheticSet(made.images, made.labels + 5, made.metadata))
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.npz is not a readable synthetic set"):
        load_synthetic(tmp_path / "cut.npz")


def test_output_made_with_other_settings_is_refused_and_the_same_is_returned(tmp_path):
    path = _distill(tmp_path)
    stamp = path.stat().st_mtime_ns
    assert _distill(tmp_path) == path and path.stat().st_mtime_ns == stamp  # made already: not made again
    with pytest.raises(ValueError, match="other settings \\(iterations 3 here, 4 asked\\)"):
        _distill(tmp_path, iterations=4)


@pytest.mark.parametrize("method", ["distribution_matching", "gradient_matching"])
def test_a_killed_distillation_resumes_to_the_same_images(tmp_path, monkeypatch, method):
    options = {"method": method, "iterations": 5, "checkpoint_every": 2}
    if method == "gradient_matching":
        options |= {"outer_loop": 2, "inner_loop": 1}
    straight = load_synthetic(_distill(tmp_path, "straight.npz", **options))

    step = Distillation.step

    def killed_at_4(self, iteration):
        if iteration == 4:
            raise KeyboardInterrupt
        return step(self, iteration)

    monkeypatch.setattr(Distillation, "step", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        _distill(tmp_path, "resumed.npz", **options)
    output = tmp_path / "resumed.npz"
    assert not output.exists() and torch.load(partial_path(output), weights_only=True)["iteration"] == 4
    monkeypatch.setattr(Distillation, "step", step)
    calls = []
    monkeypatch.setattr(Distillation, "step", lambda self, i: calls.append(i) or step(self, i))
    resumed = load_synthetic(_distill(tmp_path, "resumed.npz", **options))
    assert calls == [4] and not partial_path(output).exists()
    assert np.array_equal(resumed.images, straight.images)
    assert not np.array_equal(straight.images, load_synthetic(_distill(tmp_path, "init.npz", iterations=0)).images)


def test_zero_iterations_from_real_is_random_real_images_of_each_class(tmp_path):
    made = load_synthetic(_distill(tmp_path, ipc=3, iterations=0))
    dm = DigitsDataModule()
    pool = (dm.train_pool.images.float() / 255).numpy()
    for image, label in zip(made.images, made.labels, strict=True):
        matches = np.flatnonzero(np.abs(pool - image).reshape(len(pool), -1).max(1) < 1e-6)
        assert len(matches) and (dm.targets[matches] == label).all()


def test_distill_refuses_bad_options_before_work(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        distill(TARGET, tmp_path / "x.npz", method="kip")
    with pytest.raises(ValueError, match="--output names the synthetic set's .npz"):
        distill(TARGET, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="whole pool"):
        distill(Training(TARGET, {"data.subset.fraction": 0.5}), tmp_path / "x.npz")
    # a text pool is refused by its datamodule's kind: no CSV is read (the folder has none) nor tokenised
    text = Training("configs/amazon_full_fasttext.yaml", {"data.root": str(tmp_path / "none")})
    with pytest.raises(ValueError, match="AmazonReviewsDataModule .text, or a folder dataset not decoded.: it cannot"):
        distill(text, tmp_path / "x.npz")


def test_distilled_strategy_names_and_options():
    (target, dm, gm) = strategies_from(
        {
            "distilled": [
                {"method": "distribution_matching", "ipc": 10},
                {"method": "gradient_matching", "ipc": 1, "epochs": 50},
            ]
        },
        10,
    )
    assert (dm.name, dm.family, dm.size, dm.overrides) == ("distilled-dm-ipc10", "distilled", 10.0, {})
    assert gm.name == "distilled-gm-ipc1" and gm.overrides == {"trainer.max_epochs": 50} and gm.epochs == 50
    assert gm.distill == {"method": "gradient_matching", "ipc": 1}
    (_, named) = strategies_from({"distilled": [{"method": "gradient_matching", "ipc": 1, "name": "gm-short"}]}, 10)
    assert named.name == "gm-short" and "name" not in named.distill
    for bad in (
        {"method": "kip"},
        {"method": "gradient_matching", "ipcs": 3},
        {"method": "gradient_matching", "ipc": 0},
        0.5,
        {"method": "gradient_matching", "iterations": -1},
        {"method": "gradient_matching", "init": "zeros"},
        {"method": "gradient_matching", "lr": 0},
        {"method": "gradient_matching", "outer_loop": 1.5},
    ):
        with pytest.raises(ValueError, match="strategy distilled"):
            strategies_from({"distilled": [bad]}, 10)


def test_gradient_matching_loops_follow_zhao_et_al(tmp_path):
    path = _distill(tmp_path, method="gradient_matching", ipc=1, iterations=1)
    meta = json.loads(json.dumps(load_synthetic(path).metadata))
    assert (meta["outer_loop"], meta["inner_loop"]) == matching.GM_LOOPS[1] == (1, 1)
    assert matching.GM_LOOPS[10] == (10, 50) and matching.GM_LOOPS[50] == (50, 10)
