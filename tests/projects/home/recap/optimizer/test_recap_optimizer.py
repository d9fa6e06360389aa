import pytest
import torch
from recap_model_builders import (
    ARCHITECTURE_BACKBONES,
    INPUT_SHAPES,
    LARGE_EMBEDDINGS,
    LARGE_TABLES,
    TASKS,
    batch,
    model_config,
    model_inputs,
    sparse_features,
)
from torch import nn

from tml.core.optimizers import apply_embedding_optimizers, param_group_names
from tml.projects.home.recap.embedding.config import RecapLargeEmbeddingsConfig
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel, sanitize
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig
from tml.projects.home.recap.optimizer.optimizer import build_optimizer

FAV, REPLY = TASKS


def multi_task(towers: dict, backbone=None) -> RecapOptimizerConfig:
    rates = {"tower_learning_rates": {task: {"constant": lr} for task, lr in towers.items()}}
    if backbone is not None:
        rates["backbone_learning_rate"] = {"constant": backbone}
    return RecapOptimizerConfig.model_validate({"adam": {"beta_1": 0.5}, "multi_task_learning_rates": rates})


def lrs_by_group(optimizer) -> dict:
    lrs = {}
    for name, group in zip(param_group_names(optimizer), optimizer.param_groups):
        lrs.setdefault(name, set()).add(group["lr"])
    return lrs


def shared_model(**kwargs) -> MultiTaskRankingModel:
    config = model_config(backbone=ARCHITECTURE_BACKBONES["mlp"], multi_task_type="share_all", **kwargs)
    return MultiTaskRankingModel(INPUT_SHAPES, config)


def test_one_adam_group_and_schedule_per_tower_plus_backbone():
    model = shared_model()
    optimizer, scheduler = build_optimizer(model, multi_task({FAV: 0.1, REPLY: 0.2}, backbone=0.3))
    assert lrs_by_group(optimizer) == {FAV: {0.1}, REPLY: {0.2}, "backbone": {0.3}}
    grouped = {}
    for name, params in ((n, opt.params) for n, opt in optimizer.optimizers):
        grouped[name] = set(params)
    tower_params = {k for k in grouped[FAV]}
    assert tower_params and all(f".{sanitize(FAV)}." in name for name in tower_params)
    assert any(name.startswith("backbone.") for name in grouped["backbone"])
    assert any(name.startswith("embedding_layer_norms.") for name in grouped["backbone"])
    assert sum(len(names) for names in grouped.values()) == len(list(model.parameters()))
    adam = optimizer.optimizers[0][1]._optimizer
    assert (
        isinstance(adam, torch.optim.Adam)
        and adam.defaults["betas"] == (0.5, 0.999)
        and adam.defaults["eps"] == 1e-7
    )


def test_schedules_advance_per_group():
    model = shared_model()
    config = RecapOptimizerConfig.model_validate(
        {
            "adam": {},
            "multi_task_learning_rates": {
                "tower_learning_rates": {
                    FAV: {"linear_ramp_to_constant": {"learning_rate": 1.0, "num_ramp_steps": 4}},
                    REPLY: {
                        "piecewise_constant": {
                            "learning_rate_boundaries": [2],
                            "learning_rate_values": [0.5, 0.25],
                        }
                    },
                },
                "backbone_learning_rate": {"constant": 0.125},
            },
        }
    )
    optimizer, scheduler = build_optimizer(model, config)
    assert lrs_by_group(optimizer) == {FAV: {0.0}, REPLY: {0.5}, "backbone": {0.125}}
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert lrs_by_group(optimizer) == {FAV: {0.75}, REPLY: {0.25}, "backbone": {0.125}}


def test_single_task_learning_rate_is_one_group():
    model = shared_model()
    config = RecapOptimizerConfig.model_validate(
        {"adam": {}, "single_task_learning_rate": {"constant": 0.01}}
    )
    optimizer, _ = build_optimizer(model, config)
    assert lrs_by_group(optimizer) == {"single_task": {0.01}}


def test_schedules_must_match_the_groups():
    model = shared_model()
    with pytest.raises(ValueError, match=r"missing: \['backbone', 'recap.engagement.is_replied'\]"):
        build_optimizer(model, multi_task({FAV: 0.1}))
    with pytest.raises(ValueError, match=r"without parameters: \['recap.engagement.is_unknown'\]"):
        build_optimizer(
            model, multi_task({FAV: 0.1, REPLY: 0.1, "recap.engagement.is_unknown": 0.1}, backbone=0.1)
        )


def test_share_none_model_without_backbone_parameters_needs_no_backbone_schedule():
    config = model_config(featurization_config={"log1p_abs_config": {}})
    model = MultiTaskRankingModel({k: v for k, v in INPUT_SHAPES.items() if k != "user_embedding"}, config)
    optimizer, _ = build_optimizer(model, multi_task({FAV: 0.1, REPLY: 0.2}, backbone=0.3))
    assert set(lrs_by_group(optimizer)) == {FAV, REPLY}


def test_a_parameter_in_two_towers_is_an_error():
    model = nn.ModuleDict({"a": nn.ModuleDict({"b": nn.Linear(1, 1)})})
    with pytest.raises(
        ValueError, match=r"parameter 'a.b.weight' matches the towers of several tasks: \['a', 'b'\]"
    ):
        build_optimizer(model, multi_task({"a": 0.1, "b": 0.1}))


def with_embedding_optimizer(optimizer: dict) -> RecapLargeEmbeddingsConfig:
    return RecapLargeEmbeddingsConfig.model_validate({**LARGE_EMBEDDINGS, "optimizer": optimizer})


def test_unsharded_large_embeddings_get_an_sgd_group_with_their_schedule():
    model = shared_model(large_embeddings=LARGE_EMBEDDINGS)
    with pytest.raises(ValueError, match="embedding table 'user_id' .* has no optimizer configured"):
        build_optimizer(model, multi_task({FAV: 0.0, REPLY: 0.0}, backbone=0.0))
    emb_config = with_embedding_optimizer({"init_learning_rate": 0.3, "learning_rate": {"constant": 0.5}})
    optimizer, _ = build_optimizer(model, multi_task({FAV: 0.0, REPLY: 0.0}, backbone=0.0), emb_config)
    assert {lr for name, lrs in lrs_by_group(optimizer).items() if name.startswith("table_") for lr in lrs} == {0.5}
    assert type(dict(optimizer.optimizers)["table_user_id"]._optimizer) is torch.optim.SGD
    table = model.large_embeddings.ebc.embedding_bags["user_id"].weight
    before = table.detach().clone()
    outputs = model(**model_inputs(batch()), sparse_features=sparse_features(8, LARGE_TABLES))
    outputs["logits"].sum().backward()
    gradient = table.grad.clone()
    optimizer.step()
    torch.testing.assert_close(table.detach(), before - 0.5 * gradient)


def test_sharded_tables_use_the_fused_optimizer_and_its_schedule(process_group):
    from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings

    quiet_torchrec_warnings()
    torch.manual_seed(0)
    config = model_config(
        backbone=ARCHITECTURE_BACKBONES["mlp"], multi_task_type="share_all", large_embeddings=LARGE_EMBEDDINGS
    )
    model = MultiTaskRankingModel(INPUT_SHAPES, config, embedding_device=torch.device("meta"))
    apply_embedding_optimizers(model, config.large_embeddings.table_optimizers())
    sharded = maybe_shard_model(RecapModelAndLoss(model, build_recap_loss(config)), torch.device("cpu"))
    emb_config = with_embedding_optimizer(
        {
            "init_learning_rate": 0.1,
            "learning_rate": {
                "piecewise_constant": {"learning_rate_boundaries": [1], "learning_rate_values": [0.0, 0.5]}
            },
        }
    )
    optimizer, scheduler = build_optimizer(
        sharded, multi_task({FAV: 0.0, REPLY: 0.0}, backbone=0.0), emb_config
    )
    assert lrs_by_group(optimizer)["embeddings"] == {0.0}
    assert [name for name, _ in optimizer.optimizers] == [FAV, REPLY, "backbone", "embeddings"]
    assert optimizer.optimizers[-1][1] is sharded.fused_optimizer

    fields = dict(batch(), sparse_features=sparse_features(8, LARGE_TABLES))

    def eval_logits() -> torch.Tensor:
        sharded.eval()
        with torch.no_grad():
            _, outputs = sharded(fields)
        sharded.train()
        return outputs["logits"]

    def train_step() -> None:
        loss, _ = sharded(fields)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()

    start = eval_logits()
    train_step()  # embedding lr 0 (and all dense lrs 0): nothing moves
    torch.testing.assert_close(eval_logits(), start)
    assert lrs_by_group(optimizer)["embeddings"] == {0.5}
    train_step()  # the new embedding lr applies at once
    assert not torch.allclose(eval_logits(), start)
