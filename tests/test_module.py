import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_proxy.datamodules import DigitsDataModule, SubsetSpec
from lightning_proxy.module import ClassificationModule


def module(**kwargs):
    return ClassificationModule(**{"arch": "preact_resnet8", "num_classes": 10, "in_channels": 1, **kwargs})


@pytest.mark.parametrize("as_dict", [False, True])
def test_training_step_returns_detached_per_example_outputs(as_dict):
    m = module(label_smoothing=0.1)
    x, y, idx = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,)), torch.arange(10, 16)
    batch = {"input": x, "target": y, "index": idx} if as_dict else (x, y, idx)
    m.log = lambda *a, **k: None  # no trainer attached
    out = m.training_step(batch, 0)
    assert out["logits"].shape == (6, 10) and not out["logits"].requires_grad
    assert torch.equal(out["indices"], idx) and torch.equal(out["targets"], y)
    expected = F.cross_entropy(out["logits"], y, label_smoothing=0.1)
    assert torch.allclose(out["loss"], expected, atol=1e-6) and out["loss"].requires_grad


def test_weight_decay_skips_norm_and_bias_unless_asked():
    groups = module(optimizer="adam", schedule="constant").configure_optimizers().param_groups
    assert groups[0]["weight_decay"] > 0 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0 and all(p.ndim == 1 for p in groups[1]["params"])
    everything = module(schedule="constant", decay_norm_and_bias=True).configure_optimizers().param_groups
    assert sum(len(g["params"]) for g in everything if g["weight_decay"] > 0) == len(list(module().parameters()))


@pytest.mark.parametrize(
    "optimizer, cls", [("adam", torch.optim.AdamW), ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop)]
)
def test_optimizer_choice(optimizer, cls):
    assert type(module(optimizer=optimizer, schedule="constant").configure_optimizers()) is cls


def test_multistep_schedule_with_warmup():
    m = module(lr=0.1, schedule="multistep", milestones=[3, 5], warmup_epochs=1, warmup_factor=0.1)
    config = m.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_one_cycle_peaks_at_lr_and_fit_logs_best_accuracy(tmp_path):
    dm = DigitsDataModule(batch_size=128, subset=SubsetSpec(fraction=0.3))
    m = module(lr=0.05, schedule="one_cycle", pct_start=0.5)
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[RecordLR()],
        default_root_dir=tmp_path,
    )
    trainer.fit(m, dm)
    assert max(lrs) == pytest.approx(0.05, rel=0.05) and lrs[0] == pytest.approx(0.005)
    best = trainer.callback_metrics["val/acc_best"]
    assert best >= trainer.callback_metrics["val/acc"] and 0.0 <= best <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0}, "lr"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"optimizer": "lamb"}, "optimizer"),
        ({"arch": "nope"}, "nope"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        module(**kwargs)


@pytest.mark.parametrize("steps", [1, 3, 4, 5])
def test_one_cycle_survives_runs_of_a_few_steps(steps):
    # pct_start 0.25 of 4 steps is a one-step warm-up, on which torch's OneCycleLR divides by zero
    m = module(lr=0.1, schedule="one_cycle", pct_start=0.25)
    m._trainer = type("FakeTrainer", (), {"estimated_stepping_batches": steps})()
    config = m.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) <= 0.1 + 1e-9 and len(lrs) == steps


def test_an_endless_run_is_refused_with_a_clear_message(tmp_path):
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="needs a finite run"):  # not an OverflowError from int(inf)
        trainer.fit(module(), DigitsDataModule())
