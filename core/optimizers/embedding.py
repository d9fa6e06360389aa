"""Attaching each embedding table's optimizer, so that torchrec fuses it into the table's kernel.

Tables are found as the tables of every torchrec `EmbeddingBagCollection` inside a model, by name;
their parameters are named `...embedding_bags.<table>.weight` in the model and in the optimizer's
state, which is how the combined optimizer later finds each table's schedule.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from tml.core.optimizers.config import (
    EmbeddingOptimizerConfig,
    chosen_algorithm,
    get_learning_rate,
    get_optimizer_algorithm_config,
)

# torchrec maps these classes to FBGEMM's fused kernels (EXACT_SGD, EXACT_ADAGRAD, EXACT_ROWWISE_ADAGRAD).
_FUSED_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": RowWiseAdagrad,
}

# torchrec fuses tables with equal optimizer settings into one kernel, which then has ONE learning
# rate. Tables that share settings and schedule keep sharing a kernel (one per step is cheaper than
# two); where settings are equal but schedules differ, the embedding sharder gets torchrec's public
# fused param `use_one_tbe_per_table`, so every table gets its own kernel (its own param group) and
# each follows its schedule.
ONE_KERNEL_PER_TABLE: dict[str, Any] = {"use_one_tbe_per_table": True}

_TABLE_WEIGHT = re.compile(r"(?:^|\.)embedding_bags\.([^.]+)\.weight$")


def table_of_parameter(name: str) -> Optional[str]:
    """The table whose weight a (state-dict or parameter) name denotes, else None."""
    match = _TABLE_WEIGHT.search(name)
    return match.group(1) if match else None


def get_embedding_optimizer(
    embedding_optimizer_config: EmbeddingOptimizerConfig,
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """Class and kwargs of a table's optimizer: what torchrec fuses into the kernel once the table is
    sharded, and what the same table gets as a plain optimizer where it is not (data-parallel)."""
    algorithm = get_optimizer_algorithm_config(embedding_optimizer_config)
    return _FUSED_CLASSES[chosen_algorithm(embedding_optimizer_config)], algorithm.model_dump()


def _tables(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    tables: dict[str, list[nn.Parameter]] = {}
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            for config in module.embedding_bag_configs():
                tables[config.name] = list(module.embedding_bags[config.name].parameters())
    return tables


def sharder_fused_params(table_optimizers: Mapping[str, EmbeddingOptimizerConfig]) -> dict[str, Any]:
    """Fused params for the embedding sharder (`maybe_shard_model(fused_params=...)`) so that every
    table's kernel follows its table's schedule: `ONE_KERNEL_PER_TABLE` where tables with equal
    optimizer settings have different schedules, else none."""
    schedules: dict[str, set[str]] = {}
    for config in table_optimizers.values():
        optimizer_class, kwargs = get_embedding_optimizer(config)
        settings = f"{optimizer_class.__name__}{sorted(kwargs.items())}"  # what torchrec groups kernels by
        schedules.setdefault(settings, set()).add(get_learning_rate(config).model_dump_json())
    return dict(ONE_KERNEL_PER_TABLE) if any(len(found) > 1 for found in schedules.values()) else {}


def apply_embedding_optimizers(
    model: nn.Module, table_optimizers: Mapping[str, EmbeddingOptimizerConfig]
) -> dict[str, Any]:
    """Give every embedding table of `model` its optimizer, applied in backward; returns the fused
    params to shard it with (`sharder_fused_params`).

    Call before sharding with DistributedModelParallel, passing the returned fused params to
    `tml.common.sharding.maybe_shard_model`: DMP then fuses each optimizer into its table's kernel,
    and `build_combined_optimizer` puts that fused optimizer, with each table's schedule, into the
    optimizer the loop steps (it refuses tables whose schedules differ but share a kernel). Every
    table needs an entry and every entry a table.
    """
    tables = _tables(model)
    unknown = sorted(set(table_optimizers) - set(tables))
    missing = sorted(set(tables) - set(table_optimizers))
    if unknown or missing:
        raise ValueError(
            f"embedding optimizers and tables differ: tables without an optimizer {missing}, "
            f"optimizers for tables the model lacks {unknown}; the model's tables are {sorted(tables)}."
        )
    for name, params in tables.items():
        optimizer_class, kwargs = get_embedding_optimizer(table_optimizers[name])
        apply_optimizer_in_backward(optimizer_class, params, kwargs)
    return sharder_fused_params(table_optimizers)
