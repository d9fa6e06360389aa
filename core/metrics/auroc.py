"""Exact weighted AUROC as a Mann-Whitney U statistic.

Binned AUROC (thresholds) is biased when the positive rate is tiny, as for most engagement labels;
the U statistic over all examples is exact. Cost: O(n log n) for one sort, memory: every example.
"""
from __future__ import annotations

from typing import Any, Union

import torch

from tml.core.metrics.concat_state import ConcatStateMetric
from tml.ml_logging.torch_logging import logging


def weighted_mann_whitney_auc(
    scores: torch.Tensor, is_positive: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(auc, positive weight, negative weight): P(score_pos > score_neg), ties counted one half.

    Each (positive i, negative j) pair counts w_i * w_j. Sorting groups equal scores; the negative
    weight strictly below a group plus half the negative weight inside it is what each positive of
    that group beats.
    """
    scores = scores.to(torch.float64)
    weights = weights.to(torch.float64)
    positive_weights = torch.where(is_positive, weights, torch.zeros_like(weights))
    negative_weights = weights - positive_weights
    total_positive, total_negative = positive_weights.sum(), negative_weights.sum()

    sorted_scores, order = torch.sort(scores)
    _, group_of_sorted = torch.unique_consecutive(sorted_scores, return_inverse=True)
    num_groups = int(group_of_sorted.max().item()) + 1 if group_of_sorted.numel() else 0
    negative_per_group = torch.zeros(num_groups, dtype=torch.float64, device=scores.device)
    negative_per_group.index_add_(0, group_of_sorted, negative_weights[order])
    negative_below_group = torch.cumsum(negative_per_group, 0) - negative_per_group
    beaten = negative_below_group + 0.5 * negative_per_group
    wins = (positive_weights[order] * beaten[group_of_sorted]).sum()
    # Dividing by the larger total first keeps the intermediate small (the original's overflow guard).
    auc = wins / torch.maximum(total_positive, total_negative) / torch.minimum(total_positive, total_negative)
    return auc, total_positive, total_negative


class AUROCWithMWU(ConcatStateMetric):
    """Weighted AUROC; a label above `label_threshold` is positive.

    With no positive or no negative weight the AUC is undefined: a ValueError when
    `raise_missing_class`, else a warning and NaN.
    """

    higher_is_better = True
    is_differentiable = False

    def __init__(
        self, label_threshold: float = 0.5, raise_missing_class: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(column_names=("predictions", "target", "weights"), **kwargs)
        self.label_threshold = label_threshold
        self.raise_missing_class = raise_missing_class

    def update(
        self, predictions: torch.Tensor, target: torch.Tensor, weight: Union[float, torch.Tensor] = 1.0
    ) -> None:
        if predictions.shape != target.shape:
            raise ValueError(
                f"predictions {tuple(predictions.shape)} and target {tuple(target.shape)} "
                "must have the same shape."
            )
        weights = weight if torch.is_tensor(weight) else torch.tensor(float(weight))
        weights = torch.broadcast_to(weights.to(predictions.device), predictions.shape)
        self._append_columns(predictions=predictions, target=target, weights=weights)

    def compute(self) -> torch.Tensor:
        scores = self._concatenated("predictions")
        is_positive = self._concatenated("target") > self.label_threshold
        auc, total_positive, total_negative = weighted_mann_whitney_auc(
            scores, is_positive, self._concatenated("weights")
        )
        missing = [name for name, total in (("positive", total_positive), ("negative", total_negative))
                   if total <= 0]
        if missing:
            message = (f"AUROC is undefined: no {' and no '.join(missing)} examples "
                       f"(label_threshold={self.label_threshold}).")
            if self.raise_missing_class:
                raise ValueError(message)
            logging.warning(message)
            return torch.tensor(float("nan"), dtype=torch.float64, device=scores.device)
        return auc
