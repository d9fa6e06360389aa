"""Functions that spawned ranks run for the TwHIN tests (spawn needs importable targets)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from tml.common.checkpointing import load_model_weights
from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
from tml.projects.twhin.data.reader import EdgeArrays
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.metrics import link_prediction_ranks
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.core.optimizers import apply_embedding_optimizers
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss

# user split by rows across ranks, tweet placed whole on one rank: both paths of the table gather.
CONSTRAINTS = {
    "user": TableShardingConfig(sharding_type="row_wise"),
    "tweet": TableShardingConfig(sharding_type="table_wise"),
}


def ranks_from_checkpoint(
    rank: int, world_size: int, config_json: str, checkpoint: str, eval_edges: EdgeArrays, known: EdgeArrays
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    quiet_torchrec_warnings()
    config = TwhinModelConfig.model_validate_json(config_json)
    torch.manual_seed(100 + rank)  # a different init on every rank and world size: only the checkpoint counts
    module = TwhinModelAndLoss(TwhinModel(config))
    apply_embedding_optimizers(module, config.embeddings.table_optimizers())
    model = maybe_shard_model(module, torch.device("cpu"), sharding_constraints=CONSTRAINTS)
    load_model_weights(model, checkpoint)
    result = link_prediction_ranks(model, eval_edges, GraphSchema.from_model_config(config), known,
                                   query_chunk_size=3, entity_chunk_size=7)
    return result.metrics(), result.tail, result.head


def save_sharded_checkpoint(rank: int, world_size: int, config_json: str, save_dir: str, step: int) -> dict[str, np.ndarray]:
    """Save a sharded model as checkpoint `step` of `save_dir`; returns its full tables and relations."""
    from tml.common.checkpointing import CheckpointManager
    from tml.projects.twhin.metrics import gather_dense_tables, unwrap_twhin_model

    quiet_torchrec_warnings()
    config = TwhinModelConfig.model_validate_json(config_json)
    torch.manual_seed(5)
    module = TwhinModelAndLoss(TwhinModel(config))
    apply_embedding_optimizers(module, config.embeddings.table_optimizers())
    model = maybe_shard_model(module, torch.device("cpu"), sharding_constraints=CONSTRAINTS)
    CheckpointManager(save_dir).save(step, {"model": model})
    tables = {name: value.numpy() for name, value in gather_dense_tables(model, config.table_names).items()}
    tables["relations"] = unwrap_twhin_model(model).all_trans_embs.detach().numpy().copy()
    return tables


def train_on_ranks(
    rank: int, world_size: int, config_json: str, files: str, steps: int, sharding: Optional[str] = None
) -> dict[str, object]:
    """Train through TrainPipelineSparseDist on this rank's share of `files` (every table sharded
    `sharding` if given, else CONSTRAINTS); report what the test checks."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    from tml.projects.twhin.data.edges import EdgesDataset
    from tml.projects.twhin.metrics import unwrap_twhin_model
    from tml.projects.twhin.optimizer import build_optimizer

    quiet_torchrec_warnings()
    config = TwhinModelConfig.model_validate_json(config_json)
    torch.manual_seed(0)
    module = TwhinModelAndLoss(TwhinModel(config))
    apply_embedding_optimizers(module, config.embeddings.table_optimizers())
    constraints = CONSTRAINTS
    if sharding is not None:
        constraints = {name: TableShardingConfig(sharding_type=sharding) for name in config.table_names}
    model = maybe_shard_model(module, torch.device("cpu"), sharding_constraints=constraints)
    optimizer, scheduler = build_optimizer(model, config)
    dataset = EdgesDataset(files, GraphSchema.from_model_config(config), 50, in_batch_negatives=4,
                           global_negatives=2, rank=rank, world_size=world_size)
    pipeline = TrainPipelineSparseDist(model, optimizer, torch.device("cpu"))
    batches = dataset.dataloader(num_epochs=None)
    losses = []
    for _ in range(steps):
        losses.append(pipeline.progress(batches)["loss"].item())
        scheduler.step()
    pipeline.detach()
    return {
        "first": float(np.mean(losses[:10])),
        "last": float(np.mean(losses[-10:])),
        "relations": unwrap_twhin_model(model).all_trans_embs.detach().clone(),
        "batches_per_epoch": len(dataset),
        "optimizer_keys": [key for key, _ in optimizer.optimizers],
    }


def logits_against_tables(rank: int, world_size: int, config_json: str, edges_json: str) -> dict[str, object]:
    """Every table placed whole on one rank (so the pooled output's key order is the plan's, not
    the config's); this rank's positive logits and the same scores computed from the full tables."""
    import json

    from tml.projects.twhin.data.edges import edges_to_batches
    from tml.projects.twhin.metrics import gather_dense_tables, unwrap_twhin_model

    quiet_torchrec_warnings()
    config = TwhinModelConfig.model_validate_json(config_json)
    torch.manual_seed(3)
    module = TwhinModelAndLoss(TwhinModel(config))
    apply_embedding_optimizers(module, config.embeddings.table_optimizers())
    constraints = {name: TableShardingConfig(sharding_type="table_wise") for name in config.table_names}
    model = maybe_shard_model(module, torch.device("cpu"), sharding_constraints=constraints)
    model.eval()
    schema = GraphSchema.from_model_config(config)
    edges = EdgeArrays.from_lists(**json.loads(edges_json)[rank])
    batches = edges_to_batches(edges, schema, len(edges), in_batch_negatives=2, global_negatives=1,
                               rng=np.random.default_rng(rank))
    positives, scored = [], []
    with torch.no_grad():
        for batch in batches:
            _, outputs = model(batch)
            real = batch.weights > 0
            positives += outputs["logits"][: batch.num_edges][real].tolist()
            lhs, rhs = batch.edge_nodes()
            scored += list(zip(lhs[real].tolist(), batch.rels[real].tolist(), rhs[real].tolist()))
        keys = model.module.model.large_embeddings(batches[0].nodes).keys()
    tables = gather_dense_tables(model, config.table_names)
    twhin = unwrap_twhin_model(model)
    expected = []
    with torch.no_grad():
        for lhs, rel, rhs in scored:
            relation = config.relations[rel]
            score = twhin.score(tables[relation.lhs][lhs], torch.tensor(rel), tables[relation.rhs][rhs])
            expected.append(float(score))
    return {"keys": list(keys), "positives": positives, "expected": expected}


def resume_on_a_rank_holding_no_table(rank: int, world_size: int, config_json: str, files: str, save_dir: str) -> tuple[float, float]:
    """Every table placed whole on rank 0: train 3 steps, save, train 3 more; a fresh model restored
    from the save trains the same 3 steps. Returns the largest differences (table, relations)."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    from tml.common.checkpointing import CheckpointManager
    from tml.projects.twhin.data.edges import EdgesDataset
    from tml.projects.twhin.metrics import gather_dense_tables, unwrap_twhin_model
    from tml.projects.twhin.optimizer import build_optimizer

    quiet_torchrec_warnings()
    config = TwhinModelConfig.model_validate_json(config_json)
    constraints = {name: TableShardingConfig(sharding_type="table_wise") for name in config.table_names}

    def build(seed: int):
        torch.manual_seed(seed)
        module = TwhinModelAndLoss(TwhinModel(config))
        fused_params = apply_embedding_optimizers(module, config.embeddings.table_optimizers())
        model = maybe_shard_model(module, torch.device("cpu"), constraints, fused_params=fused_params)
        return (model, *build_optimizer(model, config))

    def train(model, optimizer, scheduler, seed: int) -> None:
        dataset = EdgesDataset(files, GraphSchema.from_model_config(config), 20, in_batch_negatives=2,
                               global_negatives=2, rank=rank, world_size=world_size, seed=seed)
        pipeline, batches = TrainPipelineSparseDist(model, optimizer, torch.device("cpu")), dataset.dataloader(None)
        for _ in range(3):
            pipeline.progress(batches)
            scheduler.step()
        pipeline.detach()

    def trained(model) -> tuple[torch.Tensor, torch.Tensor]:
        tables = gather_dense_tables(model, config.table_names)
        return torch.cat([tables[name] for name in config.table_names]), unwrap_twhin_model(model).all_trans_embs.detach().clone()

    model, optimizer, scheduler = build(0)
    train(model, optimizer, scheduler, seed=1)
    CheckpointManager(save_dir).save(3, {"model": model, "optimizer": optimizer})
    train(model, optimizer, scheduler, seed=2)
    tables, relations = trained(model)
    model, optimizer, scheduler = build(7)
    manager = CheckpointManager(save_dir)
    manager.restore(manager.latest(), {"model": model, "optimizer": optimizer})
    train(model, optimizer, scheduler, seed=2)
    resumed_tables, resumed_relations = trained(model)
    return float((tables - resumed_tables).abs().max()), float((relations - resumed_relations).abs().max())
