"""Rank functions for the pretrained-table tests: save a table on some ranks, load it on others."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from tml.common.checkpointing import CheckpointManager
from tml.common.modules.embedding.pretrained import load_pretrained_tables
from tiny_recsys import DIM, NUM_ROWS, build_sharded, train_steps


def train_and_save(rank: int, world_size: int, save_dir: str) -> str:
    model, optimizer = build_sharded("table_wise", seed=0)
    train_steps(model, optimizer, range(1, 3), rank)
    return CheckpointManager(save_dir).save(2, {"model": model})


def _pieces(model: Any, table: str) -> list[tuple[tuple[int, int], torch.Tensor]]:
    weight = model.state_dict()[f"embeddings.ebc.embedding_bags.{table}.weight"]
    return [(tuple(shard.metadata.shard_offsets), shard.tensor.detach().clone()) for shard in weight.local_shards()]


def load_into(rank: int, world_size: int, sharding_type: str, sources: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """TinyRecsys sharded `sharding_type`; each table in `sources` loaded from (emb_name, uri)."""
    model, _ = build_sharded(sharding_type, seed=5)
    tables = [
        SimpleNamespace(name=name, num_embeddings=NUM_ROWS, embedding_dim=DIM,
                        pretrained=SimpleNamespace(emb_name=emb_name, embedding_snapshot_uri=uri))
        for name, (emb_name, uri) in sources.items()
    ]
    before = {name: _pieces(model, name) for name in sources}
    missing = load_pretrained_tables(model, tables)
    return {"before": before, "after": {name: _pieces(model, name) for name in sources}, "missing": missing}
