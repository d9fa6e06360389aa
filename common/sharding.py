"""Sharding a model's embedding tables with torchrec, on CPU (gloo) as on GPUs (NCCL).

`maybe_shard_model` wraps a model in `DistributedModelParallel` once a process group exists. Tables
are placed by torchrec's planner, optionally constrained per table by `TableShardingConfig`.
Embedding optimizers must be attached BEFORE sharding (`tml.core.optimizers.apply_embedding_optimizers`),
so that torchrec fuses them into the embedding kernels; `tml.core.optimizers.build_combined_optimizer`
then builds the one optimizer that the training loop steps and checkpoints.
"""
from __future__ import annotations

import enum
import os
from typing import Any, Mapping, Optional

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import (
    DataParallelWrapper,
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ModuleSharder, ShardingEnv
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from tml.common.quiet_warnings import quiet_torchrec_warnings  # re-exported: callers import it from here
from tml.core.config import BaseConfig
from tml.ml_logging.torch_logging import logging

# Share of each device's memory the planner keeps free for activations and dense parameters.
STORAGE_RESERVATION_PERCENTAGE = 0.15


class ShardingType(str, enum.Enum):
    """How one embedding table is split across ranks (torchrec's names)."""

    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"
    TABLE_COLUMN_WISE = "table_column_wise"
    DATA_PARALLEL = "data_parallel"


class ComputeKernel(str, enum.Enum):
    """Embedding kernels usable for training. `fused` applies the embedding optimizer inside the
    kernel and is the one to use for large tables; `dense` is what data_parallel tables get."""

    FUSED = EmbeddingComputeKernel.FUSED.value
    DENSE = EmbeddingComputeKernel.DENSE.value
    FUSED_UVM = EmbeddingComputeKernel.FUSED_UVM.value
    FUSED_UVM_CACHING = EmbeddingComputeKernel.FUSED_UVM_CACHING.value


class TableShardingConfig(BaseConfig):
    """A constraint on how the planner may place one table (keyed by table name where used)."""

    sharding_type: ShardingType = Field(description="The only sharding type the planner may use.")
    compute_kernel: Optional[ComputeKernel] = Field(
        None, description="The only compute kernel the planner may use; None lets it choose."
    )

    def to_parameter_constraints(self) -> ParameterConstraints:
        kernels = None if self.compute_kernel is None else [self.compute_kernel.value]
        return ParameterConstraints(sharding_types=[self.sharding_type.value], compute_kernels=kernels)


class CpuRowWiseEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """An EmbeddingBagCollection sharder that also offers row-wise types on CPU.

    torchrec lists row_wise, table_row_wise and grid_shard for CUDA only, although FBGEMM's CPU
    kernels train them correctly and DCP checkpoints reshard them exactly (measured). Offering them
    on CPU lets single-machine tests use the same plans as GPU jobs.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        if compute_device_type == "cpu":
            return super().sharding_types("cuda")
        return super().sharding_types(compute_device_type)


def get_sharders(
    device: torch.device, fused_params: Optional[Mapping[str, Any]] = None
) -> list[ModuleSharder[nn.Module]]:
    """torchrec's default sharders, with the EmbeddingBagCollection one allowing row-wise on CPU and
    taking `fused_params` (torchrec's kernel options for every table, e.g. `use_one_tbe_per_table`;
    see `tml.core.optimizers.sharder_fused_params`)."""
    sharders: list[ModuleSharder[nn.Module]] = []
    for sharder in get_default_sharders():
        if type(sharder) is EmbeddingBagCollectionSharder:
            sharder = CpuRowWiseEmbeddingBagCollectionSharder(fused_params=dict(fused_params) if fused_params else None)
        sharders.append(sharder)
    return sharders


def embedding_table_names(model: nn.Module) -> list[str]:
    """Names of the tables of every EmbeddingBagCollection / EmbeddingCollection in `model`."""
    names: list[str] = []
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            names.extend(table.name for table in module.embedding_bag_configs())
        elif isinstance(module, EmbeddingCollection):
            names.extend(table.name for table in module.embedding_configs())
    return names


def _tables_without_embedding_optimizer(model: nn.Module) -> list[str]:
    tables = []
    for module in model.modules():
        if isinstance(module, (EmbeddingBagCollection, EmbeddingCollection)):
            for name, param in module.named_parameters():
                if not hasattr(param, "_in_backward_optimizers"):
                    tables.append(name)
    return tables


def _local_world_size(world_size: int) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def build_sharding_constraints(
    model: nn.Module, sharding_constraints: Optional[Mapping[str, TableShardingConfig]]
) -> Optional[dict[str, ParameterConstraints]]:
    """torchrec constraints for the named tables; an unknown table name is an error."""
    if not sharding_constraints:
        return None
    known = embedding_table_names(model)
    unknown = sorted(set(sharding_constraints) - set(known))
    if unknown:
        raise ValueError(
            f"sharding constraints name tables {unknown} that the model does not have; "
            f"its embedding tables are {sorted(known)}."
        )
    return {name: config.to_parameter_constraints() for name, config in sharding_constraints.items()}


def maybe_shard_model(
    model: nn.Module,
    device: torch.device,
    sharding_constraints: Optional[Mapping[str, TableShardingConfig]] = None,
    process_group: Optional[dist.ProcessGroup] = None,
    sharders: Optional[list[ModuleSharder[nn.Module]]] = None,
    fused_params: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """Wrap `model` in DistributedModelParallel when a process group is initialised.

    Without one the model is returned unchanged (evaluation, export). The plan is computed on rank 0
    and broadcast, so all ranks shard identically. `model` may live on the meta device: DMP
    materialises each table only where it is placed. `fused_params` go to the embedding sharder:
    pass what `tml.core.optimizers.apply_embedding_optimizers` returned (ignored with `sharders`).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return model
    group = process_group or dist.group.WORLD
    world_size = dist.get_world_size(group)
    sharders = sharders if sharders is not None else get_sharders(device, fused_params)
    untrained = _tables_without_embedding_optimizer(model)
    if untrained:
        logging.warning(
            f"embedding parameters {untrained} have no optimizer attached (apply_embedding_optimizers "
            f"before sharding); torchrec will train them with a fused SGD at lr 0.01."
        )
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=world_size, local_world_size=_local_world_size(world_size)),
        kernel_config=KernelConfig(compute_device=device.type),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        constraints=build_sharding_constraints(model, sharding_constraints),
        storage_reservation=FixedPercentageStorageReservation(STORAGE_RESERVATION_PERCENTAGE),
    )
    plan = planner.collective_plan(model, sharders, group)
    return DistributedModelParallel(
        model,
        device=device,
        plan=plan,
        sharders=sharders,
        env=ShardingEnv.from_process_group(group),
        data_parallel_wrapper=data_parallel_wrapper(world_size),
    )


class SingleProcessWrapper(DataParallelWrapper):
    """Dense parameters of a one-rank job: nothing to synchronise, so no DistributedDataParallel.

    DDP at world size 1 still runs its forward hooks and an allreduce per step (about 0.25 ms on a
    CPU, a tenth of a TwHIN step). State-dict keys are the same either way: DMP strips DDP's prefix.
    """

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        dmp._dmp_wrapped_module = dmp._dmp_wrapped_module.to(device)


def data_parallel_wrapper(world_size: int) -> DataParallelWrapper:
    return SingleProcessWrapper() if world_size == 1 else DefaultDataParallelWrapper()


__all__ = [
    "ComputeKernel",
    "CpuRowWiseEmbeddingBagCollectionSharder",
    "ShardingType",
    "TableShardingConfig",
    "build_sharding_constraints",
    "embedding_table_names",
    "get_sharders",
    "maybe_shard_model",
    "quiet_torchrec_warnings",
]
