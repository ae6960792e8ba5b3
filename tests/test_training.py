"""A training as a value: the fit command's options, parsed once, refused early, its datamodule built alone."""

import ast
from pathlib import Path

import pytest
import yaml

from lightning_proxy.cli import main
from lightning_proxy.datamodules import DigitsDataModule, ImageNetDataModule, ImagenetteDataModule
from lightning_proxy.training import Training, TrainingConfigError

ROOT = Path(__file__).parents[1]
DIGITS = str(ROOT / "configs" / "digits.yaml")


def test_a_training_resolves_as_the_fit_command_does(capsys):
    with pytest.raises(SystemExit):
        main(
            ["fit", "--config", DIGITS, "--trainer.max_epochs", "3", "--data.subset.fraction", "0.5"]
            + ["--print_config"]
        )
    by_the_command = yaml.safe_load(capsys.readouterr().out)
    training = Training(DIGITS, {"trainer.max_epochs": 3, "data.subset.fraction": 0.5})
    as_a_value = yaml.safe_load(training.dump())
    for key in ("trainer", "model", "data", "seed_everything"):
        assert as_a_value[key] == by_the_command[key], key


def test_overrides_replace_values_and_the_callback_list():
    training = Training(DIGITS, {"model.arch": "preact_resnet8", "trainer.callbacks": []})
    assert training.resolved.model.arch == "preact_resnet8" and training.resolved.trainer.callbacks == []
    later = training.with_overrides({"model.arch": "preact_resnet20", "data.subset.classes": [1, 4, 7]})
    assert later.resolved.model.arch == "preact_resnet20" and training.resolved.model.arch == "preact_resnet8"
    assert later.resolved.data.init_args.subset.classes == [1, 4, 7]
    assert later.datamodule().subset.classes == ["1", "4", "7"]  # class names, as SubsetSpec reads numbers
    assert len(Training(DIGITS).resolved.trainer.callbacks) == 4  # the config's own when not overridden


def test_the_datamodule_is_built_alone_and_the_model_learns_its_classes():
    training = Training(DIGITS, {"data.subset.classes": 3, "trainer.max_epochs": 1})
    datamodule = training.datamodule()
    assert isinstance(datamodule, DigitsDataModule) and datamodule.num_classes == 3
    trainer, model, data = training.instantiate()
    assert model.hparams.num_classes == 3 and model.hparams.in_channels == 1 and trainer.max_epochs == 1
    assert data.subset.classes == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"trainer.max_epocs": 3}, r"target_args .*max_epocs.*; did you mean trainer\.max_epochs\?"),
        (
            {"data.subset.fractoin": 0.5},
            r"data\.subset\.fractoin is not an option; did you mean data\.subset\.fraction",
        ),
        ({"data.flip_p": "often"}, r"target_args .*: data\.flip_p: expected a float\. Got value: often"),
        ({"model.arch_kwargs": 3}, r"target_args .*: model\.arch_kwargs: expected a dict"),
    ],
)
def test_a_bad_override_is_one_line_naming_where_it_came_from(overrides, message):
    with pytest.raises(TrainingConfigError, match=message) as error:
        Training(DIGITS, overrides, "target_args").resolved  # noqa: B018
    assert "\n" not in str(error.value)


def test_a_missing_config_is_refused():
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        Training("nowhere.yaml").resolved  # noqa: B018


def test_concrete_datamodules_say_only_the_defaults_they_change():
    digits = DigitsDataModule()
    assert (digits.batch_size, digits.num_workers, digits.flip_p, digits.root) == (64, 0, 0.0, "data")
    assert (digits.eval_batch_size, digits.val_fraction) == (128, 0.2)
    imagenette = ImagenetteDataModule(image_size=64, flip_p=0.25)
    assert (imagenette.batch_size, imagenette.num_workers, imagenette.image_size) == (64, 8, 64)
    assert (imagenette.flip_p, imagenette.release_size) == (0.25, "160")
    imagenet = ImageNetDataModule()
    assert (imagenet.root, imagenet.batch_size, imagenet.image_size) == ("data/imagenet", 256, 224)
    assert imagenet.num_workers == 8


def test_the_experiments_do_not_import_the_cli():
    for path in (ROOT / "lightning_proxy" / "experiments").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {
            f"{node.module}.{alias.name}" if node.module == "lightning_proxy" else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert not {name for name in imported if name and name.startswith("lightning_proxy.cli")}, path
