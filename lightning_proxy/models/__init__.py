"""Model registry: every architecture is built by name as a :class:`Classifier`.

A single entry point keeps configs declarative (``arch: preact_resnet20``) and guarantees that selection
code can read penultimate embeddings from whatever model a config names.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from functools import partial

from torch import nn

from lightning_proxy.models.classifier import Classifier
from lightning_proxy.models.preact_resnet import PreActResNet, preact_resnet
from lightning_proxy.models.signals import cnn1d
from lightning_proxy.models.text import VDCNN, VDCNN_BLOCKS, fasttext, vdcnn
from lightning_proxy.models.xresnet import XResNet, xresnet18, xresnet34, xresnet50, xresnet101, xresnet152

__all__ = [
    "Classifier",
    "PreActResNet",
    "VDCNN",
    "XResNet",
    "available_models",
    "build_model",
    "cnn1d",
    "fasttext",
    "preact_resnet",
    "vdcnn",
    "xresnet18",
    "xresnet34",
    "xresnet50",
    "xresnet101",
    "xresnet152",
]

_XRESNETS: dict[str, Callable[..., Classifier]] = {
    f.__name__: f for f in (xresnet18, xresnet34, xresnet50, xresnet101, xresnet152)
}
_PREACT_DEPTHS = (20, 32, 44, 56, 110, 164)
_TORCHVISION_ALIASES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_PREACT_RE = re.compile(r"preact_resnet(\d+)")
_SEQUENCE_MODELS: dict[str, Callable[..., Classifier]] = {
    "cnn1d": cnn1d,
    "fasttext": fasttext,
    **{f"vdcnn{depth}": partial(vdcnn, depth) for depth in VDCNN_BLOCKS},
}


def available_models() -> list[str]:
    """Built-in names, then the open-ended forms handled by pattern."""
    return [
        *_XRESNETS,
        *(f"preact_resnet{d}" for d in _PREACT_DEPTHS),
        *_SEQUENCE_MODELS,
        *_TORCHVISION_ALIASES,
        "preact_resnet<depth>",
        "torchvision/<name>",
        "timm/<name>",
    ]


def _suggest(name: str, candidates: list[str]) -> str:
    """Up to three close names; a letter typed for a digit after digits (``resnet2O``) is read as the digit,
    and a candidate also matches without its family prefix (``resnet20`` for ``preact_resnet20``)."""
    typed = {name, re.sub(r"(?<=\d)[Oo]", "0", re.sub(r"(?<=\d)[lI]", "1", name))}

    def score(candidate: str) -> tuple[float, float]:
        forms = {candidate, candidate.removeprefix("preact_"), candidate.removeprefix("x")}
        best = max(difflib.SequenceMatcher(None, t, f).ratio() for t in typed for f in forms)
        return best, difflib.SequenceMatcher(None, name, candidate).ratio()  # ties: the name as typed

    ranked = sorted(candidates, key=score, reverse=True)
    matches = [c for c in ranked[:3] if score(c)[0] >= 0.6]
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def _call(arch: str, builder: Callable[..., Classifier], **kwargs) -> Classifier:
    """Call ``builder`` after checking ``kwargs`` against its signature, naming the model on failure."""
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        accepted = ", ".join(p for p in signature.parameters if p not in ("num_classes", "in_channels"))
        raise TypeError(f"Invalid arguments for model {arch!r}: {err}. Accepted keyword arguments: {accepted}") from err
    return builder(**kwargs)


def _torchvision(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> Classifier:
    """A torchvision classifier with a ``.fc`` head, split into backbone and head; never pretrained."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ValueError(f"Unknown torchvision model {name!r}.{_suggest(name, names)}")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise TypeError(f"Invalid arguments for model 'torchvision/{name}': {err}") from err
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"torchvision model {name!r} has no `.fc` Linear head; try 'timm/{name}' instead")
    model.fc = nn.Identity()
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return Classifier(model, head)


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    path, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    parent, _, attr = path.rpartition(".")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    setattr(model.get_submodule(parent), attr, new)


def _timm(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> Classifier:
    """Any timm model without its classifier (pooled features) plus a fresh linear head; never pretrained."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"Unknown timm model {name!r}.{_suggest(name, timm.list_models())}")
    try:
        backbone = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    except TypeError as err:
        raise TypeError(f"Invalid arguments for model 'timm/{name}': {err}") from err
    num_features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return Classifier(backbone, nn.Linear(num_features, num_classes))


def build_model(arch: str, num_classes: int, in_channels: int = 3, **kwargs) -> Classifier:
    """Build ``arch`` for ``num_classes`` outputs and ``in_channels`` input channels (never pretrained).

    Names: ``xresnet18/34/50/101/152`` (``stem_widths``), ``preact_resnet<depth>`` (``width``, ``block``),
    ``fasttext`` (``dim``) and ``vdcnn9/17/29/49`` (``shortcut``, ``k``) over token ids, ``cnn1d``
    (``widths``, ``pooled``) over 1-D signals,
    ``resnet18/34/50/101/152`` (aliases of ``torchvision/resnet*``), ``torchvision/<name>`` for models with
    a ``.fc`` head, and ``timm/<name>``; extra ``kwargs`` go to the underlying constructor.
    """
    if arch in _TORCHVISION_ALIASES:
        arch = f"torchvision/{arch}"
    prefix, _, name = arch.partition("/")
    if prefix == "torchvision" and name:
        return _torchvision(name, num_classes, in_channels, **kwargs)
    if prefix == "timm" and name:
        return _timm(name, num_classes, in_channels, **kwargs)
    if arch in _XRESNETS:
        builder = _XRESNETS[arch]
    elif arch in _SEQUENCE_MODELS:
        builder = _SEQUENCE_MODELS[arch]
    elif match := _PREACT_RE.fullmatch(arch):
        builder = partial(preact_resnet, int(match.group(1)))
    else:
        known = available_models()
        raise ValueError(f"Unknown model {arch!r}.{_suggest(arch, known)} Available models: {', '.join(known)}")
    return _call(arch, builder, num_classes=num_classes, in_channels=in_channels, **kwargs)
