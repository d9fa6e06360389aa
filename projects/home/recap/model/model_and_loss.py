"""The ranking model with its loss: `forward(batch) -> (loss, outputs)`, as the training loops expect.

Labels and weights arrive in the DATA's task order (all label columns the data was asked for). They
are matched to the MODEL's towers by task name before the loss. The original indexed them by the
tower's position, training e.g. the favorite head on the bookmark labels (spec bug B1).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from tml.common.tracing import is_fx_symbolic_tracing
from tml.core.loss_type import LossType
from tml.core.losses import build_multi_task_loss
from tml.projects.home.recap.embedding.config import StratifierConfig
from tml.projects.home.recap.model.config import ModelConfig
from tml.projects.home.recap.model.numeric_calibration import sampling_weights

# Batch fields the ranking model reads; anything else in the batch is not passed to it.
MODEL_INPUTS = (
    "continuous_features",
    "binary_features",
    "discrete_features",
    "sparse_features",
    "user_embedding",
    "user_eng_embedding",
    "author_embedding",
)


def build_recap_loss(model_config: ModelConfig) -> Callable[..., dict[str, torch.Tensor]]:
    """Per-task BCE with logits and each task's pos_weight, averaged over tasks (in model task order)."""
    return build_multi_task_loss(
        LossType.BCE_WITH_LOGITS,
        tasks=list(model_config.tasks),
        pos_weights=[task.pos_weight for task in model_config.tasks.values()],
    )


def task_column_indices(task_names: Sequence[str], label_names: Sequence[str]) -> list[int]:
    """Position of each model task among the data's label columns."""
    positions = {name: position for position, name in enumerate(label_names)}
    if len(positions) != len(label_names):
        raise ValueError(f"label names must be unique, got {list(label_names)}.")
    missing = [name for name in task_names if name not in positions]
    if missing:
        raise ValueError(
            f"model task(s) {missing} have no label column; the data provides {list(label_names)}."
        )
    return [positions[name] for name in task_names]


def _field(batch: Any, name: str) -> Any:
    """A batch field by attribute (dataclass batches; keeps torchrec's pipeline tracing able to follow
    `batch.sparse_features` to the embedding tables) or by key (dict batches)."""
    if isinstance(batch, Mapping):
        return batch.get(name)
    return getattr(batch, name, None)


class RecapModelAndLoss(nn.Module):
    """`forward(batch) -> (loss, outputs)`.

    outputs = the model's outputs ("logits", "probabilities", "calibrated_probabilities" [B, T] in
    model task order), "labels" and "weights" [B, T] in the same order, "task_names", the loss
    function's entries (e.g. "loss/<task>", "loss") and "stratifiers" {name: discrete column [B]}.

    The loss is weighted by `weights`, except that a model calibrating its outputs for down-sampling
(`calibrated_sampling_rates`) has those rates' inverse weights divided out of the loss weights
first: the calibration undoes the sampling, and undoing it twice would under-predict. The
"weights" output keeps the data's full weights, which the metrics use.

The data's label column names come from the batch's `label_names` field/attribute when it has one,
    else from the `label_names` given here; without either, labels must already have one column per
    model task in model order.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., Any],
        stratifiers: Optional[Sequence[StratifierConfig]] = None,
        label_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.stratifiers = list(stratifiers or [])
        self.label_names = list(label_names) if label_names is not None else None
        self.task_names: list[str] = list(model.task_names)
        self._indices_cache: dict[tuple[tuple[str, ...], torch.device], torch.Tensor] = {}

    def _in_task_order(
        self, values: torch.Tensor, label_names: Optional[Sequence[str]], what: str
    ) -> torch.Tensor:
        if values.dim() == 1:
            values = values.unsqueeze(1)
        if label_names is None:
            if values.shape[1] != len(self.task_names):
                raise ValueError(
                    f"{what} has {values.shape[1]} columns for {len(self.task_names)} model tasks; give "
                    f"label_names (the data's task order) to match columns to tasks by name."
                )
            return values
        if values.shape[1] != len(label_names):
            raise ValueError(f"{what} has {values.shape[1]} columns but {len(label_names)} label names.")
        # Cached per device too: moving the indices every step would be a copy (a sync on GPUs).
        key = (tuple(label_names), values.device)
        if key not in self._indices_cache:
            indices = torch.tensor(task_column_indices(self.task_names, label_names))
            self._indices_cache[key] = indices.to(values.device)
        return values.index_select(1, self._indices_cache[key])

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        outputs = dict(self.model(**{name: _field(batch, name) for name in MODEL_INPUTS}))
        if is_fx_symbolic_tracing():
            # torchrec's train pipeline traces the forward only to find how batch fields reach the
            # sharded embedding tables; the label bookkeeping below is plain Python on values.
            return outputs["logits"], outputs
        labels = _field(batch, "labels")
        if labels is None:
            raise ValueError(
                "the batch has no labels (inference data); call the ranking model itself instead."
            )
        label_names = _field(batch, "label_names") or self.label_names
        labels = self._in_task_order(labels, label_names, "labels").float()
        raw_weights = _field(batch, "weights")
        weights = (
            torch.ones_like(labels)
            if raw_weights is None
            else self._in_task_order(raw_weights, label_names, "weights").float()
        )
        losses = self.loss_fn(outputs["logits"], labels, self._loss_weights(labels, weights))
        if not isinstance(losses, Mapping):
            losses = {"loss": losses}
        outputs.update(losses)
        outputs["labels"] = labels
        outputs["weights"] = weights
        outputs["task_names"] = self.task_names
        discrete = _field(batch, "discrete_features")
        outputs["stratifiers"] = {
            stratifier.name: _stratifier_column(discrete, stratifier) for stratifier in self.stratifiers
        }
        return losses["loss"], outputs

    def _loss_weights(self, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        rates = getattr(self.model, "calibrated_sampling_rates", None)
        if rates is None:
            return weights
        return weights / sampling_weights(labels, rates.to(weights.device))


def _stratifier_column(discrete: Optional[torch.Tensor], stratifier: StratifierConfig) -> torch.Tensor:
    if discrete is None:
        raise ValueError(
            f"stratifier {stratifier.name!r} reads discrete_features column {stratifier.index}, but the "
            "batch has no discrete_features."
        )
    if stratifier.index >= discrete.shape[1]:
        raise ValueError(
            f"stratifier {stratifier.name!r}: index {stratifier.index} is out of range for "
            f"discrete_features of {discrete.shape[1]} columns."
        )
    return discrete[:, stratifier.index]
