"""Pre-activation CIFAR ResNets (He et al. 2016, "Identity Mappings"), the proxies and targets of SVP."""

from __future__ import annotations

import torch
from torch import nn

from lightning_proxy.models.classifier import Classifier


def _conv(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, bias=False)


def _bn_relu(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; a 1x1 projection of the pre-activated input when the shape changes."""

    expansion = 1
    convs = 2

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.preact = _bn_relu(in_ch)
        self.residual = self._residual(in_ch, planes, out_ch, stride)
        self.shortcut = _conv(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else None

    @staticmethod
    def _residual(in_ch: int, planes: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(_conv(in_ch, planes, 3, stride), _bn_relu(planes), _conv(planes, out_ch, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.preact(x)
        shortcut = x if self.shortcut is None else self.shortcut(out)
        return self.residual(out) + shortcut


class PreActBottleneck(PreActBlock):
    """BN-ReLU-conv 1x1 / 3x3 (strided) / 1x1 with 4x expansion."""

    expansion = 4
    convs = 3

    @staticmethod
    def _residual(in_ch: int, planes: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            _conv(in_ch, planes, 1),
            _bn_relu(planes),
            _conv(planes, planes, 3, stride),
            _bn_relu(planes),
            _conv(planes, out_ch, 1),
        )


BLOCKS: dict[str, type[PreActBlock]] = {"basic": PreActBlock, "bottleneck": PreActBottleneck}


class PreActResNet(nn.Sequential):
    """Backbone: conv3x3, three stages (width, 2x, 4x; stride 2 between), BN-ReLU, global pool, flatten."""

    def __init__(self, block: type[PreActBlock], n: int, in_channels: int = 3, width: int = 16) -> None:
        layers: list[nn.Module] = [_conv(in_channels, width, 3)]
        in_ch = width
        for i in range(3):
            planes = width * 2**i
            for j in range(n):
                layers.append(block(in_ch, planes, stride=2 if i > 0 and j == 0 else 1))
                in_ch = planes * block.expansion
        super().__init__(*layers, _bn_relu(in_ch), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def resolve_block(depth: int, block: str | None = None) -> str:
    """Block type for ``depth``: basic needs depth = 6n+2, bottleneck 9n+2.

    When ``block`` is None and both fit (depth - 2 divisible by 18), depths below 164 use basic blocks
    and 164 and above bottlenecks, following He et al.: ResNet20/56/110 basic, ResNet164/1001 bottleneck.
    """
    fits = {name: depth > 2 and (depth - 2) % (3 * cls.convs) == 0 for name, cls in BLOCKS.items()}
    valid = "6n+2 with basic blocks (8, 14, 20, 32, 44, 56, 110, ...) or 9n+2 with bottlenecks (11, 29, 164, ...)"
    if block is not None:
        if block not in BLOCKS:
            raise ValueError(f"Unknown block {block!r}; expected one of {sorted(BLOCKS)}")
        if not fits[block]:
            raise ValueError(f"Depth {depth} is invalid for {block} blocks: depth must be {3 * BLOCKS[block].convs}n+2")
        return block
    if fits["basic"] and (depth < 164 or not fits["bottleneck"]):
        return "basic"
    if fits["bottleneck"]:
        return "bottleneck"
    raise ValueError(f"Invalid pre-activation ResNet depth {depth}: depth must be {valid}")


def preact_resnet(
    depth: int, num_classes: int, in_channels: int = 3, width: int = 16, block: str | None = None
) -> Classifier:
    """Pre-activation ResNet of the given depth; ``width`` (16 in the paper) scales every stage."""
    block_cls = BLOCKS[resolve_block(depth, block)]
    n = (depth - 2) // (3 * block_cls.convs)
    backbone = PreActResNet(block_cls, n, in_channels, width)
    return Classifier(backbone, nn.Linear(backbone.num_features, num_classes))
