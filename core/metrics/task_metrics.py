"""Per-task metrics that read the outputs dict (see `tml.core.metrics` for its keys).

Each takes `task_idx=` (position) and/or `task=` (name looked up in outputs["task_names"]),
`stratifier=` and `weighted=` (use the task's outputs["weights"] column). Count, Ctr, Pctr,
Precision, Recall and TorchMetricsRocauc keep the original's names and its unweighted semantics
(Ctr/Pctr accept weighted=True); the others are weighted by default.
"""
from __future__ import annotations

from typing import Any, Union

import torch
import torchmetrics
from torchmetrics.classification import BinaryAUROC, BinaryPrecision, BinaryRecall

from tml.core.metrics.auroc import AUROCWithMWU
from tml.core.metrics.mixins import MetricMixin, Outputs, StratifyMixin, TaskMixin
from tml.core.metrics.rce import NRCE, RCE


def probs_and_labels(outputs: Outputs, task_idx: int) -> dict[str, torch.Tensor]:
    """torchmetrics classification inputs for one task (all tasks flattened when task_idx < 0)."""
    predictions, target = outputs["probabilities"], outputs["labels"]
    if task_idx >= 0:
        predictions, target = predictions[:, task_idx], target[:, task_idx]
    return {"preds": predictions, "target": target.int()}


class _TaskTransform(StratifyMixin, TaskMixin, MetricMixin):
    """Stratify rows first, then pick the task column.

    `weighted`: use the task's column of outputs["weights"] (when present) as example weights.
    """

    def __init__(self, weighted: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weighted = weighted

    def _columns(self, outputs: Outputs) -> Outputs:
        return self.maybe_apply_stratification(outputs)

    def _weight(self, outputs: Outputs) -> Union[float, torch.Tensor]:
        weights = self.optional_task_column(outputs, "weights") if self.weighted else None
        return 1.0 if weights is None else weights


class _ClassificationTransform(_TaskTransform):
    """torchmetrics classification bases take no example weights."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(weighted=False, **kwargs)

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        outputs = self._columns(outputs)
        return {
            "preds": self.task_column(outputs, "probabilities"),
            "target": self.task_column(outputs, "labels").int(),
        }


class Count(_TaskTransform, torchmetrics.SumMetric):
    """Sum of labels, i.e. the number of positives; unweighted by default, like the original."""

    def __init__(self, weighted: bool = False, **kwargs: Any) -> None:
        super().__init__(weighted=weighted, **kwargs)

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        outputs = self._columns(outputs)
        return {"value": self.task_column(outputs, "labels").float() * self._weight(outputs)}


class _WeightableMean(_TaskTransform, torchmetrics.MeanMetric):
    """Unweighted by default, like the original."""

    value_key = ""

    def __init__(self, weighted: bool = False, **kwargs: Any) -> None:
        super().__init__(weighted=weighted, **kwargs)

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        outputs = self._columns(outputs)
        return {"value": self.task_column(outputs, self.value_key).float(), "weight": self._weight(outputs)}


class Ctr(_WeightableMean):
    """Mean label (click-through rate)."""

    value_key = "labels"


class Pctr(_WeightableMean):
    """Mean predicted probability."""

    value_key = "probabilities"


class Precision(_ClassificationTransform, BinaryPrecision):
    """Precision at threshold 0.5 (torchmetrics' binary task)."""


class Recall(_ClassificationTransform, BinaryRecall):
    """Recall at threshold 0.5 (torchmetrics' binary task)."""


class TorchMetricsRocauc(_ClassificationTransform, BinaryAUROC):
    """torchmetrics' AUROC (exact without `thresholds`, unweighted)."""


class TaskAUROCWithMWU(_TaskTransform, AUROCWithMWU):
    """Exact weighted Mann-Whitney AUROC of outputs["probabilities"] for one task."""

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        outputs = self._columns(outputs)
        return {
            "predictions": self.task_column(outputs, "probabilities"),
            "target": self.task_column(outputs, "labels"),
            "weight": self._weight(outputs),
        }


class _RceTransform(_TaskTransform):
    def transform(self, outputs: Outputs) -> dict[str, Any]:
        outputs = self._columns(outputs)
        prediction_key = "logits" if getattr(self, "from_logits", False) else "probabilities"
        return {
            "predictions": self.task_column(outputs, prediction_key),
            "target": self.task_column(outputs, "labels"),
            "weight": self._weight(outputs),
        }


class TaskRCE(_RceTransform, RCE):
    """Weighted RCE for one task; reads logits when from_logits=True, else probabilities."""


class TaskNRCE(_RceTransform, NRCE):
    """Weighted NRCE for one task; reads logits when from_logits=True, else probabilities."""


class CalibrationRatio(torchmetrics.Metric):
    """sum(w * prediction) / sum(w * label); 1.0 means calibrated on average."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        zero = torch.zeros((), dtype=torch.float64)
        self.add_state("weighted_prediction_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("weighted_label_sum", default=zero.clone(), dist_reduce_fx="sum")

    def update(
        self, predictions: torch.Tensor, target: torch.Tensor, weight: Union[float, torch.Tensor] = 1.0
    ) -> None:
        weights = weight.detach().to(torch.float64) if torch.is_tensor(weight) else float(weight)
        self.weighted_prediction_sum += (weights * predictions.detach().to(torch.float64)).sum()
        self.weighted_label_sum += (weights * target.detach().to(torch.float64)).sum()

    def compute(self) -> torch.Tensor:
        return self.weighted_prediction_sum / self.weighted_label_sum


class Calibration(_TaskTransform, CalibrationRatio):
    """Weighted mean calibrated prediction / weighted label rate for one task.

    Reads outputs["calibrated_probabilities"] when present, else outputs["probabilities"].
    """

    def transform(self, outputs: Outputs) -> dict[str, Any]:
        outputs = self._columns(outputs)
        calibrated = outputs.get("calibrated_probabilities") is not None
        key = "calibrated_probabilities" if calibrated else "probabilities"
        return {
            "predictions": self.task_column(outputs, key),
            "target": self.task_column(outputs, "labels"),
            "weight": self._weight(outputs),
        }
