"""RecapBatch: labels picked by task name, description fields survive moves, and to_batch checks."""
from __future__ import annotations

import pytest
import torch

from tml.projects.home.recap.data.batch import RecapBatch, to_batch


def _inputs() -> dict:
    return {
        "continuous": torch.zeros(3, 2),
        "binary": torch.zeros(3, 2, dtype=torch.int64),
        "discrete": torch.zeros(3, 1, dtype=torch.int64),
        "b": torch.tensor([0, 1, 0]),
        "a": torch.tensor([1, 1, 0]),
        "meta__author_id": torch.tensor([7, 8, 9]),
        "author_embedding": torch.ones(3, 4),
    }


def test_labels_by_name_and_default_weights():
    batch = to_batch(_inputs(), task_names=["b", "a"])
    assert batch.labels.tolist() == [[0, 1], [1, 1], [0, 0]]
    assert batch.label("a").tolist() == [1, 1, 0] and batch.weight("a").tolist() == [1.0, 1.0, 1.0]
    assert batch.batch_size == 3 and batch.user_embedding.shape == (0, 0)
    with pytest.raises(KeyError, match="no label named 'c'; the batch has \\['b', 'a'\\]"):
        batch.label("c")
    assert "label_names" not in batch.as_dict()
    assert batch.to(torch.device("cpu")).label_names == ("b", "a")


def test_absent_dense_blocks_are_empty_and_one_source_per_entity():
    inputs = _inputs()
    del inputs["binary"], inputs["discrete"]
    batch = to_batch(inputs)  # data without binary or discrete features needs no placeholder columns
    assert batch.binary_features.shape == (3, 0) and batch.binary_features.dtype == torch.int64
    assert batch.discrete_features.shape == (3, 0)
    torch.testing.assert_close(batch.continuous_features, inputs["continuous"])
    with pytest.raises(ValueError, match="both 'author_embedding' and sparse ids 'meta__author_id' are inputs"):
        to_batch(_inputs(), sparse_feature_names=["meta__author_id"])


def test_label_names_must_match_label_columns():
    with pytest.raises(ValueError, match="labels has 2 columns but label_names names 1"):
        RecapBatch(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), None, torch.zeros(1, 2), label_names=("a",))
