"""Building a rank's edge dataset from the configs (the original's `create_dataset`)."""
from __future__ import annotations

from typing import Optional

from tml.common.device import get_rank, get_world_size
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.edges import EdgesDataset
from tml.projects.twhin.data.reader import ColumnNames
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.models.config import TwhinModelConfig


def column_names(data_config: TwhinDataConfig) -> ColumnNames:
    return ColumnNames(
        lhs=data_config.lhs_column, rel=data_config.rel_column, rhs=data_config.rhs_column,
        weight=data_config.weight_column,
    )


def create_dataset(
    data_config: TwhinDataConfig,
    model_config: TwhinModelConfig,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
) -> EdgesDataset:
    """This rank's part of `data_config`'s edges (rank and world size default to the process group's)."""
    return EdgesDataset(
        file_pattern=data_config.data_root,
        schema=GraphSchema.from_model_config(model_config),
        batch_size=data_config.per_replica_batch_size,
        in_batch_negatives=data_config.in_batch_negatives,
        global_negatives=data_config.global_negatives,
        limit=data_config.limit,
        offset=data_config.offset,
        shuffle=data_config.shuffle,
        prefetch=data_config.prefetch,
        seed=data_config.seed,
        rank=get_rank() if rank is None else rank,
        world_size=get_world_size() if world_size is None else world_size,
        columns=column_names(data_config),
        chunk_size=data_config.chunk_size,
    )
