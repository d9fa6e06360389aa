"""Rank functions for the weight-logging tests."""
from __future__ import annotations

from typing import Any

import torch

from tml.common.log_weights import log_ebc_norms, weights_to_log
from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
from rank_fns_embedding import fill_tables
from tiny_recsys import TinyRecsys, attach_table_optimizers

PLAN = {"t0": "row_wise", "t1": "table_wise", "t2": "table_wise", "t3": "row_wise"}


def norms_of_sharded_tables(rank: int, world_size: int) -> dict[str, Any]:
    quiet_torchrec_warnings()
    model = TinyRecsys(seed=0)
    attach_table_optimizers(model)
    constraints = {name: TableShardingConfig(sharding_type=kind) for name, kind in PLAN.items()}
    sharded = maybe_shard_model(model, torch.device("cpu"), constraints)
    state = sharded.state_dict()
    fill_tables({key.removeprefix("embeddings."): value for key, value in state.items() if key.startswith("embeddings.")})
    before = torch.get_rng_state()
    norms = log_ebc_norms(state, ["t0", "embeddings.ebc.embedding_bags.t1.weight"])
    return {
        "norms": norms,
        "rng_untouched": torch.equal(before, torch.get_rng_state()),
        "weights": weights_to_log(sharded, torch.sum),
        "bias": weights_to_log(sharded, {"mlp.2.bias": torch.sum}),
        "expected_bias": sharded.state_dict()["mlp.2.bias"].sum().item(),
    }
