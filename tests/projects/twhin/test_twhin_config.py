import pydantic
import pytest

from tml.core.config import ConfigError, load_config_from_yaml
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.models.config import Operator, TwhinModelConfig
from original_configs import original_file
from twhin_helpers import CONFIG_DIR, model_config
PROJECT_CONFIGS = ["local.yaml", "nations.yaml", "movielens.yaml"]


def test_original_local_yaml_loads_unchanged():
    config = load_config_from_yaml(TwhinConfig, str(original_file("twhin_local.yaml")))
    assert config.training.save_dir == "/tmp/model"
    assert [t.name for t in config.model.embeddings.tables] == ["user", "tweet"]
    assert config.model.table_sizes == {"user": 424_241, "tweet": 72_543}
    assert [r.name for r in config.model.relations] == ["fav", "reply", "retweet", "magic_recs"]
    assert all(r.operator == Operator.TRANSLATION for r in config.model.relations)
    assert config.model.translation_optimizer.sgd.lr == 0.05
    assert config.model.embeddings.tables[1].optimizer.learning_rate.constant == 0.005
    assert (config.train_data.limit, config.train_data.offset) == (9990, None)
    assert (config.validation_data.limit, config.validation_data.offset) == (10, 9990)
    assert config.train_data.in_batch_negatives == 10 and config.train_data.global_negatives == 0


@pytest.mark.parametrize("name", PROJECT_CONFIGS)
def test_project_configs_load(name):
    config = load_config_from_yaml(TwhinConfig, str(CONFIG_DIR / name))
    assert config.validation_data is not None


def test_tables_must_share_dim():
    with pytest.raises(pydantic.ValidationError, match="same embedding_dim"):
        TwhinModelConfig.model_validate({
            "embeddings": {"tables": [
                {"name": "a", "num_embeddings": 4, "embedding_dim": 8, "data_type": "fp32", "optimizer": {"sgd": {"lr": 1}}},
                {"name": "b", "num_embeddings": 4, "embedding_dim": 4, "data_type": "fp32", "optimizer": {"sgd": {"lr": 1}}},
            ]},
            "relations": [{"name": "r", "lhs": "a", "rhs": "b"}],
            "translation_optimizer": {"sgd": {"lr": 1}},
        })


def test_relation_must_name_tables():
    with pytest.raises(pydantic.ValidationError, match=r"relations\[0\] \('fav'\) rhs 'post' is not a table"):
        model_config(relations=[("fav", "user", "post"), ("follow", "user", "user")])


def test_unknown_operator_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="operator"):
        model_config(operators=("transE", "dot"))


def test_complex_needs_even_dim():
    # Any odd dim is refused earlier: the fused kernels need a multiple of 4.
    with pytest.raises(pydantic.ValidationError, match="even embedding_dim|multiple of 4"):
        model_config(operators=("complex_diagonal", "dot"), dim=7)


def test_unknown_field_in_data_config(tmp_path):
    text = open(str(original_file("twhin_local.yaml"))).read().replace("  limit: 9990\n", "  limit: 9990\n  limt: 3\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="limt"):
        load_config_from_yaml(TwhinConfig, str(path))


def test_in_batch_negatives_cannot_exceed_the_chunk():
    from tml.projects.twhin.data.config import TwhinDataConfig

    with pytest.raises(ValueError, match=r"in_batch_negatives \(60\) .* cannot exceed chunk_size \(50\)"):
        TwhinDataConfig(data_root="x", per_replica_batch_size=100, in_batch_negatives=60, chunk_size=50)
    assert TwhinDataConfig(data_root="x", per_replica_batch_size=100, in_batch_negatives=50).chunk_size is None


def test_loss_and_relation_awareness_are_configured_on_the_model():
    config = model_config().model_validate({**model_config().model_dump(), "relation_aware": True,
                                            "loss": {"kind": "softmax", "regularizer": "n3",
                                                     "regularization_weight": 0.01}})
    assert config.relation_aware and config.loss.kind.value == "softmax"
    with pytest.raises(ValueError, match="kind"):
        model_config().model_validate({**model_config().model_dump(), "loss": {"kind": "hinge"}})
