"""A backbone/head split shared by every model, so embeddings are always one call away."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """``head(backbone(x))``, where ``backbone`` returns pooled, flattened (B, D) features.

    Selection methods such as greedy k-centers need penultimate embeddings; keeping the split
    explicit lets them call :meth:`forward_features` on any architecture the registry builds.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features: int = head.in_features
        self.num_classes: int = head.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
