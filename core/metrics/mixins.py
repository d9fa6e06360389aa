"""Let torchmetrics metrics take the model's whole outputs dict in `update(outputs)`.

A metric class = transform mixins + a torchmetrics base. `transform(outputs)` turns the outputs dict
(contract in `tml.core.metrics`) into the base metric's `update` keyword arguments; `TaskMixin`
selects one task's column, `StratifyMixin` keeps only the rows of one stratum.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch
import torchmetrics

Outputs = Mapping[str, Any]


class MetricMixin:
    """`update(outputs)`; a batch whose transformed tensors include an empty one is skipped.

    Empty tensors arise when stratification keeps no row; several torchmetrics bases fail on them.
    """

    @abstractmethod
    def transform(self, outputs: Outputs) -> dict[str, Any]:
        """Keyword arguments of the base metric's `update`, taken from the outputs dict."""

    def update(self, outputs: Outputs) -> None:
        kwargs = self.transform(outputs)
        if any(torch.is_tensor(value) and value.numel() == 0 for value in kwargs.values()):
            return
        super().update(**kwargs)  # type: ignore[misc]


class TaskMixin:
    """Selects one task's column of [B, T] outputs.

    `task` (a name) is looked up in `outputs["task_names"]` when the outputs carry names; otherwise
    `task_idx` is used. With neither (task_idx < 0 and no name), tensors are used whole.
    """

    def __init__(self, task_idx: int = -1, task: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._task_idx = task_idx
        self._task = task

    def task_index(self, outputs: Outputs) -> Optional[int]:
        if self._task is not None:
            task_names = outputs.get("task_names")
            if task_names is not None:
                task_names = list(task_names)
                if self._task not in task_names:
                    raise ValueError(
                        f"Metric task {self._task!r} is not in outputs['task_names']: {task_names}."
                    )
                return task_names.index(self._task)
            if self._task_idx < 0:
                raise ValueError(
                    f"Metric for task {self._task!r} needs outputs['task_names'] (or a task_idx) "
                    "to find its column."
                )
        return self._task_idx if self._task_idx >= 0 else None

    def task_column(self, outputs: Outputs, key: str) -> torch.Tensor:
        if key not in outputs:
            raise KeyError(
                f"Metric {type(self).__name__} needs outputs[{key!r}]; got keys {sorted(outputs)}."
            )
        tensor = outputs[key]
        index = self.task_index(outputs)
        if index is None:
            return tensor
        if tensor.dim() != 2 or index >= tensor.shape[1]:
            raise ValueError(
                f"outputs[{key!r}] of shape {tuple(tensor.shape)} has no task column {index} "
                f"(task {self._task!r})."
            )
        return tensor[:, index]

    def optional_task_column(self, outputs: Outputs, key: str) -> Optional[torch.Tensor]:
        return self.task_column(outputs, key) if outputs.get(key) is not None else None


@dataclass(frozen=True)
class Stratifier:
    """Rows where outputs["stratifiers"][name] == value form the stratum."""

    name: str
    value: Union[int, float, bool]


class StratifyMixin:
    """Restricts the metric to one stratum of the batch (e.g. one product surface)."""

    def __init__(self, stratifier: Optional[Stratifier] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stratifier = stratifier

    def maybe_apply_stratification(
        self, outputs: Outputs, value_names: Optional[Iterable[str]] = None
    ) -> dict[str, Any]:
        """A shallow copy of outputs with the stratum's rows of `value_names` (default: every tensor
        with the batch's length) kept."""
        outputs = dict(outputs)
        if self._stratifier is None:
            return outputs
        stratifiers = outputs.get("stratifiers") or {}
        if self._stratifier.name not in stratifiers:
            raise ValueError(
                f"Stratifier {self._stratifier.name!r} is not in outputs['stratifiers'] "
                f"(available: {sorted(stratifiers)})."
            )
        keep = torch.flatten(stratifiers[self._stratifier.name] == self._stratifier.value)
        rows = keep.nonzero().squeeze(-1)
        if value_names is None:
            value_names = [name for name, value in outputs.items()
                           if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == keep.shape[0]]
        for name in value_names:
            if outputs.get(name) is not None:
                outputs[name] = torch.index_select(outputs[name], 0, rows.to(outputs[name].device))
        return outputs


def prepend_transform(
    base_metric: type[torchmetrics.Metric], transform: Callable[[Outputs], dict[str, Any]]
) -> type[torchmetrics.Metric]:
    """A subclass of `base_metric` whose `update(outputs)` first applies `transform(outputs)`."""

    def transform_method(self: Any, outputs: Outputs) -> dict[str, Any]:
        return transform(outputs)

    return type(base_metric.__name__, (MetricMixin, base_metric), {"transform": transform_method})
