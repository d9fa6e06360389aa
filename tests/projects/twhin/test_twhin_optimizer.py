import numpy as np
import pytest
import torch

from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
from tml.projects.twhin.data.edges import edges_to_batch
from tml.projects.twhin.data.reader import EdgeArrays
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.metrics import gather_dense_tables, unwrap_twhin_model
from tml.core.optimizers import apply_embedding_optimizers
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from tml.projects.twhin.optimizer import build_optimizer
from twhin_helpers import model_config as helper_config, sharded_model

EDGES = EdgeArrays.from_lists(lhs=[1, 2, 3, 4], rel=[0, 0, 1, 1], rhs=[3, 4, 5, 6])
# Two user -> tweet relations: one batch holds edges of one table pair, and a step here touches both.
RELATIONS = [("fav", "user", "tweet"), ("reply", "user", "tweet")]


def model_config(**kwargs):
    return helper_config(relations=RELATIONS, **kwargs)
DROP_TO_ZERO_AT_STEP_1 = {"piecewise_constant": {"learning_rate_boundaries": [1], "learning_rate_values": [0.1, 0.0]}}


def step(model, optimizer, scheduler, schema, seed=0):
    loss, _ = model(edges_to_batch(EDGES, schema, in_batch_negatives=1, rng=np.random.default_rng(seed)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def snapshot(model):
    tables = gather_dense_tables(model, ["user", "tweet"])
    return {**{k: v.clone() for k, v in tables.items()}, "relations": unwrap_twhin_model(model).all_trans_embs.detach().clone()}


def changes(before, after):
    return {name: (after[name] - before[name]).abs().sum().item() for name in before}


def test_tables_with_equal_settings_and_schedule_share_one_kernel(process_group):
    config = model_config()  # both tables: identical sgd settings and schedule
    model, optimizer, scheduler = sharded_model(config)
    assert [key for key, _ in optimizer.optimizers] == ["fused_opt", "operator_opt"]
    assert len(optimizer.optimizers[0][1].param_groups) == 1
    assert len(optimizer.param_groups) == 2


def test_equal_settings_with_different_schedules_get_a_kernel_each(process_group):
    config = model_config(table_schedules={"tweet": DROP_TO_ZERO_AT_STEP_1})
    model, optimizer, scheduler = sharded_model(config)
    assert len(optimizer.optimizers[0][1].param_groups) == 2
    assert len(optimizer.param_groups) == 3


def test_the_kernel_split_comes_from_the_sharder_fused_params(process_group):
    # No edit of what is attached to the tables: without the returned fused params, tables with equal
    # settings share one kernel, and the combined optimizer refuses their different schedules.
    quiet_torchrec_warnings()
    config = model_config(table_schedules={"tweet": DROP_TO_ZERO_AT_STEP_1})
    module = TwhinModelAndLoss(TwhinModel(config))
    assert apply_embedding_optimizers(module, config.embeddings.table_optimizers()) == {"use_one_tbe_per_table": True}
    model = maybe_shard_model(module, torch.device("cpu"))
    with pytest.raises(ValueError, match="different LR schedules"):
        build_optimizer(model, config)
    same_schedule = model_config()
    assert apply_embedding_optimizers(TwhinModel(same_schedule), same_schedule.embeddings.table_optimizers()) == {}


def test_each_schedule_drives_its_group_from_the_next_step_on(process_group):
    config = model_config(
        table_schedules={"tweet": DROP_TO_ZERO_AT_STEP_1},
        translation={"sgd": {"lr": 0.1}, "learning_rate": DROP_TO_ZERO_AT_STEP_1},
    )
    schema = GraphSchema.from_model_config(config)
    model, optimizer, scheduler = sharded_model(config)
    first = snapshot(model)
    step(model, optimizer, scheduler, schema, 0)
    second = snapshot(model)
    step(model, optimizer, scheduler, schema, 1)
    third = snapshot(model)
    assert all(value > 0 for value in changes(first, second).values())
    after_drop = changes(second, third)
    # lr 0 applies at the very next step, fused kernel included (no one-step lag).
    assert after_drop["tweet"] == 0 and after_drop["relations"] == 0 and after_drop["user"] > 0
    assert sorted(group["lr"] for group in optimizer.param_groups) == [0.0, 0.0, 0.1]


def test_data_parallel_tables_get_a_dense_optimizer_of_their_algorithm(process_group):
    quiet_torchrec_warnings()
    config = model_config(algorithm="adagrad")
    schema = GraphSchema.from_model_config(config)
    torch.manual_seed(0)
    module = TwhinModelAndLoss(TwhinModel(config))
    apply_embedding_optimizers(module, config.embeddings.table_optimizers())
    model = maybe_shard_model(module, torch.device("cpu"),
                              sharding_constraints={"tweet": TableShardingConfig(sharding_type="data_parallel")})
    optimizer, scheduler = build_optimizer(model, config)
    keys = [key for key, _ in optimizer.optimizers]
    assert keys == ["fused_opt", "operator_opt", "table_tweet"]
    assert type(optimizer.optimizers[2][1]._optimizer).__name__ == "Adagrad"
    before = snapshot(model)
    step(model, optimizer, scheduler, schema)
    assert all(value > 0 for value in changes(before, snapshot(model)).values())
