"""Loss builders, including the multi-task loss of the Heavy Ranker.

Multi-task labels are matched to model tasks BY NAME. The original indexed the label tensor by the
model task's position although the data carried 13 label columns in a different order than the
model's 10 towers, so most towers were trained on another task's labels (spec bug B1).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F

from tml.core.loss_type import LossType
from tml.ml_logging.torch_logging import logging

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TaskTensors = Union[torch.Tensor, Mapping[str, torch.Tensor]]
MultiTaskLossFn = Callable[..., dict[str, torch.Tensor]]

_LOSS_TYPE_TO_FUNCTION: dict[LossType, Callable[..., torch.Tensor]] = {
    LossType.BCE_WITH_LOGITS: F.binary_cross_entropy_with_logits,
}

TASK_LOSS_REDUCTIONS = ("mean", "sum")
GLOBAL_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": torch.mean,
    "sum": torch.sum,
    "min": torch.min,
    "max": torch.max,
    # torch.median returns the lower of the two middle values for an even number of tasks.
    "median": torch.median,
}


def _as_loss_type(loss_type: Union[LossType, str]) -> LossType:
    try:
        return LossType(loss_type)
    except ValueError:
        valid = ", ".join(t.value for t in LossType)
        raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of: {valid}.") from None


def _loss_function(loss_type: Union[LossType, str]) -> Callable[..., torch.Tensor]:
    resolved = _as_loss_type(loss_type)
    if resolved not in _LOSS_TYPE_TO_FUNCTION:
        supported = ", ".join(t.value for t in _LOSS_TYPE_TO_FUNCTION)
        raise ValueError(f"loss_type {resolved.value!r} is not supported; supported: {supported}.")
    return _LOSS_TYPE_TO_FUNCTION[resolved]


def build_loss(loss_type: Union[LossType, str], reduction: str = "mean") -> LossFn:
    """Single-task loss `fn(logits, labels)`; labels are cast to the logits' dtype (int labels are common)."""
    loss_function = _loss_function(loss_type)

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return loss_function(logits, labels.type_as(logits), reduction=reduction)

    return loss_fn


def get_global_loss_detached(local_loss: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss over all ranks, for logging only (detached, so it never joins the autograd graph).

    `mean` divides by the world size before summing, so equal-sized local batches give the global mean.
    Without an initialised process group the local value is returned.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' for a global loss, got {reduction!r}.")
    global_loss = local_loss.detach().clone()
    if not (dist.is_available() and dist.is_initialized()):
        return global_loss
    if reduction == "mean":
        global_loss = global_loss / dist.get_world_size()
    dist.all_reduce(global_loss, op=dist.ReduceOp.SUM)
    return global_loss


def _index_of_names(label_names: Sequence[str], what: str) -> dict[str, int]:
    positions: dict[str, int] = {}
    for position, name in enumerate(label_names):
        if name in positions:
            raise ValueError(f"{what} contains {name!r} twice; label names must be unique.")
        positions[name] = position
    return positions


def _select_task_columns(
    values: TaskTensors,
    tasks: Sequence[str],
    label_names: Optional[Sequence[str]],
    what: str,
) -> list[torch.Tensor]:
    """One [B] tensor per model task, looked up by task name (never by position unless unambiguous)."""
    if isinstance(values, Mapping):
        missing = [task for task in tasks if task not in values]
        if missing:
            raise ValueError(f"Model task {missing[0]!r} not found in {what}; available: {sorted(values)}.")
        return [values[task] for task in tasks]

    if values.dim() != 2:
        raise ValueError(f"{what} must be a [batch, tasks] tensor or a dict of [batch] tensors, "
                         f"got shape {tuple(values.shape)}.")
    num_columns = values.shape[1]
    if label_names is None:
        if num_columns != len(tasks):
            raise ValueError(
                f"{what} has {num_columns} columns but the model has {len(tasks)} tasks; pass "
                f"label_names (the data's task order) so columns can be matched by name."
            )
        # Same width and no names: the caller asserts the columns are already in model task order.
        return [values[:, position] for position in range(num_columns)]

    if len(label_names) != num_columns:
        raise ValueError(
            f"label_names has {len(label_names)} entries but {what} has {num_columns} columns."
        )
    positions = _index_of_names(label_names, "label_names")
    missing = [task for task in tasks if task not in positions]
    if missing:
        raise ValueError(f"Model task {missing[0]!r} not found in {what}; available: {list(label_names)}.")
    return [values[:, positions[task]] for task in tasks]


def build_multi_task_loss(
    loss_type: Union[LossType, str],
    tasks: Sequence[str],
    task_loss_reduction: str = "mean",
    global_reduction: str = "mean",
    pos_weights: Optional[Sequence[float]] = None,
    label_names: Optional[Sequence[str]] = None,
) -> MultiTaskLossFn:
    """Per-task BCE-with-logits, reduced over tasks.

    Returns `fn(logits, labels, weights=None, label_names=None) -> {"loss/<task>": ..., "loss": ...}`.
    `logits` is [B, len(tasks)] in model task order. `labels` and `weights` are either dicts
    `{task_name: [B]}` or [B, T_data] tensors whose column names are `label_names` (given here or per
    call; the call's value wins). Without names a tensor is accepted only when it has exactly
    len(tasks) columns, which are then taken to be in model task order.

    Each task loss is `binary_cross_entropy_with_logits(logit, label, reduction, pos_weight, weight=w)`;
    note that "mean" with weights is the batch mean of w*l, not a mean normalised by sum(w).
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("build_multi_task_loss needs at least one task.")
    _index_of_names(tasks, "tasks")
    if _as_loss_type(loss_type) is not LossType.BCE_WITH_LOGITS:
        raise ValueError(
            f"Multi-task loss supports only loss_type 'bce_with_logits', got {LossType(loss_type).value!r}."
        )
    if task_loss_reduction not in TASK_LOSS_REDUCTIONS:
        raise ValueError(
            f"task_loss_reduction must be one of {TASK_LOSS_REDUCTIONS}, got {task_loss_reduction!r}."
        )
    if global_reduction not in GLOBAL_REDUCTIONS:
        raise ValueError(
            f"global_reduction must be one of {tuple(GLOBAL_REDUCTIONS)}, got {global_reduction!r}."
        )
    if global_reduction != "mean":
        logging.warning("Multi-task loss uses global_reduction=%r instead of 'mean'.", global_reduction)
    if pos_weights is None:
        pos_weights = [1.0] * len(tasks)
    if len(pos_weights) != len(tasks):
        raise ValueError(f"pos_weights has {len(pos_weights)} entries for {len(tasks)} tasks.")
    pos_weights = [float(weight) for weight in pos_weights]
    builder_label_names = list(label_names) if label_names is not None else None
    reduce_tasks = GLOBAL_REDUCTIONS[global_reduction]
    # Made once per dtype and device: a new tensor per task and step would be a host-to-device copy
    # (a synchronisation on GPUs) every time.
    pos_weight_tensors: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def pos_weight_tensor(like: torch.Tensor) -> torch.Tensor:
        key = (like.dtype, like.device)
        if key not in pos_weight_tensors:
            pos_weight_tensors[key] = torch.tensor(pos_weights, dtype=like.dtype, device=like.device)
        return pos_weight_tensors[key]

    def loss_fn(
        logits: torch.Tensor,
        labels: TaskTensors,
        weights: Optional[TaskTensors] = None,
        label_names: Optional[Sequence[str]] = None,
    ) -> dict[str, torch.Tensor]:
        if logits.dim() != 2 or logits.shape[1] != len(tasks):
            raise ValueError(
                f"logits must have shape [batch, {len(tasks)}] (one column per model task), "
                f"got {tuple(logits.shape)}."
            )
        names = label_names if label_names is not None else builder_label_names
        task_labels = _select_task_columns(labels, tasks, names, "labels")
        task_weights: list[Optional[torch.Tensor]] = (
            [None] * len(tasks) if weights is None
            else _select_task_columns(weights, tasks, names, "weights")
        )
        losses: dict[str, torch.Tensor] = {}
        task_pos_weights = pos_weight_tensor(logits)
        for position, task in enumerate(tasks):
            logit = logits[:, position]
            weight = task_weights[position]
            losses[f"loss/{task}"] = F.binary_cross_entropy_with_logits(
                logit,
                task_labels[position].type_as(logit),
                reduction=task_loss_reduction,
                pos_weight=task_pos_weights[position],
                weight=None if weight is None else weight.type_as(logit),
            )
        stacked = torch.stack([losses[f"loss/{task}"] for task in tasks])
        losses["loss"] = reduce_tasks(stacked)
        return losses

    return loss_fn
