"""fastai-style XResNet ("Bag of Tricks" ResNet-D), the model of the proxy-datasets experiments.

The stem's first two widths are exposed because Shleifer & Prokop (2019) search over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lightning_proxy.models.classifier import Classifier

Act = Callable[[], nn.Module]


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    act: Act | None = nn.ReLU,
    zero_bn: bool = False,
) -> nn.Sequential:
    """Conv-BN(-activation); ``zero_bn`` starts the block as identity (zero-init residual)."""
    bn = nn.BatchNorm2d(out_ch)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    layers = [nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, bias=False), bn]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class XResBlock(nn.Module):
    """Residual block with an avg-pool + 1x1 conv shortcut (ResNet-D) when the shape changes."""

    def __init__(self, expansion: int, in_ch: int, planes: int, stride: int = 1, act: Act = nn.ReLU) -> None:
        super().__init__()
        out_ch = planes * expansion
        if expansion == 1:
            self.convs = nn.Sequential(
                conv_bn(in_ch, planes, 3, stride, act=act),
                conv_bn(planes, out_ch, 3, act=None, zero_bn=True),
            )
        else:
            self.convs = nn.Sequential(
                conv_bn(in_ch, planes, 1, act=act),
                conv_bn(planes, planes, 3, stride, act=act),
                conv_bn(planes, out_ch, 1, act=None, zero_bn=True),
            )
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool2d(2, ceil_mode=True))
        if in_ch != out_ch:
            shortcut.append(conv_bn(in_ch, out_ch, 1, act=None))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet(nn.Sequential):
    """Backbone: 3-conv stem, max-pool, four stages, global average pool, flatten."""

    def __init__(
        self,
        expansion: int,
        layers: Sequence[int],
        in_channels: int = 3,
        stem_widths: Sequence[int] = (32, 32),
        act: Act = nn.ReLU,
    ) -> None:
        if len(stem_widths) != 2:
            raise ValueError(f"stem_widths must be two ints, got {stem_widths!r}")
        stem_sizes = [in_channels, *stem_widths, 64]
        stem = [conv_bn(stem_sizes[i], stem_sizes[i + 1], 3, stride=2 if i == 0 else 1, act=act) for i in range(3)]
        stages, in_ch = [], 64
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(n_blocks):
                blocks.append(XResBlock(expansion, in_ch, planes, stride=2 if i > 0 and j == 0 else 1, act=act))
                in_ch = planes * expansion
            stages.append(nn.Sequential(*blocks))
        super().__init__(
            *stem,
            nn.MaxPool2d(3, stride=2, padding=1),
            *stages,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)


def _xresnet(expansion: int, layers: Sequence[int], num_classes: int, in_channels: int, **kwargs) -> Classifier:
    backbone = XResNet(expansion, layers, in_channels, **kwargs)
    head = nn.Linear(backbone.num_features, num_classes)
    nn.init.kaiming_normal_(head.weight)
    nn.init.zeros_(head.bias)
    return Classifier(backbone, head)


def xresnet18(num_classes: int, in_channels: int = 3, stem_widths: tuple[int, int] = (32, 32)) -> Classifier:
    return _xresnet(1, (2, 2, 2, 2), num_classes, in_channels, stem_widths=stem_widths)


def xresnet34(num_classes: int, in_channels: int = 3, stem_widths: tuple[int, int] = (32, 32)) -> Classifier:
    return _xresnet(1, (3, 4, 6, 3), num_classes, in_channels, stem_widths=stem_widths)


def xresnet50(num_classes: int, in_channels: int = 3, stem_widths: tuple[int, int] = (32, 32)) -> Classifier:
    return _xresnet(4, (3, 4, 6, 3), num_classes, in_channels, stem_widths=stem_widths)


def xresnet101(num_classes: int, in_channels: int = 3, stem_widths: tuple[int, int] = (32, 32)) -> Classifier:
    return _xresnet(4, (3, 4, 23, 3), num_classes, in_channels, stem_widths=stem_widths)


def xresnet152(num_classes: int, in_channels: int = 3, stem_widths: tuple[int, int] = (32, 32)) -> Classifier:
    return _xresnet(4, (3, 8, 36, 3), num_classes, in_channels, stem_widths=stem_widths)
