import os

import pydantic
import pytest
import yaml

from tml.projects.home.recap.embedding.config import RecapLargeEmbeddingsConfig, SmallEmbeddingsConfig
from tml.projects.home.recap.model.config import (
    BatchNormConfig,
    ClipLog1pAbsConfig,
    FeaturizationConfig,
    LayerNormConfig,
    MaskBlockConfig,
    MlpConfig,
    ModelConfig,
    MultiTaskType,
    PositionDebiasConfig,
    TaskModel,
    ZScoreLogConfig,
)
from tml.projects.home.recap.optimizer.config import RecapAdamConfig, RecapOptimizerConfig

from original_configs import ORIGINAL_DIR  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 5))
# The original's production config (the compatibility target), else the repository's copy of it.
LOCAL_PROD_CANDIDATES = (
    str(ORIGINAL_DIR / "recap_local_prod.yaml"),
    os.path.join(REPO_ROOT, "projects", "home", "recap", "config", "local_prod.yaml"),
)


@pytest.fixture(scope="module")
def local_prod() -> dict:
    path = next((candidate for candidate in LOCAL_PROD_CANDIDATES if os.path.exists(candidate)), None)
    if path is None:
        pytest.skip("no local_prod.yaml available")
    with open(path) as stream:
        text = stream.read().replace("${HOME}", "/home/someone").replace("${TML_BASE}", "/repo")
    return yaml.safe_load(text)


def test_original_model_section_validates_unchanged(local_prod):
    model = ModelConfig.model_validate(local_prod["model"])
    assert model.multi_task_type is MultiTaskType.SHARE_ALL
    assert len(model.tasks) == 10
    assert list(model.tasks)[0] == "recap.engagement.is_favorited"
    blocks = model.backbone.mask_net_config.mask_blocks
    assert [(b.aggregation_size, b.output_size, b.reduction_factor) for b in blocks] == [
        (1024, 1024, None)
    ] * 4
    assert model.backbone.mask_net_config.mlp.layer_sizes == [2048]
    featurization = model.featurization_config.double_norm_log_config
    assert featurization.batch_norm_config.momentum == 0.01
    assert featurization.layer_norm_config.epsilon == 0.0
    report = model.tasks["recap.engagement.is_report_tweet_clicked"].mlp_config
    assert report.dropout.rate == 0.2 and report.batch_norm.affine is False
    assert model.large_embeddings is None and model.stratifiers is None


def test_original_optimizer_section_validates_unchanged(local_prod):
    optimizer = RecapOptimizerConfig.model_validate(local_prod["optimizer"])
    assert optimizer.adam.beta_1 == 0.95
    rates = optimizer.multi_task_learning_rates
    assert rates.backbone_learning_rate.linear_ramp_to_constant.num_ramp_steps == 1000
    video = rates.tower_learning_rates["recap.engagement.is_video_playback_50"]
    assert video.linear_ramp_to_constant.learning_rate == 0.003
    assert len(rates.tower_learning_rates) == 10


def test_defaults_match_the_original():
    assert LayerNormConfig().epsilon == 1e-3 and LayerNormConfig().axis == -1
    assert BatchNormConfig().affine is True and BatchNormConfig().momentum == 0.1
    assert MlpConfig(layer_sizes=[1]).final_layer_activation is False
    assert ClipLog1pAbsConfig().clip_magnitude == 3e38
    z = ZScoreLogConfig(analysis_path="a.json")
    assert (z.clip_magnitude, z.use_batch_norm, z.use_renorm, z.use_bq_stats) == (5.0, False, False, False)
    assert FeaturizationConfig(log1p_abs_config={}).feature_names_to_concat == ["binary"]
    position = PositionDebiasConfig(position_feature_index=3)
    assert (position.max_position, position.num_dims, position.drop_probability) == (256, 64, 0.5)
    assert TaskModel(mlp_config={"layer_sizes": [1]}).pos_weight == 1.0
    assert RecapAdamConfig().epsilon == 1e-7


def test_backbone_must_match_multi_task_type():
    tasks = {"a": {"mlp_config": {"layer_sizes": [1]}}}
    with pytest.raises(pydantic.ValidationError, match="share_none takes no backbone"):
        ModelConfig(tasks=tasks, backbone={"mlp_config": {"layer_sizes": [2]}})
    with pytest.raises(pydantic.ValidationError, match="share_partial needs a `backbone`"):
        ModelConfig(tasks=tasks, multi_task_type="share_partial")


def test_field_groups():
    with pytest.raises(pydantic.ValidationError, match="Exactly one of reduction_factor,aggregation_size"):
        MaskBlockConfig(output_size=4, reduction_factor=0.5, aggregation_size=3, input_layer_norm=False)
    with pytest.raises(pydantic.ValidationError, match="Exactly one of mlp_config"):
        TaskModel()
    with pytest.raises(pydantic.ValidationError, match="Exactly one of log1p_abs_config"):
        FeaturizationConfig()
    with pytest.raises(pydantic.ValidationError, match="Exactly one of multi_task_learning_rates"):
        RecapOptimizerConfig(adam={})


def test_embedding_configs():
    large = RecapLargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {"name": "user", "num_embeddings": 10, "embedding_dim": 8, "pretrained": None, "vocab": None}
            ],
            "optimizer": {"init_learning_rate": 0.5, "learning_rate": {"constant": 0.25}},
            "tables_to_log": None,
        }
    )
    assert large.optimizer.learning_rate.constant == 0.25
    # Translated into the one embedding optimizer: SGD at init_learning_rate, following the schedule.
    (table_optimizer,) = large.table_optimizers().values()
    assert table_optimizer.sgd.lr == 0.5 and table_optimizer.learning_rate.constant == 0.25
    assert large.tables[0].data_type.value == "fp32"
    small = SmallEmbeddingsConfig.model_validate(
        {"tables": [{"name": "t", "num_embeddings": 3, "embedding_dim": 2, "index": 1}]}
    )
    assert small.tables[0].index == 1
    with pytest.raises(pydantic.ValidationError, match="extra"):
        SmallEmbeddingsConfig.model_validate({"tables": [], "unknown": 1})
