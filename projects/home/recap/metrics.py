"""Which metrics each validation set reports, and a readable summary of the results.

Every validation set is scored on its own `evaluation_tasks` (all model tasks when it names none):
per task AUROC, RCE, NRCE, CTR, pCTR, count and calibration (weighted by the set's sampling-rate
weights), plus the set's mean loss. Each `model.stratifiers` entry adds the same per-task metrics
over its stratum only (examples whose discrete column `index` equals `value`), keyed
"<metric>/<task>/<stratifier name>".

The metrics score the calibrated probabilities: the model's estimate for the full, un-sampled data,
which is also what the sampling-rate weights make each validation set stand for. (Without
down-sampling in train_data, or with `downsampling_correction: loss_weights`, they equal the raw
probabilities.)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torchmetrics

from tml.core.metrics import Stratifier, TaskMetricCollection, prepend_transform, task_metrics
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.embedding.config import StratifierConfig

# Columns of the end-of-run summary, in this order; the metric keys are "<column>/<task>".
SUMMARY_COLUMNS = ("auroc", "rce", "nrce", "ctr", "pctr", "calibration")

def _loss_per_counted_row(outputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A batch's loss is a mean over all its rows; rows whose weights are all 0 (the padding of a
    last partial batch) add nothing to it but the divisor. Rescaled to the rows that count and
    weighted by their number, the set's loss is the mean over its rows, as if in one batch."""
    loss = outputs["loss"].detach().float()
    weights = outputs.get("weights")
    if weights is None or weights.dim() == 0:
        return {"value": loss}
    rows = weights.shape[0]
    counted = (weights.reshape(rows, -1) != 0).any(dim=1).sum().float()
    if counted == 0:
        return {"value": loss, "weight": counted}
    return {"value": loss * rows / counted, "weight": counted}


MeanLoss = prepend_transform(torchmetrics.MeanMetric, _loss_per_counted_row)


class CalibratedMetricCollection(TaskMetricCollection):
    """Every metric reads outputs["calibrated_probabilities"] as the "probabilities" it scores."""

    def update(self, outputs: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        calibrated = outputs.get("calibrated_probabilities") if isinstance(outputs, Mapping) else None
        if calibrated is not None:
            outputs = {**outputs, "probabilities": calibrated}
        super().update(outputs, *args, **kwargs)


def evaluation_task_names(model_tasks: Sequence[str], data_config: RecapDataConfig) -> list[str]:
    """The set's evaluation_tasks (in the set's order), or every model task when it lists none."""
    return list(data_config.evaluation_tasks) if data_config.evaluation_tasks else list(model_tasks)


def build_metrics_factory(
    model_tasks: Sequence[str],
    validation_data: Mapping[str, RecapDataConfig],
    stratifiers: Optional[Sequence[StratifierConfig]] = None,
) -> Callable[[str], torchmetrics.MetricCollection]:
    """`factory(set_name)` -> a fresh metric collection for that validation set."""
    tasks_by_set = {name: evaluation_task_names(model_tasks, config) for name, config in validation_data.items()}
    strata = list(stratifiers or [])

    def factory(set_name: str) -> torchmetrics.MetricCollection:
        if set_name not in tasks_by_set:
            raise KeyError(f"no validation set '{set_name}'; sets: {list(tasks_by_set)}")
        tasks = tasks_by_set[set_name]
        metrics = task_metrics(tasks)
        for stratum in strata:
            stratified = task_metrics(tasks, stratifier=Stratifier(stratum.name, stratum.value))
            metrics.update({f"{key}/{stratum.name}": metric for key, metric in stratified.items()})
        collection = CalibratedMetricCollection(metrics)
        collection.add_metrics({"loss": MeanLoss()})
        return collection

    return factory


def _cell(value: float) -> str:
    return f"{value:.4f}" if torch.isfinite(torch.tensor(value)) else str(value)


def _row_label(key: str) -> str:
    """"<task>" or "<task>/<stratum>" -> "<task>" or "<task> [<stratum>]"."""
    task, _, stratum = key.partition("/")
    return f"{task} [{stratum}]" if stratum else task


def _row_keys(values: Mapping[str, float]) -> list[str]:
    """"<task>" and "<task>/<stratum>" in result order, each task's strata right after it."""
    keys = [key.split("/", 1)[1] for key in values if key.startswith(f"{SUMMARY_COLUMNS[0]}/")]
    tasks = [key for key in keys if "/" not in key]
    ordered = []
    for task in tasks:
        ordered.append(task)
        ordered.extend(key for key in keys if key.startswith(f"{task}/"))
    return ordered + [key for key in keys if key not in ordered]


def format_results(results: Mapping[str, Mapping[str, float]]) -> str:
    """One table per validation set: a row per task (then one per stratum of it), a column per
    metric in SUMMARY_COLUMNS."""
    blocks = []
    for set_name, values in results.items():
        keys = _row_keys(values)
        width = max([len("task")] + [len(_row_label(key)) for key in keys])
        header = f"{'task':<{width}}  " + "  ".join(f"{column:>11}" for column in SUMMARY_COLUMNS)
        rows = [
            f"{_row_label(key):<{width}}  "
            + "  ".join(f"{_cell(values.get(f'{column}/{key}', float('nan'))):>11}" for column in SUMMARY_COLUMNS)
            for key in keys
        ]
        loss = values.get("loss")
        title = f"validation set '{set_name}'" + (f" (loss {loss:.4f})" if loss is not None else "")
        blocks.append("\n".join([title, header, *rows]))
    return "\n\n".join(blocks)
