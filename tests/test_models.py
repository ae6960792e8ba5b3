import pytest
import torch
import torchvision
from torch import nn

from lightning_proxy.models import Classifier, available_models, build_model, preact_resnet
from lightning_proxy.models.preact_resnet import resolve_block

TEXT = ("fasttext", "vdcnn9", "vdcnn17", "vdcnn29", "vdcnn49")  # token-id models: tests/test_text.py
SIGNALS = ("cnn1d",)  # 1-D signals: tests/test_tensors.py
BUILTINS = [name for name in available_models() if "<" not in name and name not in TEXT + SIGNALS]
BIG = {"xresnet50", "xresnet101", "xresnet152", "resnet50", "resnet101", "resnet152"}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny forwards on a shared CPU are much faster without intra-op thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_outputs(model: Classifier, x: torch.Tensor, num_classes: int) -> None:
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
        assert features.shape == (x.shape[0], model.num_features)
        assert logits.shape == (x.shape[0], num_classes)
        torch.testing.assert_close(logits, model.forward_head(features))


@pytest.mark.parametrize(
    ("depth", "num_classes", "millions"),
    [(20, 10, 0.27), (56, 10, 0.86), (110, 10, 1.73), (164, 10, 1.70), (20, 100, 0.28), (164, 100, 1.73)],
)
def test_preact_resnet_matches_svp_table2(depth, num_classes, millions):
    assert round(n_params(preact_resnet(depth, num_classes)) / 1e6, 2) == millions


@pytest.mark.parametrize(
    ("depth", "block"),
    [
        (20, "basic"),
        (56, "basic"),
        (110, "basic"),
        (164, "bottleneck"),
        (32, "basic"),
        (29, "bottleneck"),
        (1001, "bottleneck"),
    ],
)
def test_preact_block_rule(depth, block):
    assert resolve_block(depth) == block


def test_block_override():
    assert resolve_block(20, "bottleneck") == "bottleneck"
    basic = build_model("preact_resnet164", 10, block="basic")
    assert basic.num_features == 64 and round(n_params(basic) / 1e6, 2) == 2.61


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_builds_and_runs(name):
    model = build_model(name, num_classes=7)
    assert isinstance(model, Classifier)
    size = 64 if name == "xresnet18" else 32
    x = torch.randn(1 if name in BIG else 2, 3, size, size)
    check_outputs(model, x, 7)


@pytest.mark.parametrize("name", ["preact_resnet20", "preact_resnet164"])
def test_preact_on_digits(name):
    model = build_model(name, num_classes=10, in_channels=1, width=4)
    check_outputs(model, torch.randn(4, 1, 8, 8), 10)


def test_preact_train_mode_backward():
    model = build_model("preact_resnet20", num_classes=3, width=4)
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_stem_widths_change_layer_shapes():
    model = build_model("xresnet18", 10, stem_widths=(4, 48))
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs[:3]] == [(3, 4), (4, 48), (48, 64)]
    check_outputs(model, torch.randn(2, 3, 32, 32), 10)


def test_xresnet_structure():
    model = build_model("xresnet50", 10)
    assert model.num_features == 2048
    assert round(n_params(model) / 1e6, 1) == 23.5
    block = model.backbone[5][0]
    assert block.convs[1][0].stride == (2, 2) and block.convs[0][0].stride == (1, 1)
    assert isinstance(block.shortcut[0], nn.AvgPool2d)
    assert torch.all(block.convs[-1][1].weight == 0)


@pytest.mark.parametrize("arch", ["torchvision/resnet18", "timm/resnet10t", "timm/mobilenetv3_small_050"])
@pytest.mark.parametrize("in_channels", [3, 1])
def test_external_models(arch, in_channels):
    model = build_model(arch, num_classes=5, in_channels=in_channels)
    assert isinstance(model, Classifier)
    check_outputs(model, torch.randn(2, in_channels, 32, 32), 5)


def test_alias_is_torchvision():
    model = build_model("resnet18", 10)
    assert isinstance(model.backbone, torchvision.models.ResNet) and model.num_features == 512


def test_unknown_name():
    with pytest.raises(ValueError, match="xresnet19") as err:
        build_model("xresnet19", 10)
    assert "xresnet18" in str(err.value) and "preact_resnet20" in str(err.value)
    assert {"torchvision/<name>", "timm/<name>"} <= set(available_models())


@pytest.mark.parametrize(
    ("arch", "suggestion"), [("torchvision/resnet19", "resnet18"), ("timm/resnet10x", "resnet10t")]
)
def test_unknown_external_name(arch, suggestion):
    with pytest.raises(ValueError, match=arch.split("/")[1]) as err:
        build_model(arch, 10)
    assert suggestion in str(err.value)


def test_torchvision_without_fc():
    with pytest.raises(ValueError, match="fc"):
        build_model("torchvision/mobilenet_v3_small", 10)


@pytest.mark.parametrize("depth", [21, 2, 0])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model(f"preact_resnet{depth}", 10)


def test_bad_block():
    with pytest.raises(ValueError, match="9n\\+2"):
        build_model("preact_resnet32", 10, block="bottleneck")
    with pytest.raises(ValueError, match="wide"):
        build_model("preact_resnet20", 10, block="wide")


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("xresnet18", {"width": 8}),
        ("preact_resnet20", {"stem_widths": (4, 4)}),
        ("torchvision/resnet18", {"bogus": 1}),
        ("timm/resnet10t", {"bogus": 1}),
    ],
)
def test_bad_kwargs(arch, kwargs):
    with pytest.raises(TypeError, match=arch):
        build_model(arch, 10, **kwargs)
