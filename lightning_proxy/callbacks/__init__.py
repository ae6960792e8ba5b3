"""Per-example statistics as Lightning callbacks; each writes ranking files (see ``selection.load_ranking``)."""

from lightning_proxy.callbacks.base import ExampleStatistic, targets_and_indices
from lightning_proxy.callbacks.dynamics import EL2N, AreaUnderMargin
from lightning_proxy.callbacks.forgetting import ForgettingEvents
from lightning_proxy.callbacks.scores import PostTrainingScores, example_scores

__all__ = [
    "EL2N",
    "AreaUnderMargin",
    "ExampleStatistic",
    "ForgettingEvents",
    "PostTrainingScores",
    "example_scores",
    "targets_and_indices",
]
