"""Which metrics each validation set reports, and a readable summary of the results.

Every validation set is scored on its own `evaluation_tasks` (all model tasks when it names none):
per task AUROC, RCE, NRCE, CTR, pCTR, count and calibration (weighted by the set's sampling-rate
weights), plus the set's mean loss.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torchmetrics

from tml.core.metrics import get_multi_task_metrics, prepend_transform
from tml.projects.home.recap.data.config import RecapDataConfig

# Columns of the end-of-run summary, in this order; the metric keys are "<column>/<task>".
SUMMARY_COLUMNS = ("auroc", "rce", "nrce", "ctr", "pctr", "calibration")

MeanLoss = prepend_transform(torchmetrics.MeanMetric, lambda outputs: {"value": outputs["loss"].detach().float()})


def evaluation_task_names(model_tasks: Sequence[str], data_config: RecapDataConfig) -> list[str]:
    """The set's evaluation_tasks (in the set's order), or every model task when it lists none."""
    return list(data_config.evaluation_tasks) if data_config.evaluation_tasks else list(model_tasks)


def build_metrics_factory(
    model_tasks: Sequence[str], validation_data: Mapping[str, RecapDataConfig]
) -> Callable[[str], torchmetrics.MetricCollection]:
    """`factory(set_name)` -> a fresh metric collection for that validation set."""
    tasks_by_set = {name: evaluation_task_names(model_tasks, config) for name, config in validation_data.items()}

    def factory(set_name: str) -> torchmetrics.MetricCollection:
        if set_name not in tasks_by_set:
            raise KeyError(f"no validation set '{set_name}'; sets: {list(tasks_by_set)}")
        metrics = get_multi_task_metrics(tasks_by_set[set_name])
        metrics.add_metrics({"loss": MeanLoss()})
        return metrics

    return factory


def _cell(value: float) -> str:
    return f"{value:.4f}" if torch.isfinite(torch.tensor(value)) else str(value)


def format_results(results: Mapping[str, Mapping[str, float]]) -> str:
    """One table per validation set: a row per task, a column per metric in SUMMARY_COLUMNS."""
    blocks = []
    for set_name, values in results.items():
        tasks = [key.split("/", 1)[1] for key in values if key.startswith(f"{SUMMARY_COLUMNS[0]}/")]
        width = max([len("task")] + [len(task) for task in tasks])
        header = f"{'task':<{width}}  " + "  ".join(f"{column:>11}" for column in SUMMARY_COLUMNS)
        rows = [
            f"{task:<{width}}  "
            + "  ".join(f"{_cell(values.get(f'{column}/{task}', float('nan'))):>11}" for column in SUMMARY_COLUMNS)
            for task in tasks
        ]
        loss = values.get("loss")
        title = f"validation set '{set_name}'" + (f" (loss {loss:.4f})" if loss is not None else "")
        blocks.append("\n".join([title, header, *rows]))
    return "\n\n".join(blocks)
