"""Text classifiers of SVP's Amazon Review experiments: fastText (the proxy) and VDCNN (proxy and target).

Both read a batch of token ids, ``B x L`` int64 with 0 as padding, and take their vocabulary from
``in_channels`` (what the datamodule links into every model as its input's channels: an image's colour
channels, a text encoding's number of token ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_proxy.models.classifier import Classifier

# Conneau et al. 2017, Table 2: convolutional blocks (two conv layers each) per stage of 64, 128, 256, 512
VDCNN_BLOCKS = {9: (1, 1, 1, 1), 17: (2, 2, 2, 2), 29: (5, 5, 2, 2), 49: (8, 8, 5, 3)}
VDCNN_WIDTHS = (64, 128, 256, 512)


class BagOfNgrams(nn.Module):
    """fastText's hidden layer: the mean of the ids' embeddings (padding excluded), ``B x dim``."""

    def __init__(self, vocabulary: int, dim: int, sparse: bool = False) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocabulary, dim, mode="mean", padding_idx=0, sparse=sparse)
        nn.init.uniform_(self.embedding.weight, -1.0 / dim, 1.0 / dim)  # fastText's initialisation
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)


def fasttext(num_classes: int, in_channels: int, dim: int = 10, sparse: bool = False) -> Classifier:
    """fastText's supervised model (Joulin et al. 2017): mean of hashed uni+bigram embeddings, linear head.

    ``in_channels`` is the number of token ids (the hash buckets plus the padding id 0); ``dim`` 10 is
    fastText's default for these data sets. The head starts at zero, as fastText's output matrix does.
    ``sparse`` gradients touch only the rows a batch uses (10M buckets x 10 is 400 MB a step dense), for SGD
    without momentum or weight decay, as fastText's own updates.
    """
    head = nn.Linear(dim, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return Classifier(BagOfNgrams(in_channels, dim, sparse), head)


class ConvBlock(nn.Module):
    """Two temporal convolutions of kernel 3, each with batch norm and ReLU; optionally a shortcut around
    them (identity, or a 1x1 convolution with batch norm where the width changes)."""

    def __init__(self, in_ch: int, out_ch: int, shortcut: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv1d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(inplace=True),
        )
        self.shortcut: nn.Module | None = None
        if shortcut:
            projection = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1), nn.BatchNorm1d(out_ch))
            self.shortcut = nn.Identity() if in_ch == out_ch else projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class KMaxPool(nn.Module):
    """The ``k`` largest activations of each channel, in their order along the sequence."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.k:
            raise ValueError(
                f"VDCNN's k-max pooling keeps {self.k} positions and its three poolings left {x.shape[-1]}: give "
                f"it at least {8 * self.k - 7} characters (--data.char_length)"
            )
        index = x.topk(self.k, dim=-1).indices.sort(dim=-1).values
        return x.gather(-1, index)


class VDCNN(nn.Sequential):
    """Backbone of Conneau et al.'s very deep CNN: character embedding (16), a temporal convolution of 64,
    four stages of convolutional blocks (64, 128, 256, 512 wide; max pooling of 3 with stride 2 between them),
    k-max pooling (k 8) and two fully connected layers of 2048: ``B x 2048`` penultimate features."""

    def __init__(
        self,
        blocks: Sequence[int],
        vocabulary: int,
        embedding_dim: int = 16,
        shortcut: bool = False,
        k: int = 8,
        hidden: int = 2048,
    ) -> None:
        layers: list[nn.Module] = [_Embed(vocabulary, embedding_dim), nn.Conv1d(embedding_dim, 64, 3, padding=1)]
        in_ch = 64
        for stage, (count, width) in enumerate(zip(blocks, VDCNN_WIDTHS, strict=True)):
            if stage > 0:
                layers.append(nn.MaxPool1d(3, stride=2, padding=1))
            for _ in range(count):
                layers.append(ConvBlock(in_ch, width, shortcut))
                in_ch = width
        layers += [KMaxPool(k), nn.Flatten(), nn.Linear(in_ch * k, hidden), nn.ReLU(inplace=True)]
        layers += [nn.Linear(hidden, hidden), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.num_features = hidden


class _Embed(nn.Module):
    """Character ids ``B x L`` -> ``B x dim x L`` (the channels-first layout of temporal convolutions)."""

    def __init__(self, vocabulary: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, dim, padding_idx=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids).transpose(1, 2)


def vdcnn(depth: int, num_classes: int, in_channels: int, shortcut: bool = False, k: int = 8) -> Classifier:
    """VDCNN of ``depth`` 9, 17, 29 or 49 over ``in_channels`` character ids (VDCNN's 69 symbols, the
    unknown symbol and the padding id 0); the last of its three fully connected layers is the head."""
    if depth not in VDCNN_BLOCKS:
        raise ValueError(f"VDCNN depth must be one of {sorted(VDCNN_BLOCKS)} (Conneau et al.'s), got {depth}")
    if in_channels > 1024:
        raise ValueError(
            f"VDCNN reads character ids, and its input has {in_channels:,} ids (a word encoding?): give it "
            "--data.encoding chars"
        )
    backbone = VDCNN(VDCNN_BLOCKS[depth], in_channels, shortcut=shortcut, k=k)
    return Classifier(backbone, nn.Linear(backbone.num_features, num_classes))
