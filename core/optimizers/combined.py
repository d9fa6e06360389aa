"""The one optimizer a training loop steps and checkpoints, and the `LRShim` that schedules it.

A model's trainable parameters fall into three kinds, decided here once for both projects:
- embedding tables with a fused optimizer (sharded by DMP, optimizer attached before sharding by
  `apply_embedding_optimizers`): DMP's `fused_optimizer`, each table following its own schedule;
- embedding tables without one (placed data-parallel, which uses the dense kernel, or a model that
  was never sharded): a plain optimizer of the table's own algorithm, settings and schedule, one
  per table, under the key `table_<name>`;
- every other parameter: in exactly one of the caller's named dense groups.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional

import torch
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper

from tml.core.optimizers.config import (
    EmbeddingOptimizerConfig,
    LearningRate,
    OptimizerConfig,
    get_learning_rate,
    get_optimizer_algorithm_config,
)
from tml.core.optimizers.embedding import get_embedding_optimizer, table_of_parameter
from tml.core.optimizers.optimizer import LRShim, get_optimizer_class
from tml.core.optimizers.tree import leaf_optimizers
from tml.ml_logging.torch_logging import logging

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]
NamedParams = Mapping[str, nn.Parameter]


@dataclasses.dataclass(frozen=True)
class DenseGroup:
    """Dense parameters stepped by one optimizer, following one LR schedule."""

    params: NamedParams
    optimizer_factory: OptimizerFactory
    schedule: LearningRate

    @classmethod
    def from_config(cls, params: NamedParams, config: OptimizerConfig) -> "DenseGroup":
        """The configured algorithm and schedule (a constant `lr` where no schedule is set)."""
        optimizer_class = get_optimizer_class(config)
        kwargs = get_optimizer_algorithm_config(config).model_dump()
        return cls(params, lambda tensors: optimizer_class(tensors, **kwargs), get_learning_rate(config))


def table_key(table: str) -> str:
    """Combined-optimizer key of a table that has no fused optimizer."""
    return f"table_{table}"


def _has_in_backward_optimizer(param: torch.Tensor) -> bool:
    return hasattr(param, "_in_backward_optimizers")


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def dense_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters that are no embedding table's weight: what the dense groups split."""
    return {
        name: param
        for name, param in _trainable(model).items()
        if not _has_in_backward_optimizer(param) and table_of_parameter(name) is None
    }


def _fused_optimizer(model: nn.Module) -> Optional[KeyedOptimizer]:
    if not isinstance(model, DistributedModelParallel):
        return None
    fused = model.fused_optimizer
    return fused if fused.params else None


def _check_dense_groups(model: nn.Module, dense_groups: Mapping[str, DenseGroup]) -> None:
    dense = dense_parameters(model)
    owners: dict[str, list[str]] = {}
    for key, group in dense_groups.items():
        if not group.params:
            raise ValueError(f"optimizer group '{key}' has no parameters.")
        for name in group.params:
            owners.setdefault(name, []).append(key)
    not_dense = sorted(set(owners) - set(dense))
    unowned = sorted(set(dense) - set(owners))
    shared = sorted(name for name, keys in owners.items() if len(keys) > 1)
    if not_dense or unowned or shared:
        raise ValueError(
            "dense optimizer groups must hold every dense parameter exactly once: "
            f"in no group {unowned[:5]}, in several groups {shared[:5]}, "
            f"not dense parameters of the model (tables, frozen or unknown) {not_dense[:5]}."
        )


def _fused_schedules(
    fused: KeyedOptimizer, table_schedules: Mapping[str, LearningRate]
) -> dict[int, LearningRate]:
    """Schedule of each fused param group, by group id: its tables' schedule."""
    schedule_of_group: dict[int, LearningRate] = {}
    for _, leaf in leaf_optimizers(fused):
        names = list(leaf.params) if isinstance(leaf, KeyedOptimizer) else []
        tables = sorted({table for table in map(table_of_parameter, names) if table is not None})
        unknown = [table for table in tables if table not in table_schedules]
        if unknown or not tables:
            raise ValueError(f"fused optimizer parameters {names[:3]} belong to no configured table.")
        schedules = {table_schedules[table].model_dump_json() for table in tables}
        if len(schedules) > 1:
            raise ValueError(
                f"tables {tables} share one fused kernel but have different LR schedules; attach their "
                "optimizers with tml.core.optimizers.apply_embedding_optimizers and pass the fused params it returns "
                "to tml.common.sharding.maybe_shard_model (one kernel per table then)."
            )
        for group in leaf.param_groups:
            schedule_of_group[id(group)] = table_schedules[tables[0]]
    return schedule_of_group


def build_combined_optimizer(
    model: nn.Module,
    dense_groups: Mapping[str, DenseGroup],
    table_optimizers: Mapping[str, EmbeddingOptimizerConfig],
    fused_key: str = "fused_opt",
    fused_first: bool = False,
) -> tuple[CombinedOptimizer, LRShim]:
    """(CombinedOptimizer over every trainable parameter, LRShim driving each param group's lr).

    `dense_groups` (key -> group, in order) must hold each of `dense_parameters(model)` once.
    `table_optimizers` gives every embedding table's optimizer and schedule. The fused optimizer is
    combined under `fused_key`, after the dense groups or, with `fused_first`, before them (the
    order is part of a checkpoint's optimizer state). Step the LRShim after each optimizer step.
    """
    trainable = _trainable(model)
    fused = _fused_optimizer(model)
    in_backward = sorted(name for name, param in trainable.items() if _has_in_backward_optimizer(param))
    # Under DMP a rank may hold no shard of any table (each placed whole on other ranks): it then has
    # no fused optimizer, and its tables are updated where they live.
    if in_backward and not isinstance(model, DistributedModelParallel):
        raise ValueError(
            f"parameters {in_backward[:3]} have in-backward optimizers but the model is not sharded: their "
            "updates would bypass the returned optimizer and its schedules. Shard the model "
            "(tml.common.sharding.maybe_shard_model) after attaching them, or do not attach them."
        )
    _check_dense_groups(model, dense_groups)
    table_schedules = {table: get_learning_rate(config) for table, config in table_optimizers.items()}

    unfused_tables: dict[str, dict[str, nn.Parameter]] = {}
    for name, param in trainable.items():
        table = table_of_parameter(name)
        if table is None or _has_in_backward_optimizer(param):
            continue
        if table not in table_optimizers:
            raise ValueError(f"embedding table '{table}' (parameter '{name}') has no optimizer configured.")
        unfused_tables.setdefault(table, {})[name] = param

    optimizers: list[tuple[str, KeyedOptimizer]] = []
    schedule_of_group: dict[int, LearningRate] = {}

    def add(key: str, optimizer: KeyedOptimizer, schedule: Optional[LearningRate]) -> None:
        optimizers.append((key, optimizer))
        if schedule is not None:
            schedule_of_group.update((id(group), schedule) for group in optimizer.param_groups)

    def add_fused() -> None:
        if fused is not None:
            add(fused_key, fused, None)
            schedule_of_group.update(_fused_schedules(fused, table_schedules))

    if fused_first:
        add_fused()
    for key, group in dense_groups.items():
        add(key, KeyedOptimizerWrapper(dict(group.params), group.optimizer_factory), group.schedule)
    if not fused_first:
        add_fused()
    for table in table_optimizers:
        if table in unfused_tables:
            optimizer_class, kwargs = get_embedding_optimizer(table_optimizers[table])
            factory = lambda tensors, c=optimizer_class, k=kwargs: c(tensors, **k)  # noqa: E731
            add(table_key(table), KeyedOptimizerWrapper(unfused_tables[table], factory), table_schedules[table])

    for key, optimizer in optimizers:
        count = sum(math.prod(param.size()) for param in optimizer.params.values())  # ShardedTensors: global
        logging.info("Optimizer group %r: %d parameters", key, count)
    optimizer = CombinedOptimizer(optimizers)
    return optimizer, LRShim(optimizer, [schedule_of_group[id(group)] for group in optimizer.param_groups])
