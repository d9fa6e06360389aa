"""Rank functions for the sharding tests."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
from tiny_recsys import TinyRecsys, attach_table_optimizers, make_batch, tiny_optimizer

MIXED_PLAN = {"t0": "row_wise", "t1": "column_wise", "t2": "table_row_wise", "t3": "data_parallel"}


def train_under_mixed_plan(rank: int, world_size: int) -> dict[str, Any]:
    """Every CPU-capable sharding type at once; the model must still learn a fixed batch."""
    quiet_torchrec_warnings()
    model = TinyRecsys(seed=0)
    attach_table_optimizers(model)
    constraints = {name: TableShardingConfig(sharding_type=kind) for name, kind in MIXED_PLAN.items()}
    sharded = maybe_shard_model(model, torch.device("cpu"), constraints)
    optimizer = tiny_optimizer(sharded, lambda params: torch.optim.Adam(params, lr=0.02), 0.02)
    table_plan = sharded.plan.plan["embeddings.ebc"]
    weight_before = sharded.state_dict()["embeddings.ebc.embedding_bags.t3.weight"].clone()
    features, labels = make_batch(seed=rank)
    losses = []
    for _ in range(30):
        loss = nn.functional.binary_cross_entropy_with_logits(sharded(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {
        "plan": {name: table_plan[name].sharding_type for name in MIXED_PLAN},
        "losses": losses,
        "data_parallel_table_moved": not torch.equal(
            weight_before, sharded.state_dict()["embeddings.ebc.embedding_bags.t3.weight"]
        ),
        "optimizer_prefixes": sorted({key.split(".")[0] for key in optimizer.state_dict()["state"]}),
        "dense_wrapped_in_ddp": isinstance(sharded._dmp_wrapped_module, nn.parallel.DistributedDataParallel),
        "mlp_weights": [param.detach().clone() for param in sharded.module.mlp.parameters()],
    }
