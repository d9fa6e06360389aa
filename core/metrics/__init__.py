"""Evaluation metrics (torchmetrics-based; every one reduces exactly across ranks).

The outputs dict contract
-------------------------
Metrics that take `update(outputs)` read the model-and-loss wrapper's outputs dict:

- "logits", "probabilities": [B, T] in MODEL task order (T = number of model tasks);
- "calibrated_probabilities" (optional): [B, T], same order;
- "labels", "weights": [B, T] aligned to the same MODEL task order (the wrapper reorders the data's
  label columns by name, so column i always belongs to model task i; "weights" is optional);
- "task_names" (optional): list[str], the name of each column, used by metrics built with `task=`;
- "stratifiers" (optional): dict name -> [B] tensor, used by metrics built with `stratifier=`.

Single-list metrics (ranking) read flat "logits" and "labels" of any shape.
Lower-level metrics (StableMean, AUROCWithMWU, RCE, NRCE) take tensors in `update(...)` directly.
"""
from tml.core.metrics.aggregation import StableMean, stable_mean_dist_reduce_fn, update_mean
from tml.core.metrics.auroc import AUROCWithMWU
from tml.core.metrics.mixins import MetricMixin, StratifyMixin, Stratifier, TaskMixin, prepend_transform
from tml.core.metrics.multi_task import TaskMetricCollection, get_multi_task_metrics, task_metrics
from tml.core.metrics.ranking import Auc, HitAtK, PosRanks, ReciprocalRank
from tml.core.metrics.rce import NRCE, RCE
from tml.core.metrics.task_metrics import (
    Calibration,
    CalibrationRatio,
    Count,
    Ctr,
    Pctr,
    Precision,
    Recall,
    TaskAUROCWithMWU,
    TaskNRCE,
    TaskRCE,
    TorchMetricsRocauc,
    probs_and_labels,
)

__all__ = [
    "AUROCWithMWU", "Auc", "Calibration", "CalibrationRatio", "Count", "Ctr", "HitAtK", "MetricMixin", "NRCE",
    "Pctr", "PosRanks", "Precision", "RCE", "Recall", "ReciprocalRank", "StableMean", "Stratifier",
    "StratifyMixin", "TaskAUROCWithMWU", "TaskMetricCollection", "TaskMixin", "TaskNRCE", "TaskRCE",
    "TorchMetricsRocauc", "get_multi_task_metrics", "prepend_transform", "probs_and_labels",
    "stable_mean_dist_reduce_fn", "task_metrics", "update_mean",
]
