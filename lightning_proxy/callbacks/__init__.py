"""Per-example statistics as Lightning callbacks; each writes ranking files (see ``selection.load_ranking``).

:class:`RankingWriter` writes the files; :class:`ExampleStatistic` accumulates a statistic of the training steps
(forgetting events, EL2N, AUM); :class:`PostTrainingScores` scores the pool once with the trained model;
:class:`OnlinePruning` chooses each epoch's examples from the training losses (InfoBatch).
"""

from lightning_proxy.callbacks.dynamics import EL2N, AreaUnderMargin
from lightning_proxy.callbacks.forgetting import ForgettingEvents
from lightning_proxy.callbacks.pruning import OnlinePruning
from lightning_proxy.callbacks.scores import SCORES, PostTrainingScores, example_scores
from lightning_proxy.callbacks.statistic import ExampleStatistic
from lightning_proxy.callbacks.writer import RankingWriter, targets_and_indices

__all__ = [
    "EL2N",
    "AreaUnderMargin",
    "ExampleStatistic",
    "ForgettingEvents",
    "OnlinePruning",
    "SCORES",
    "PostTrainingScores",
    "RankingWriter",
    "example_scores",
    "targets_and_indices",
]
