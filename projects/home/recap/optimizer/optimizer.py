"""Heavy Ranker optimizer: Adam with a parameter group and LR schedule per tower plus the backbone
(or one group for everything), and SGD for the large embedding tables.

Group names (the keys of the LR schedules):
- multi-task: each model task name (its tower and affine map), "backbone" (every other dense
  parameter: backbone, featurization, TwHIN LayerNorms, small and position embeddings);
- single-task: "single_task";
- "embeddings": the large tables. Sharded (DMP) tables with an in-backward optimizer use the model's
  fused optimizer; unsharded ones get a plain SGD group.
"""

from __future__ import annotations

import functools
from typing import Iterable, Optional

import torch
from torch import nn
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper

from tml.core.optimizers import LRShim
from tml.core.optimizers.adam_kernel import adam_kernel_options
from tml.core.optimizers.config import LearningRate
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.embedding.config import EmbeddingOptimizerConfig
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel, sanitize
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig

BACKBONE_GROUP = "backbone"
SINGLE_TASK_GROUP = "single_task"
EMBEDDING_GROUP = "embeddings"
LARGE_EMBEDDINGS_MODULE = "large_embeddings"

NamedParams = dict[str, nn.Parameter]


def _is_large_embedding(name: str) -> bool:
    return LARGE_EMBEDDINGS_MODULE in name.split(".")


def _has_in_backward_optimizer(parameter: nn.Parameter) -> bool:
    return hasattr(parameter, "_in_backward_optimizers")


def apply_embedding_optimizer(model: nn.Module, emb_optimizer_config: EmbeddingOptimizerConfig) -> None:
    """Give the large tables an in-backward SGD, which DMP turns into a fused kernel optimizer.

    Call before sharding the model with DistributedModelParallel (and not for an unsharded model,
    whose tables `build_optimizer` puts in a plain SGD group instead).
    """
    params = [p for name, p in model.named_parameters() if _is_large_embedding(name)]
    if not params:
        raise ValueError("the model has no large embedding tables to give an embedding optimizer.")
    apply_optimizer_in_backward(torch.optim.SGD, params, {"lr": emb_optimizer_config.init_learning_rate})


def _model_task_names(model: nn.Module) -> Optional[list[str]]:
    for module in model.modules():
        if isinstance(module, MultiTaskRankingModel):
            return list(module.task_names)
    return None


def _fused_optimizer(model: nn.Module) -> Optional[KeyedOptimizer]:
    fused = getattr(model, "fused_optimizer", None)
    if fused is None or not fused.params:
        return None
    return fused


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
    groups: dict[str, NamedParams], lr_dict: dict[str, Optional[LearningRate]]
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


def build_optimizer(
    model: nn.Module,
    optimizer_config: RecapOptimizerConfig,
    emb_optimizer_config: Optional[EmbeddingOptimizerConfig] = None,
    fused_adam: bool = True,
) -> tuple[CombinedOptimizer, LRShim]:
    """(CombinedOptimizer over all groups, LRShim scheduling each group); step both every train step.

    `fused_adam` updates each dense group in one fused kernel pass where torch has one for the
    parameters' device (see `adam_kernel_options`); False keeps torch's default (on CPU a loop
    over the parameters).
    """
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    in_backward = {name for name, p in trainable.items() if _has_in_backward_optimizer(p)}
    fused = _fused_optimizer(model)
    if in_backward and fused is None:
        raise ValueError(
            f"parameters {sorted(in_backward)[:3]}... have in-backward optimizers but the model has no "
            f"fused optimizer: apply_embedding_optimizer is for models sharded with DistributedModelParallel."
        )
    dense = {name: p for name, p in trainable.items() if name not in in_backward}
    embedding_params = {name: p for name, p in dense.items() if _is_large_embedding(name)}
    dense = {name: p for name, p in dense.items() if name not in embedding_params}

    adam = optimizer_config.adam
    kernel = adam_kernel_options(dense.values()) if fused_adam else {}
    adam_factory = functools.partial(
        torch.optim.Adam, lr=0.0, betas=(adam.beta_1, adam.beta_2), eps=adam.epsilon, **kernel
    )
    if optimizer_config.single_task_learning_rate is not None:
        groups = {SINGLE_TASK_GROUP: dense}
        schedules = {SINGLE_TASK_GROUP: optimizer_config.single_task_learning_rate}
    else:
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

    optimizers: list[tuple[str, KeyedOptimizer]] = [
        (name, KeyedOptimizerWrapper(params, adam_factory)) for name, params in groups.items()
    ]
    if embedding_params or fused is not None:
        if emb_optimizer_config is None:
            raise ValueError(
                "the model has large embeddings: pass emb_optimizer_config "
                "(model.large_embeddings.optimizer)."
            )
        emb_lr = emb_optimizer_config.learning_rate or LearningRate(
            constant=emb_optimizer_config.init_learning_rate
        )
        schedules[EMBEDDING_GROUP] = emb_lr
        if fused is not None:
            optimizers.append((EMBEDDING_GROUP, fused))
        if embedding_params:
            # Tables left unsharded or data-parallel (dense kernel, no fused optimizer).
            sgd = functools.partial(torch.optim.SGD, lr=emb_optimizer_config.init_learning_rate)
            optimizers.append((EMBEDDING_GROUP, KeyedOptimizerWrapper(embedding_params, sgd)))

    for name, params in groups.items():
        logging.info("Optimizer group %r: %d parameters", name, sum(p.numel() for p in params.values()))
    optimizer = CombinedOptimizer(optimizers)
    return optimizer, LRShim(optimizer, schedules)
