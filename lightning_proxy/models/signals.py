"""A small temporal CNN for 1-D signals (MNIST-1D's kind): ``B x C x L`` floats in, classes out."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_proxy.models.classifier import Classifier


def cnn1d(num_classes: int, in_channels: int, widths: Sequence[int] = (32, 32, 32), pooled: int = 5) -> Classifier:
    """Greydanus's MNIST-1D CNN in shape: convolutions of stride 2 (kernel 5, then 3) with batch norm and ReLU,
    each ``widths[i]`` wide; the last map average-pooled to ``pooled`` positions (so any length works and the
    position of a feature still counts) and flattened: ``widths[-1] * pooled`` penultimate features."""
    if not widths:
        raise ValueError("cnn1d needs at least one convolution: give widths, e.g. [32, 32, 32]")
    layers: list[nn.Module] = []
    channels = in_channels
    for i, width in enumerate(widths):
        kernel = 5 if i == 0 else 3
        layers += [nn.Conv1d(channels, width, kernel, stride=2, padding=kernel // 2), nn.BatchNorm1d(width)]
        layers.append(nn.ReLU(inplace=True))
        channels = width
    layers += [nn.AdaptiveAvgPool1d(pooled), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), nn.Linear(channels * pooled, num_classes))
