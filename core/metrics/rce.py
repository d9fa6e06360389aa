"""Relative cross entropy (RCE) and its calibration-free variant (NRCE).

RCE = (1 - CE(model) / CE(baseline)) * 100, where the baseline always predicts the (weighted) label
rate, so 0 means "no better than the label rate" and 100 a perfect model. Cross entropies clip
probabilities keras-style so a confident mistake costs about -log(epsilon) instead of infinity.
"""
from __future__ import annotations

from typing import Any, Union

import torch
import torchmetrics

from tml.core.metrics.aggregation import fold_into_state, new_mean_state, stable_mean_dist_reduce_fn
from tml.core.metrics.concat_state import ConcatStateMetric

STATE_DTYPE = torch.float64


def _smooth(value: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return value * (1.0 - label_smoothing) + 0.5 * label_smoothing


def _binary_cross_entropy_with_clipping(
    predictions: torch.Tensor, target: torch.Tensor, epsilon: float, reduction: str = "none"
) -> torch.Tensor:
    """Keras' clipped BCE: clamp p to [eps, 1-eps], then -y*log(p+eps) - (1-y)*log(1-p+eps)."""
    clipped = predictions.clamp(epsilon, 1.0 - epsilon)
    losses = -target * torch.log(clipped + epsilon) - (1.0 - target) * torch.log(1.0 - clipped + epsilon)
    if reduction == "none":
        return losses
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}.")


def _relative_cross_entropy(model_ce: torch.Tensor, mean_label: torch.Tensor, epsilon: float) -> torch.Tensor:
    baseline_ce = _binary_cross_entropy_with_clipping(mean_label, mean_label, epsilon)
    return (1.0 - model_ce / baseline_ce) * 100.0


def _prepare(
    predictions: torch.Tensor,
    target: torch.Tensor,
    weight: Union[float, torch.Tensor],
    from_logits: bool,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened float64 (probabilities, smoothed labels, weights) of one batch."""
    if predictions.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} and target {tuple(target.shape)} "
            "must have the same shape."
        )
    predictions = predictions.detach().to(STATE_DTYPE).reshape(-1)
    if from_logits:
        predictions = torch.sigmoid(predictions)
    target = _smooth(target.detach().to(STATE_DTYPE).reshape(-1), label_smoothing)
    if torch.is_tensor(weight):
        weights = torch.broadcast_to(weight.detach().to(STATE_DTYPE), target.shape).reshape(-1)
    else:
        weights = torch.full_like(target, float(weight))
    return predictions, target, weights


class RCE(torchmetrics.Metric):
    """Weighted RCE in constant memory: running (mean, weight) states for the label and the model CE."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self, from_logits: bool = False, label_smoothing: float = 0.0, epsilon: float = 1e-7, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.epsilon = epsilon
        for name in ("mean_label", "mean_cross_entropy"):
            self.add_state(name, default=new_mean_state(), dist_reduce_fx=stable_mean_dist_reduce_fn)

    def update(
        self, predictions: torch.Tensor, target: torch.Tensor, weight: Union[float, torch.Tensor] = 1.0
    ) -> None:
        predictions, target, weights = _prepare(
            predictions, target, weight, self.from_logits, self.label_smoothing
        )
        cross_entropy = _binary_cross_entropy_with_clipping(predictions, target, self.epsilon)
        self.mean_label = fold_into_state(self.mean_label, target, weights)
        self.mean_cross_entropy = fold_into_state(self.mean_cross_entropy, cross_entropy, weights)

    def compute(self) -> torch.Tensor:
        return _relative_cross_entropy(self.mean_cross_entropy[0], self.mean_label[0], self.epsilon)


class NRCE(ConcatStateMetric):
    """RCE after rescaling every prediction by mean_label / mean_prediction, so miscalibration is ignored.

    The scale uses the final weighted means over all data on all ranks. (The original rescaled each
    batch with the running means seen so far, which made the value depend on batch order and split.)
    Exactness costs memory: every example's prediction, label and weight is kept until `compute`.
    """

    higher_is_better = True
    is_differentiable = False

    def __init__(
        self, from_logits: bool = False, label_smoothing: float = 0.0, epsilon: float = 1e-7, **kwargs: Any
    ) -> None:
        super().__init__(column_names=("predictions", "target", "weights"), **kwargs)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.epsilon = epsilon

    def update(
        self, predictions: torch.Tensor, target: torch.Tensor, weight: Union[float, torch.Tensor] = 1.0
    ) -> None:
        predictions, target, weights = _prepare(
            predictions, target, weight, self.from_logits, self.label_smoothing
        )
        self._append_columns(predictions=predictions, target=target, weights=weights)

    def compute(self) -> torch.Tensor:
        predictions = self._concatenated("predictions")
        target = self._concatenated("target")
        weights = self._concatenated("weights")
        total_weight = weights.sum()
        mean_label = (weights * target).sum() / total_weight
        mean_prediction = (weights * predictions).sum() / total_weight
        normalized = predictions * (mean_label / mean_prediction)
        cross_entropy = _binary_cross_entropy_with_clipping(normalized, target, self.epsilon)
        model_ce = (weights * cross_entropy).sum() / total_weight
        return _relative_cross_entropy(model_ce, mean_label, self.epsilon)
