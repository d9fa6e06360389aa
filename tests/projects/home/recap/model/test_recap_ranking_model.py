from types import SimpleNamespace

import pytest
import torch
from recap_model_builders import (
    ARCHITECTURE_BACKBONES,
    ARCHITECTURE_TOWERS,
    INPUT_SHAPES,
    LARGE_EMBEDDINGS,
    LARGE_TABLES,
    LOCAL_PROD_SHAPES,
    TASKS,
    all_inputs_config,
    batch,
    data_config,
    full_batch,
    local_prod_model_config,
    model_config,
    model_inputs,
    sparse_features,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.projects.home.recap.model.entrypoint import (
    MultiTaskRankingModel,
    count_parameters,
    create_ranking_model,
    sanitize,
    unsanitize,
)
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss

ARCHITECTURES = sorted(ARCHITECTURE_TOWERS)
MULTI_TASK_TYPES = ["share_none", "share_all", "share_partial"]


def test_sanitize_round_trip():
    assert sanitize("recap.engagement.is_favorited") == "recap__engagement__is_favorited"
    assert unsanitize(sanitize("a.b.c")) == "a.b.c"


@pytest.mark.parametrize("multi_task_type", MULTI_TASK_TYPES)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_and_task_sharing_builds_and_trains(architecture, multi_task_type):
    torch.manual_seed(0)
    config = all_inputs_config(architecture, multi_task_type)
    model = MultiTaskRankingModel(INPUT_SHAPES, config, data_config())
    # features (6 continuous + 3 binary) + 2 large tables of 4 + 1 small of 3 + TwHIN 5 + position 2
    assert model.input_dims == 9 + 8 + 3 + 5 + 2
    if multi_task_type == "share_none":
        assert model.backbone is None
    loss_fn = build_recap_loss(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    fields = full_batch(batch_size=8)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(3):
        outputs = model(**model_inputs(fields))
        loss = loss_fn(outputs["logits"], fields["labels"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    for key in ("logits", "probabilities", "calibrated_probabilities"):
        assert outputs[key].shape == (8, len(TASKS))
    torch.testing.assert_close(outputs["probabilities"], torch.sigmoid(outputs["logits"]))
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    for prefix in (
        "towers",
        "large_embeddings",
        "small_embeddings",
        "position_debias",
        "embedding_layer_norms",
    ):
        assert any(name.startswith(prefix) for name in changed), prefix
    if multi_task_type != "share_none":
        assert any(name.startswith("backbone") for name in changed)


@pytest.mark.parametrize("multi_task_type, tower_inputs", [("share_all", 6), ("share_partial", 14 + 6)])
def test_tower_inputs_follow_multi_task_type(multi_task_type, tower_inputs):
    config = model_config(backbone=ARCHITECTURE_BACKBONES["mlp"], multi_task_type=multi_task_type)
    model = MultiTaskRankingModel(INPUT_SHAPES, config, return_backbone=True)
    assert model.input_dims == 9 + 5
    assert model.towers[sanitize(TASKS[0])].layers[0][0].in_features == tower_inputs
    outputs = model(**model_inputs(batch()))
    assert outputs["backbone"].shape == (8, 6)


def test_affine_map_is_initialised_from_config_and_applied():
    tower = {"mlp_config": {"layer_sizes": [1]}, "affine_map": {"scale": 2.0, "bias": -1.0}}
    model = MultiTaskRankingModel(INPUT_SHAPES, model_config(tower=tower))
    fields = model_inputs(batch())
    outputs = model(**fields)
    net = model.preprocessor(fields["continuous_features"], fields["binary_features"])
    net = torch.cat([net, model.embedding_layer_norms["user_embedding"](fields["user_embedding"])], 1)
    raw = model.towers[sanitize(TASKS[1])](net)["output"][:, 0]
    torch.testing.assert_close(outputs["logits"][:, 1], 2.0 * raw - 1.0)


def test_calibration_uses_the_data_configs_down_sampling_rates():
    rates = data_config(TASKS, recap__engagement__is_replied=(0.5, 0.01))
    model = MultiTaskRankingModel(INPUT_SHAPES, model_config(), rates)
    outputs = model(**model_inputs(batch()))
    torch.testing.assert_close(outputs["calibrated_probabilities"][:, 0], outputs["probabilities"][:, 0])
    p = outputs["probabilities"][:, 1]
    torch.testing.assert_close(outputs["calibrated_probabilities"][:, 1], p * 0.02 / (1 - p + p * 0.02))


def test_model_task_missing_from_data_is_an_error():
    with pytest.raises(
        ValueError, match="model task 'recap.engagement.is_replied' is not among the data's tasks"
    ):
        MultiTaskRankingModel(INPUT_SHAPES, model_config(), data_config(TASKS[:1]))


def test_twhin_embeddings_are_layer_normed_inputs_when_the_data_has_them():
    model = MultiTaskRankingModel(INPUT_SHAPES, model_config())
    assert list(model.embedding_layer_norms) == ["user_embedding"]
    fields = model_inputs(batch())
    shifted = dict(fields, user_embedding=fields["user_embedding"] * 3.0 + 7.0)
    # LayerNorm makes the input invariant to an affine change of the embedding row (up to its eps).
    torch.testing.assert_close(
        model.eval()(**fields)["logits"], model(**shifted)["logits"], atol=1e-4, rtol=1e-4
    )
    assert not torch.allclose(
        model(**fields)["logits"], model(**dict(fields, user_embedding=-fields["user_embedding"]))["logits"]
    )
    with pytest.raises(ValueError, match="the batch has no user_embedding"):
        model(**dict(fields, user_embedding=None))
    without = MultiTaskRankingModel(
        {k: v for k, v in INPUT_SHAPES.items() if k != "user_embedding"}, model_config()
    )
    assert without.input_dims == 9 and len(without.embedding_layer_norms) == 0


def test_large_embeddings_are_taken_by_feature_name():
    model = MultiTaskRankingModel(INPUT_SHAPES, model_config(large_embeddings=LARGE_EMBEDDINGS)).eval()
    fields = model_inputs(batch())
    kjt = sparse_features(8, LARGE_TABLES)
    reordered = KeyedJaggedTensor.from_jt_dict({name: kjt[name] for name in reversed(kjt.keys())})
    assert reordered.keys() == ["item_id", "user_id"]
    torch.testing.assert_close(
        model(**fields, sparse_features=kjt)["logits"], model(**fields, sparse_features=reordered)["logits"]
    )
    pooled = model.large_embeddings.pooled_embeddings(kjt)
    user = kjt["user_id"]
    first_user_ids = user.values()[: user.lengths()[0]]
    torch.testing.assert_close(
        pooled[0, :4], model.large_embeddings.ebc.embedding_bags["user_id"].weight[first_user_ids].sum(0)
    )
    with pytest.raises(ValueError, match=r"lacks the feature\(s\) \['item_id'\]"):
        model(**fields, sparse_features=KeyedJaggedTensor.from_jt_dict({"user_id": kjt["user_id"]}))


def test_tower_must_end_in_one_logit():
    with pytest.raises(
        ValueError, match="the tower of task 'recap.engagement.is_favorited' outputs 3 values"
    ):
        MultiTaskRankingModel(INPUT_SHAPES, model_config(tower={"mlp_config": {"layer_sizes": [3]}}))


def test_create_ranking_model_places_tables_and_wraps_with_loss():
    config = SimpleNamespace(model=model_config(large_embeddings=LARGE_EMBEDDINGS), train_data=data_config())
    model = create_ranking_model(
        INPUT_SHAPES, config, torch.device("cpu"), embedding_device=torch.device("meta")
    )
    assert isinstance(model, MultiTaskRankingModel)
    assert model.large_embeddings.ebc.embedding_bags["user_id"].weight.is_meta
    assert not model.towers[sanitize(TASKS[0])].layers[0][0].weight.is_meta
    wrapped = create_ranking_model(
        INPUT_SHAPES, config, torch.device("cpu"), loss_fn=build_recap_loss(config.model)
    )
    assert isinstance(wrapped, RecapModelAndLoss) and wrapped.label_names == list(TASKS)


def test_local_prod_architecture_size_and_forward():
    model = MultiTaskRankingModel(LOCAL_PROD_SHAPES, local_prod_model_config())
    assert model.input_dims == 2117 + 59 + 600 == 2776
    # MaskNet 4 x 8.53 M + MLP 8.39 M + towers 10 x 0.558 M + BatchNorm/LayerNorms (spec 7.5: ~48.1 M)
    assert count_parameters(model.backbone) == 4 * 8_534_744 + 8_390_656
    assert count_parameters(model) == 48_115_108
    generator = torch.Generator().manual_seed(0)
    outputs = model(
        continuous_features=torch.randn(2, 2117, generator=generator).exp(),
        binary_features=torch.randint(0, 2, (2, 59), generator=generator),
        discrete_features=torch.randint(0, 9, (2, 320), generator=generator),
        user_embedding=torch.randn(2, 200, generator=generator),
        user_eng_embedding=torch.randn(2, 200, generator=generator),
        author_embedding=torch.randn(2, 200, generator=generator),
    )
    assert outputs["logits"].shape == (2, 10) and torch.isfinite(outputs["logits"]).all()


def test_input_shapes_may_use_batch_field_names():
    shapes = {
        "continuous_features": torch.Size([-1, 6]),
        "binary_features": torch.Size([-1, 3]),
        "user_embedding": torch.Size([-1, 5]),
        "labels": torch.Size([-1, 2]),
    }
    model = MultiTaskRankingModel(shapes, model_config())
    assert model.input_dims == 6 + 3 + 5
