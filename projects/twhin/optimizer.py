"""The TwHIN optimizer: each table's fused optimizer with its own LR schedule, plus the relation
vectors' dense optimizer, combined into one torchrec `CombinedOptimizer` (what the loop steps and
checkpoints), and an `LRShim` that drives every param group's lr (the original built the schedules
and never applied them)."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper, OptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from tml.core.optimizers import (
    LearningRate,
    LRShim,
    get_embedding_optimizer,
    get_learning_rate,
    get_optimizer_algorithm_config,
    get_optimizer_class,
)
from tml.ml_logging.torch_logging import logging
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.models import TRANSLATION_PARAM, table_of_parameter

FUSED_KEY = "fused_opt"
TRANSLATION_KEY = "operator_opt"  # the original's name for the relation vectors' optimizer


def _leaf_keyed_optimizers(optimizer: torch.optim.Optimizer) -> Iterator[KeyedOptimizer]:
    if isinstance(optimizer, CombinedOptimizer):
        for _, child in optimizer.optimizers:
            yield from _leaf_keyed_optimizers(child)
    elif isinstance(optimizer, KeyedOptimizer):
        yield optimizer
    elif isinstance(optimizer, OptimizerWrapper):
        yield from _leaf_keyed_optimizers(optimizer._optimizer)


def _group_schedules(optimizer: CombinedOptimizer, config: TwhinModelConfig) -> list[LearningRate]:
    """One schedule per param group, in `optimizer.param_groups` order: a table's group follows the
    table's schedule, the relation vectors' group the translation optimizer's."""
    table_schedules = {table.name: get_learning_rate(table.optimizer) for table in config.embeddings.tables}
    translation_schedule = get_learning_rate(config.translation_optimizer)
    schedule_of_group: dict[int, LearningRate] = {}
    for leaf in _leaf_keyed_optimizers(optimizer):
        names = list(leaf.params)
        tables = sorted({table for table in map(table_of_parameter, names) if table is not None})
        schedules = {table: table_schedules[table] for table in tables}
        if not tables:
            schedule = translation_schedule
        elif len({s.model_dump_json() for s in schedules.values()}) == 1:
            schedule = next(iter(schedules.values()))
        else:
            raise ValueError(
                f"tables {tables} share one fused kernel but have different LR schedules; attach their "
                "optimizers with tml.projects.twhin.models.models.apply_optimizers (one kernel per table)."
            )
        for group in leaf.param_groups:
            schedule_of_group[id(group)] = schedule
    try:
        return [schedule_of_group[id(group)] for group in optimizer.param_groups]
    except KeyError as error:
        raise RuntimeError("a param group of the combined optimizer belongs to no known optimizer") from error


def build_optimizer(model: nn.Module, config: TwhinModelConfig) -> tuple[CombinedOptimizer, LRShim]:
    """(optimizer, scheduler) for a model built by `TwhinModel` + `apply_optimizers` and sharded.

    Tables placed data-parallel (dense kernel) get no fused optimizer from torchrec; they get a dense
    one of the same algorithm instead. Step the scheduler after each optimizer step.
    """
    optimizers: list[tuple[str, KeyedOptimizer]] = []
    if isinstance(model, DistributedModelParallel):
        optimizers.append((FUSED_KEY, model.fused_optimizer))
    else:
        logging.warning(
            "build_optimizer got an unsharded model: its tables are updated in backward at their initial lr, "
            "and their LR schedules and optimizer state are not part of the returned optimizer."
        )
    dense = dict(in_backward_optimizer_filter(model.named_parameters()))
    translation = {name: param for name, param in dense.items() if name.split(".")[-1] == TRANSLATION_PARAM}
    if translation:
        algorithm = get_optimizer_algorithm_config(config.translation_optimizer)
        optimizer_class = get_optimizer_class(config.translation_optimizer)
        optimizers.append((TRANSLATION_KEY, KeyedOptimizerWrapper(
            translation, lambda params: optimizer_class(params, **algorithm.model_dump()))))
    tables = {table.name: table for table in config.embeddings.tables}
    for name, param in dense.items():
        if name in translation:
            continue
        table = table_of_parameter(name)
        if table not in tables:
            raise ValueError(f"parameter '{name}' belongs to no TwHIN table and is not the relation vectors.")
        optimizer_class, kwargs = get_embedding_optimizer(tables[table].optimizer)
        optimizers.append((f"table_{table}", KeyedOptimizerWrapper(
            {name: param}, lambda params, c=optimizer_class, k=kwargs: c(params, **k))))
    optimizer = CombinedOptimizer(optimizers)
    return optimizer, LRShim(optimizer, _group_schedules(optimizer, config))
