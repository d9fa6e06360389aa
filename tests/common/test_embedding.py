import pydantic
import pytest
import torch
import yaml
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.modules.embedding import (
    DataType,
    EmbeddingBagConfig,
    LargeEmbeddings,
    LargeEmbeddingsConfig,
    concat_by_feature,
)
from tml.common.testing_utils import run_on_ranks
from tml.core.optimizers import apply_embedding_optimizers

from rank_fns_embedding import pooled_under_table_wise
from tiny_recsys import TABLES

# The embeddings section of the original TwHIN config (projects/twhin/config/local.yaml).
TWHIN_TABLES = """
tables:
  - name: user
    num_embeddings: 424_241
    embedding_dim: 4
    data_type: fp32
    optimizer:
      sgd:
        lr: 0.01
      learning_rate:
        constant: 0.01
  - name: tweet
    num_embeddings: 72_543
    embedding_dim: 4
    data_type: fp32
    optimizer:
      sgd:
        lr: 0.005
      learning_rate:
        constant: 0.005
"""


def _config(*tables):
    return LargeEmbeddingsConfig(
        tables=[
            EmbeddingBagConfig(name=name, num_embeddings=rows, embedding_dim=dim, data_type=kind, optimizer={"adagrad": {"lr": 0.1}})
            for name, rows, dim, kind in tables
        ]
    )


def test_the_original_twhin_tables_parse():
    config = LargeEmbeddingsConfig.model_validate(yaml.safe_load(TWHIN_TABLES))
    assert [(t.name, t.num_embeddings, t.data_type) for t in config.tables] == [
        ("user", 424_241, DataType.FP32),
        ("tweet", 72_543, DataType.FP32),
    ]
    assert config.tables[1].optimizer.sgd.lr == 0.005 and config.tables[0].pretrained is None


def test_table_names_must_be_unique():
    with pytest.raises(pydantic.ValidationError, match=r"embedding table names must be unique; repeated: \['a'\]"):
        _config(("a", 3, 4, "fp32"), ("a", 5, 4, "fp32"))


def test_every_table_needs_an_optimizer_and_defaults_to_fp32():
    table = EmbeddingBagConfig(name="a", num_embeddings=3, embedding_dim=4)
    assert table.data_type == DataType.FP32 and table.optimizer is None
    with pytest.raises(pydantic.ValidationError, match=r"embedding tables \['a'\] have no optimizer"):
        LargeEmbeddingsConfig(tables=[table])
    with pytest.raises(pydantic.ValidationError, match="at least one table"):
        LargeEmbeddingsConfig(tables=[])


def test_tables_to_log_must_name_tables():
    config = LargeEmbeddingsConfig.model_validate(
        {**yaml.safe_load(TWHIN_TABLES), "tables_to_log": ["user", "model.ebc.embedding_bags.tweet.weight"]}
    )
    assert config.tables_to_log == ["user", "model.ebc.embedding_bags.tweet.weight"]
    with pytest.raises(pydantic.ValidationError, match=r"tables_to_log \['usr'\] name no table; give table names among \['user', 'tweet'\]"):
        LargeEmbeddingsConfig.model_validate({**yaml.safe_load(TWHIN_TABLES), "tables_to_log": ["usr"]})


def test_tables_are_built_on_the_meta_device_by_default_with_their_data_type():
    embeddings = LargeEmbeddings(_config(("a", 3, 4, "fp16"), ("b", 5, 8, "fp32")))
    weights = embeddings.state_dict()
    assert weights["ebc.embedding_bags.a.weight"].device.type == "meta"
    assert weights["ebc.embedding_bags.a.weight"].dtype == torch.float16
    assert weights["ebc.embedding_bags.b.weight"].shape == (5, 8)
    assert embeddings.feature_names == ["a", "b"] and embeddings.output_dim == 12


def test_pooled_embeddings_sum_each_feature_in_table_order():
    embeddings = LargeEmbeddings(_config(("a", 3, 4, "fp32"), ("b", 2, 4, "fp32")), device="cpu")
    with torch.no_grad():
        embeddings.ebc.embedding_bags["a"].weight.copy_(torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]]).repeat(1, 2))
        embeddings.ebc.embedding_bags["b"].weight.copy_(torch.tensor([[3.0], [5.0]]).repeat(1, 4))
    # Example 0: a = {0, 2}, b = {1}; example 1: a = {}, b = {0, 1, 1}.
    features = KeyedJaggedTensor.from_lengths_sync(
        keys=["a", "b"], values=torch.tensor([0, 2, 1, 0, 1, 1]), lengths=torch.tensor([2, 0, 1, 3])
    )
    pooled = embeddings.pooled_embeddings(features)
    assert pooled.tolist() == [[101.0, 202.0, 101.0, 202.0] + [5.0] * 4, [0.0] * 4 + [13.0] * 4]
    assert embeddings(features).keys() == ["a", "b"]
    with pytest.raises(ValueError, match=r"sparse_features lacks the feature\(s\) \['b'\]"):
        embeddings.pooled_embeddings(KeyedJaggedTensor.from_lengths_sync(keys=["a"], values=torch.tensor([0]), lengths=torch.tensor([1, 0])))


def test_apply_embedding_optimizers_marks_every_table():
    embeddings = LargeEmbeddings(
        LargeEmbeddingsConfig.model_validate(yaml.safe_load(TWHIN_TABLES.replace("424_241", "8").replace("72_543", "8")))
    )
    apply_embedding_optimizers(embeddings, embeddings.config.table_optimizers())
    for name, lr in (("user", 0.01), ("tweet", 0.005)):
        weight = embeddings.ebc.embedding_bags[name].weight
        assert weight._optimizer_classes == [torch.optim.SGD] and weight._optimizer_kwargs[0]["lr"] == lr


def test_concat_by_feature_names_missing_features():
    embeddings = LargeEmbeddings(_config(("a", 3, 4, "fp32")), device="cpu")
    features = KeyedJaggedTensor.from_lengths_sync(keys=["a"], values=torch.tensor([0]), lengths=torch.tensor([1]))
    with pytest.raises(KeyError, match=r"pooled embeddings lack features \['z'\]; they have \['a'\]"):
        concat_by_feature(embeddings(features), ["a", "z"])


@pytest.mark.slow
def test_output_follows_config_order_under_a_two_rank_table_wise_plan():
    for result in run_on_ranks(pooled_under_table_wise, 2, timeout_s=120):
        # The sharded KeyedTensor comes in another order, so reading it positionally would be wrong...
        assert result["keys"] != TABLES and sorted(result["keys"]) == TABLES
        assert not torch.allclose(result["naive"], result["expected"])
        # ...while the by-name concatenation equals the unsharded module's output.
        torch.testing.assert_close(result["by_name"], result["expected"])
        torch.testing.assert_close(result["method"], result["expected"])
