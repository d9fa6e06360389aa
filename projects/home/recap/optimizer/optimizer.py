"""Heavy Ranker optimizer: Adam with a parameter group and LR schedule per tower plus the backbone
(or one group for everything); the large tables follow `model.large_embeddings.optimizer`.

Group names (the keys of the LR schedules):
- multi-task: each model task name (its tower and affine map), "backbone" (every other dense
  parameter: backbone, featurization, TwHIN LayerNorms, small and position embeddings);
- single-task: "single_task";
- "embeddings": the sharded tables' fused optimizer; a table without one (data-parallel) gets a
  plain SGD under "table_<name>" (`tml.core.optimizers.build_combined_optimizer` decides).
"""

from __future__ import annotations

import functools
from typing import Iterable, Mapping, Optional

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer

from tml.common.modules.embedding import LargeEmbeddingsConfig
from tml.core.optimizers import DenseGroup, LRShim, build_combined_optimizer, dense_parameters
from tml.core.optimizers.adam_kernel import adam_kernel_options
from tml.core.optimizers.config import LearningRate
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel, sanitize
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig

BACKBONE_GROUP = "backbone"
SINGLE_TASK_GROUP = "single_task"
EMBEDDING_GROUP = "embeddings"

NamedParams = dict[str, nn.Parameter]


def _model_task_names(model: nn.Module) -> Optional[list[str]]:
    for module in model.modules():
        if isinstance(module, MultiTaskRankingModel):
            return list(module.task_names)
    return None


def _group_by_tower(named: NamedParams, task_names: Iterable[str]) -> dict[str, NamedParams]:
    """Parameters of each task's tower (a name segment equal to the sanitized task), the rest "backbone"."""
    sanitized = {sanitize(task): task for task in task_names}
    groups: dict[str, NamedParams] = {task: {} for task in sanitized.values()}
    groups[BACKBONE_GROUP] = {}
    for name, parameter in named.items():
        owners = [sanitized[segment] for segment in name.split(".") if segment in sanitized]
        if len(set(owners)) > 1:
            raise ValueError(
                f"parameter '{name}' matches the towers of several tasks: {sorted(set(owners))}."
            )
        groups[owners[0] if owners else BACKBONE_GROUP][name] = parameter
    return groups


def _check_schedules(
    groups: Mapping[str, NamedParams], lr_dict: Mapping[str, Optional[LearningRate]]
) -> dict[str, LearningRate]:
    group_names = sorted(groups)
    scheduled = sorted(name for name, lr in lr_dict.items() if lr is not None)
    if group_names != scheduled:
        raise ValueError(
            f"LR schedules and parameter groups differ: groups {group_names}, schedules {scheduled} "
            f"(missing: {sorted(set(group_names) - set(scheduled))}, "
            f"without parameters: {sorted(set(scheduled) - set(group_names))})."
        )
    return {name: lr_dict[name] for name in groups}


def _dense_groups(model: nn.Module, optimizer_config: RecapOptimizerConfig) -> dict[str, tuple[NamedParams, LearningRate]]:
    dense = dense_parameters(model)
    if optimizer_config.single_task_learning_rate is not None:
        return {SINGLE_TASK_GROUP: (dense, optimizer_config.single_task_learning_rate)}
    rates = optimizer_config.multi_task_learning_rates
    task_names = _model_task_names(model) or list(rates.tower_learning_rates)
    groups = _group_by_tower(dense, task_names)
    if not groups[BACKBONE_GROUP]:
        del groups[BACKBONE_GROUP]
        if rates.backbone_learning_rate is not None:
            logging.warning("backbone_learning_rate is set but the model has no backbone parameters.")
    lr_dict = dict(rates.tower_learning_rates)
    if BACKBONE_GROUP in groups:
        lr_dict[BACKBONE_GROUP] = rates.backbone_learning_rate
    schedules = _check_schedules(groups, lr_dict)
    return {name: (params, schedules[name]) for name, params in groups.items()}


def build_optimizer(
    model: nn.Module,
    optimizer_config: RecapOptimizerConfig,
    large_embeddings: Optional[LargeEmbeddingsConfig] = None,
    fused_adam: bool = True,
) -> tuple[CombinedOptimizer, LRShim]:
    """(CombinedOptimizer over all groups, LRShim scheduling each group); step both every train step.

    `fused_adam` updates each dense group in one fused kernel pass where torch has one for the
    parameters' device (see `adam_kernel_options`); False keeps torch's default (on CPU a loop
    over the parameters).

    `large_embeddings` (the model config's section) gives the tables' optimizers; attach them with
    `tml.core.optimizers.apply_embedding_optimizers` before sharding.
    """
    adam = optimizer_config.adam
    kernel = adam_kernel_options(dense_parameters(model).values()) if fused_adam else {}
    adam_factory = functools.partial(
        torch.optim.Adam, lr=0.0, betas=(adam.beta_1, adam.beta_2), eps=adam.epsilon, **kernel
    )
    groups = {
        name: DenseGroup(params, adam_factory, schedule)
        for name, (params, schedule) in _dense_groups(model, optimizer_config).items()
    }
    table_optimizers = large_embeddings.table_optimizers() if large_embeddings is not None else {}
    return build_combined_optimizer(model, groups, table_optimizers, fused_key=EMBEDDING_GROUP)
