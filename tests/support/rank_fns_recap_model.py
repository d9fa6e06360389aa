"""Rank functions for the recap model's multi-rank tests (spawned by run_on_ranks)."""

from __future__ import annotations

import torch
import torch.distributed.checkpoint as dcp

from recap_model_builders import INPUT_SHAPES, model_config, model_inputs, batch, sparse_features

TABLES = {"t0": 7, "t1": 9, "t2": 11, "t3": 13}


def _config():
    large = {
        "tables": [
            {"name": name, "num_embeddings": size, "embedding_dim": 4} for name, size in TABLES.items()
        ],
        "optimizer": {"init_learning_rate": 0.1},
    }
    return model_config(large_embeddings=large)


def sharded_outputs_match_unsharded(rank: int, world_size: int, checkpoint_dir: str) -> float:
    """Max |sharded - unsharded| logits, with tables placed table-wise over the ranks."""
    from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
    from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel
    from tml.core.optimizers import apply_embedding_optimizers

    quiet_torchrec_warnings()
    config = _config()
    torch.manual_seed(0)
    reference = MultiTaskRankingModel(INPUT_SHAPES, config).eval()
    dcp.save({"model": reference.state_dict()}, checkpoint_id=checkpoint_dir)

    model = MultiTaskRankingModel(INPUT_SHAPES, config, embedding_device=torch.device("meta"))
    apply_embedding_optimizers(model, config.large_embeddings.table_optimizers())
    constraints = {name: TableShardingConfig(sharding_type="table_wise") for name in TABLES}
    sharded = maybe_shard_model(model, torch.device("cpu"), sharding_constraints=constraints)
    state = {"model": sharded.state_dict()}
    dcp.load(state, checkpoint_id=checkpoint_dir)
    sharded.load_state_dict(state["model"])
    sharded.eval()

    fields = model_inputs(batch(batch_size=6, seed=3))
    kjt = sparse_features(6, TABLES, seed=3)
    with torch.no_grad():
        expected = reference(**fields, sparse_features=kjt)["logits"]
        actual = sharded(**fields, sparse_features=kjt)["logits"]
    return float((expected - actual).abs().max())
