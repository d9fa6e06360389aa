"""PyTorch-BigGraph style ranking metrics: the whole batch is one ranked list.

Each reads outputs["logits"] (scores) and outputs["labels"] (1 = positive), flattened. Ranks are
1-based positions after sorting scores in descending order; ranks are averaged over positives, so
across batches and ranks the value is the mean over all positives seen.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torchmetrics

from tml.core.metrics.mixins import MetricMixin, Outputs


def _scores_and_labels(outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    scores = outputs["logits"].detach().reshape(-1)
    labels = outputs["labels"].detach().reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"logits ({scores.numel()} values) and labels ({labels.numel()}) differ in size.")
    return scores, labels


def positive_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1-based rank of each positive in the batch ordered by descending score (ties in input order)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return (labels[order] == 1).nonzero(as_tuple=True)[0] + 1


class Auc(MetricMixin, torchmetrics.MeanMetric):
    """Sampled AUC: draw `num_samples` (positive, negative) pairs with replacement, score the
    fraction where the positive scores higher; ties count one half (the original counted them 0).
    Batches lacking a positive or a negative are skipped. Pass `generator` for reproducible draws.
    """

    def __init__(self, num_samples: int, generator: Optional[torch.Generator] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        self.num_samples = num_samples
        self.generator = generator

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        scores, labels = _scores_and_labels(outputs)
        positive_scores, negative_scores = scores[labels == 1], scores[labels == 0]
        if positive_scores.numel() == 0 or negative_scores.numel() == 0:
            return {"value": scores.new_zeros(0)}
        device = "cpu" if self.generator is None else self.generator.device
        pick_positive = torch.randint(positive_scores.numel(), (self.num_samples,), generator=self.generator,
                                      device=device).to(scores.device)
        pick_negative = torch.randint(negative_scores.numel(), (self.num_samples,), generator=self.generator,
                                      device=device).to(scores.device)
        pairs_positive, pairs_negative = positive_scores[pick_positive], negative_scores[pick_negative]
        wins = (pairs_positive > pairs_negative).float() + 0.5 * (pairs_positive == pairs_negative).float()
        return {"value": wins}


class PosRanks(MetricMixin, torchmetrics.MeanMetric):
    """Mean 1-based rank of the positives (lower is better)."""

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        return {"value": positive_ranks(*_scores_and_labels(outputs)).float()}


class ReciprocalRank(MetricMixin, torchmetrics.MeanMetric):
    """Mean of 1/rank over positives (MRR)."""

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        return {"value": torch.reciprocal(positive_ranks(*_scores_and_labels(outputs)).float())}


class HitAtK(MetricMixin, torchmetrics.MeanMetric):
    """Fraction of positives ranked in the top k."""

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}.")
        self.k = k

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        return {"value": (positive_ranks(*_scores_and_labels(outputs)) <= self.k).float()}
