import logging as std_logging
import warnings

import pydantic
import pytest
import torch
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer

from tml.common.sharding import (
    CpuRowWiseEmbeddingBagCollectionSharder,
    TableShardingConfig,
    build_sharding_constraints,
    get_sharders,
    maybe_shard_model,
    quiet_torchrec_warnings,
)
from tml.common.testing_utils import run_on_ranks

from rank_fns_sharding import MIXED_PLAN, train_under_mixed_plan
from tiny_recsys import TinyRecsys, attach_table_optimizers, tiny_optimizer



def test_table_sharding_config_maps_to_planner_constraints():
    constraints = TableShardingConfig(sharding_type="row_wise", compute_kernel="fused").to_parameter_constraints()
    assert constraints.sharding_types == ["row_wise"] and constraints.compute_kernels == ["fused"]
    assert TableShardingConfig(sharding_type="table_wise").to_parameter_constraints().compute_kernels is None


def test_table_sharding_config_rejects_unknown_types():
    with pytest.raises(pydantic.ValidationError, match=r"sharding_type\n  Input should be 'table_wise', 'row_wise'"):
        TableShardingConfig(sharding_type="diagonal")


def test_constraints_for_unknown_tables_are_an_error():
    with pytest.raises(ValueError, match=r"sharding constraints name tables \['user'\] that the model does not have; "
                       r"its embedding tables are \['t0', 't1', 't2', 't3'\]\."):
        build_sharding_constraints(TinyRecsys(), {"user": TableShardingConfig(sharding_type="table_wise")})


def test_without_a_process_group_the_model_is_returned_unchanged():
    model = TinyRecsys(device="cpu")
    assert maybe_shard_model(model, torch.device("cpu")) is model


def test_cpu_sharder_offers_row_wise_types():
    types = CpuRowWiseEmbeddingBagCollectionSharder().sharding_types("cpu")
    assert {"row_wise", "table_row_wise", "table_wise", "column_wise", "data_parallel"} <= set(types)
    sharders = get_sharders(torch.device("cpu"))
    assert sum(isinstance(s, CpuRowWiseEmbeddingBagCollectionSharder) for s in sharders) == 1
    assert any(isinstance(s, EmbeddingCollectionSharder) for s in sharders)


def test_one_rank_sharding_warns_about_tables_without_optimizer(process_group, warnings_seen):
    quiet_torchrec_warnings()
    sharded = maybe_shard_model(TinyRecsys(), torch.device("cpu"))
    assert isinstance(sharded, DistributedModelParallel)
    # One rank has nothing to synchronise: no DDP around the dense part (it costs a step ~0.25 ms).
    assert isinstance(sharded._dmp_wrapped_module, TinyRecsys)
    assert any("have no optimizer attached" in message and "embedding_bags.t0.weight" in message for message in warnings_seen)
    optimizer = tiny_optimizer(sharded, lambda params: torch.optim.SGD(params, lr=0.1), 0.1)
    assert [name for name, _ in optimizer.optimizers] == ["fused_opt", "dense_opt"]


def test_an_unsharded_model_with_in_backward_optimizers_is_refused():
    # Its tables would be updated inside backward, outside the optimizer, its schedules and checkpoints.
    model = TinyRecsys(device="cpu")
    attach_table_optimizers(model)
    with pytest.raises(ValueError, match="have in-backward optimizers but the model is not sharded"):
        tiny_optimizer(model, lambda params: torch.optim.SGD(params, lr=0.1), 0.1)


def test_unsharded_tables_get_a_plain_optimizer_of_their_algorithm():
    model = TinyRecsys(device="cpu")
    optimizer = tiny_optimizer(model, lambda params: torch.optim.SGD(params, lr=0.1), 0.1)
    assert isinstance(optimizer, CombinedOptimizer)
    assert [name for name, _ in optimizer.optimizers] == ["dense_opt", "table_t0", "table_t1", "table_t2", "table_t3"]
    assert type(optimizer.optimizers[1][1]._optimizer) is torch.optim.Adagrad


def test_quiet_torchrec_warnings_filters_the_known_noise():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_torchrec_warnings()
        warnings.warn("The `broadcast_buffers` argument is deprecated", FutureWarning)
        warnings.warn("Please use DTensor instead and we are deprecating ShardedTensor.", FutureWarning)
        warnings.warn("something else", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else"]
    assert std_logging.getLogger("torch.fx._symbolic_trace").level == std_logging.ERROR


@pytest.mark.slow
def test_two_ranks_train_under_every_cpu_sharding_type():
    results = run_on_ranks(train_under_mixed_plan, 2, timeout_s=120)
    for result in results:
        assert {name: kind for name, kind in result["plan"].items()} == MIXED_PLAN
        assert result["losses"][-1] < 0.5 * result["losses"][0]
        assert result["data_parallel_table_moved"]
        # The data-parallel table gets a plain optimizer of its own algorithm (Adagrad), not the dense Adam.
        assert result["optimizer_prefixes"] == ["dense_opt", "fused_opt", "table_t3"]
        assert result["dense_wrapped_in_ddp"]
    # Each rank trained on its own batch: only DDP's gradient averaging keeps the dense weights equal.
    for mine, theirs in zip(results[0]["mlp_weights"], results[1]["mlp_weights"]):
        assert torch.equal(mine, theirs)
