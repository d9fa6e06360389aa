"""Fused (in-backward) embedding optimizers under DistributedModelParallel, world size 1."""
import logging

import pytest
import torch
import torch.distributed as dist
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingEnv
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from tml.core.optimizers import (
    EmbeddingOptimizerConfig,
    LearningRate,
    LRShim,
    apply_embedding_optimizers,
    get_embedding_optimizer,
    param_group_names,
)

TABLES = (("t0", "f0", 4), ("t1", "f1", 8))  # the fused kernel needs dims divisible by 4
EMB_LR = 0.1
# Embedding lr per step: 0.1, then 0 at step 1, then 0.1 again.
EMB_SCHEDULE = LearningRate(
    piecewise_constant={"learning_rate_boundaries": [1, 2], "learning_rate_values": [0.1, 0.0, 0.1]}
)


class TinyRanker(torch.nn.Module):
    def __init__(self, embedding_device: torch.device) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=table, feature_names=[feature], embedding_dim=dim, num_embeddings=8)
                for table, feature, dim in TABLES
            ],
            device=embedding_device,
        )
        self.head = torch.nn.Linear(sum(dim for _, _, dim in TABLES), 1)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.ebc(features).to_dict()
        logits = self.head(torch.cat([pooled[feature] for _, feature, _ in TABLES], dim=1))
        return (logits - 1.0).square().mean()


def _batch() -> KeyedJaggedTensor:
    # Batch of 3; ids repeat within and across bags so gradients must be accumulated per row.
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f1"],
        values=torch.tensor([1, 2, 2, 5, 7, 0, 3, 3, 4]),
        lengths=torch.tensor([2, 1, 2, 1, 2, 1]),
    )


def _shard(model: TinyRanker) -> DistributedModelParallel:
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=1, local_world_size=1),
        kernel_config=KernelConfig(compute_device="cpu"),
    )
    # table_wise gets the fused FBGEMM kernel; a planner left alone picks data_parallel for tiny tables.
    constraints = {table: ParameterConstraints(sharding_types=["table_wise"]) for table, _, _ in TABLES}
    planner = EmbeddingShardingPlanner(
        topology=topology,
        constraints=constraints,
        storage_reservation=FixedPercentageStorageReservation(0.15),
    )
    sharder = EmbeddingBagCollectionSharder()
    plan = planner.collective_plan(model, [sharder], dist.group.WORLD)
    return DistributedModelParallel(
        model,
        device=torch.device("cpu"),
        plan=plan,
        sharders=[sharder],
        env=ShardingEnv.from_process_group(dist.group.WORLD),
    )


def _sharded_model(embedding_config: EmbeddingOptimizerConfig) -> DistributedModelParallel:
    torch.manual_seed(0)
    model = TinyRanker(embedding_device=torch.device("meta"))
    apply_embedding_optimizers(model, {table: embedding_config for table, _, _ in TABLES})
    return _shard(model)


def _combined_optimizer(dmp: DistributedModelParallel) -> CombinedOptimizer:
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=0.01),
    )
    return CombinedOptimizer([("emb", dmp.fused_optimizer), ("dense", dense)])


def _table_weights(dmp: DistributedModelParallel) -> dict[str, torch.Tensor]:
    state = dmp.state_dict()
    return {
        table: state[f"ebc.embedding_bags.{table}.weight"].local_shards()[0].tensor.detach().clone()
        for table, _, _ in TABLES
    }


def _train_and_measure(dmp, optimizer, scheduler, steps: int) -> list[float]:
    """Per step: how far the embeddings moved. zero_grad comes after step, a common loop order in
    which nothing else syncs the fused kernel's lr before the next backward."""
    moved = []
    for _ in range(steps):
        before = _table_weights(dmp)
        dmp(_batch()).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        after = _table_weights(dmp)
        moved.append(sum((after[t] - before[t]).abs().sum().item() for t in after))
    return moved


@pytest.fixture(autouse=True)
def _quiet_planner():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


SGD = EmbeddingOptimizerConfig(sgd={"lr": EMB_LR})


def test_fused_groups_are_named_by_the_combined_optimizer_key(process_group):
    dmp = _sharded_model(SGD)
    names = param_group_names(_combined_optimizer(dmp))
    assert set(names[:-1]) == {"emb"} and names[-1] == "dense"


def test_lr_shim_changes_the_fused_lr_for_the_very_next_step(process_group):
    dmp = _sharded_model(SGD)
    optimizer = _combined_optimizer(dmp)
    scheduler = LRShim(optimizer, {"emb": EMB_SCHEDULE, "dense": LearningRate(constant=0.01)})
    head_before = dmp.module.head.weight.detach().clone()

    moved = _train_and_measure(dmp, optimizer, scheduler, steps=3)

    assert moved[0] > 0
    assert moved[1] == 0.0  # the step trained with lr 0
    assert moved[2] > 0
    assert not torch.equal(dmp.module.head.weight, head_before)  # the dense part trained throughout


def test_without_the_shim_a_plain_scheduler_lags_one_step(process_group):
    # Guards the test above: in this loop a stock scheduler does show the lag the shim removes.
    dmp = _sharded_model(SGD)
    optimizer = _combined_optimizer(dmp)
    factors = [1.0, 0.0, 1.0, 1.0]  # the scheduler also looks one step ahead
    emb_and_dense = [lambda step: factors[step], lambda step: 1.0]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, emb_and_dense)
    assert len(optimizer.param_groups) == 2

    moved = _train_and_measure(dmp, optimizer, scheduler, steps=3)

    assert moved[1] > 0 and moved[2] == 0.0


@pytest.mark.parametrize(
    "config",
    [
        SGD,
        EmbeddingOptimizerConfig(adagrad={"lr": EMB_LR, "eps": 1e-3}),
        EmbeddingOptimizerConfig(rowwise_adagrad={"lr": EMB_LR, "eps": 1e-3}),
    ],
    ids=["sgd", "adagrad", "rowwise_adagrad"],
)
def test_fused_update_equals_the_unfused_algorithm(process_group, config):
    dmp = _sharded_model(config)
    start = _table_weights(dmp)

    reference = TinyRanker(embedding_device=torch.device("cpu"))
    reference.head.load_state_dict(dmp.module.head.state_dict())
    for table, weight in start.items():
        reference.ebc.embedding_bags[table].weight.data.copy_(weight)
    optimizer_class, kwargs = get_embedding_optimizer(config)
    reference_optimizer = optimizer_class(reference.ebc.parameters(), **kwargs)

    dmp(_batch()).backward()  # the fused optimizer updates the tables inside backward
    reference(_batch()).backward()
    reference_optimizer.step()

    fused = _table_weights(dmp)
    for table, _, _ in TABLES:
        expected = reference.ebc.embedding_bags[table].weight.detach()
        assert not torch.equal(expected, start[table])
        torch.testing.assert_close(fused[table], expected, rtol=1e-5, atol=1e-6)
