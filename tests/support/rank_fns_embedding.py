"""Rank functions for the LargeEmbeddings tests."""
from __future__ import annotations

from typing import Any

import torch

from tml.common.modules.embedding import LargeEmbeddings, concat_by_feature
from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
from tiny_recsys import DIM, NUM_ROWS, TABLES, attach_table_optimizers, make_batch, tiny_config


def known_table(index: int) -> torch.Tensor:
    return torch.arange(NUM_ROWS * DIM, dtype=torch.float32).reshape(NUM_ROWS, DIM) * (index + 1) / 100


def fill_tables(state_dict: dict[str, Any]) -> None:
    """Write `known_table(i)` into table i, whatever piece of it this rank holds."""
    for index, name in enumerate(TABLES):
        weight = state_dict[f"ebc.embedding_bags.{name}.weight"]
        for shard in weight.local_shards():
            (row, col), (rows, cols) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
            shard.tensor.copy_(known_table(index)[row:row + rows, col:col + cols])


def pooled_under_table_wise(rank: int, world_size: int) -> dict[str, Any]:
    quiet_torchrec_warnings()
    embeddings = LargeEmbeddings(tiny_config())
    attach_table_optimizers(embeddings)
    constraints = {name: TableShardingConfig(sharding_type="table_wise") for name in TABLES}
    sharded = maybe_shard_model(embeddings, torch.device("cpu"), constraints)
    fill_tables(sharded.state_dict())
    reference = LargeEmbeddings(tiny_config(), device="cpu")
    with torch.no_grad():
        for index, name in enumerate(TABLES):
            reference.ebc.embedding_bags[name].weight.copy_(known_table(index))
    features = make_batch(seed=rank)[0]
    with torch.no_grad():
        pooled = sharded(features)
        return {
            "keys": pooled.keys(),
            "by_name": concat_by_feature(pooled, embeddings.feature_names),
            "method": sharded.module.pooled_embeddings(features),
            "naive": pooled.values(),
            "expected": reference.pooled_embeddings(features),
        }
