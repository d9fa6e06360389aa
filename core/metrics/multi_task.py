"""The standard evaluation metrics of a multi-task ranker, one set per task."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torchmetrics

from tml.core.metrics.mixins import Stratifier
from tml.core.metrics.task_metrics import Calibration, Count, Ctr, Pctr, TaskAUROCWithMWU, TaskNRCE, TaskRCE

# torch module names may not contain "."; task names such as "recap.engagement.is_favorited" do.
_DOT_IN_MODULE_NAME = "(dot)"


def _module_name(display_name: str) -> str:
    if _DOT_IN_MODULE_NAME in display_name:
        raise ValueError(f"Metric name {display_name!r} must not contain {_DOT_IN_MODULE_NAME!r}.")
    return display_name.replace(".", _DOT_IN_MODULE_NAME)


class TaskMetricCollection(torchmetrics.MetricCollection):
    """A MetricCollection whose keys may contain dots ("auroc/recap.engagement.is_favorited").

    Keys are stored with dots encoded and decoded again in every key the collection reports
    (`compute`, `forward`, `keys`, `items`); indexing accepts the dotted name. Compute groups are
    off: metrics of different tasks can hold equal states on a first batch without being equal.
    """

    def __init__(self, metrics: Mapping[str, torchmetrics.Metric], prefix: Optional[str] = None) -> None:
        super().__init__({_module_name(name): metric for name, metric in metrics.items()},
                         prefix=prefix, compute_groups=False)

    def _set_name(self, base: str) -> str:  # torchmetrics 1.0 hook that names every reported key
        return super()._set_name(base.replace(_DOT_IN_MODULE_NAME, "."))

    def __getitem__(self, key: str, copy_state: bool = True) -> torchmetrics.Metric:
        return super().__getitem__(_module_name(key), copy_state=copy_state)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(_module_name(key))


def task_metrics(
    task_names: Sequence[str],
    *,
    weighted: bool = True,
    label_threshold: float = 0.5,
    raise_missing_class: bool = False,
    label_smoothing: float = 0.0,
    epsilon: float = 1e-7,
    stratifier: Optional[Stratifier] = None,
) -> dict[str, torchmetrics.Metric]:
    """Per task: auroc (exact weighted MWU), rce, nrce, ctr, pctr, count (positives), calibration,
    keyed "<metric>/<task>" (for collections that combine several sets, e.g. one per stratum).

    Each metric finds its column by name in outputs["task_names"] when present, else by the task's
    position in `task_names` (outputs must then be in that order). With `weighted`,
    outputs["weights"] (if present) weights every metric except count.
    """
    task_names = list(task_names)
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"task_names must be unique, got {task_names}.")
    metrics: dict[str, torchmetrics.Metric] = {}
    for task_idx, task in enumerate(task_names):
        common: dict[str, Any] = {"task": task, "task_idx": task_idx, "stratifier": stratifier}
        weighted_common = dict(common, weighted=weighted)
        ce_options = {"label_smoothing": label_smoothing, "epsilon": epsilon}
        metrics[f"auroc/{task}"] = TaskAUROCWithMWU(
            label_threshold=label_threshold, raise_missing_class=raise_missing_class, **weighted_common
        )
        metrics[f"rce/{task}"] = TaskRCE(**ce_options, **weighted_common)
        metrics[f"nrce/{task}"] = TaskNRCE(**ce_options, **weighted_common)
        metrics[f"ctr/{task}"] = Ctr(**weighted_common)
        metrics[f"pctr/{task}"] = Pctr(**weighted_common)
        metrics[f"count/{task}"] = Count(**common)
        metrics[f"calibration/{task}"] = Calibration(**weighted_common)
    return metrics


def get_multi_task_metrics(
    task_names: Sequence[str],
    *,
    prefix: Optional[str] = None,
    **options: Any,
) -> TaskMetricCollection:
    """`task_metrics(task_names, **options)` as one collection; keys "<prefix><metric>/<task>"."""
    return TaskMetricCollection(task_metrics(task_names, **options), prefix=prefix)
