"""The recap input spec: widths, sparse feature names and label names from the config alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from recap_data_fixtures import TASKS, make_config, write_schema

from tml.projects.home.recap.data.input_spec import input_spec
from tml.projects.home.recap.embedding.config import RecapLargeEmbeddingsConfig


class _Model:  # the one field of a model config the spec reads
    large_embeddings = RecapLargeEmbeddingsConfig.model_validate(
        {"tables": [{"name": "ids.varlen", "num_embeddings": 8, "embedding_dim": 4}], "optimizer": {"init_learning_rate": 0.1}}
    )


def test_widths_follow_truncation_and_mask_and_names_come_from_the_config(tmp_path):
    schema = write_schema(str(tmp_path))
    mask = tmp_path / "mask.npy"
    np.save(mask, np.array([1, 0, 1, 1]))  # keeps 3 of the 4 columns left after truncation
    config = make_config(schema, "x/*.parquet", preprocess={"truncate_and_slice": {
        "continuous_feature_truncation": 4, "continuous_feature_mask_path": str(mask)}})
    spec = input_spec(config, _Model())
    assert spec.shapes["continuous_features"] == torch.Size([-1, 3])
    assert spec.shapes["binary_features"] == torch.Size([-1, 4])
    assert spec.shapes["user_embedding"] == torch.Size([-1, 2])
    assert spec.shapes["labels"] == torch.Size([-1, len(TASKS)]) and "labels" not in spec.feature_shapes
    assert spec.sparse_feature_names == ("ids.varlen",) and spec.label_names == TASKS
    assert "labels" not in input_spec(config, with_labels=False).shapes
    assert input_spec(config).sparse_feature_names == ()


def test_a_variable_length_dense_feature_is_refused(tmp_path):
    schema = write_schema(str(tmp_path))
    config = make_config(schema, "x/*.parquet")
    renames = {**config.seg_dense_schema.renamed_features, "continuous": "ids.varlen"}
    segdense = config.seg_dense_schema.model_copy(update={"renamed_features": renames})
    with pytest.raises(ValueError, match="feature 'continuous' .* has variable length"):
        input_spec(config.model_copy(update={"seg_dense_schema": segdense}))
