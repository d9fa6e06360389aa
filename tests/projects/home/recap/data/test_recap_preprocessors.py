"""Each preprocessor against hand-computed outputs, and the fixed order they run in."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tml.projects.home.recap.data import config as data_config
from tml.projects.home.recap.data import preprocessors as pp
from tml.projects.home.recap.data.assembly import mask_mantissa_


def test_sampling_rate_weights_undo_the_sampling():
    inputs = {"a": torch.tensor([1, 0, 1]), "b": torch.tensor([0, 1, 1])}
    tasks = {"a": data_config.TaskData(pos_downsampling_rate=0.5, neg_downsampling_rate=0.1), "b": data_config.TaskData()}
    weights = pp.sampling_rate_weights(inputs, tasks)
    assert torch.equal(weights, torch.tensor([[2.0, 1.0], [10.0, 1.0], [2.0, 1.0]]))
    assert pp.sampling_rate_weights(inputs, {"a": data_config.TaskData(), "b": data_config.TaskData()}) is None


def test_downsample_negatives_keeps_positives_first_and_reweights_negatives():
    # The original's docstring example: fav [1, 0, 0, 0] with multiplier 2 -> fav [1, 0], weights [1, 3].
    stage = pp.DownsampleNegatives(
        data_config.DownsampleNegatives(batch_multiplier=2, engagements_list=["fav"], num_engagements=2)
    )
    out = stage({"fav": torch.tensor([0, 1, 0, 0]), "x": torch.tensor([10.0, 11.0, 12.0, 13.0])})
    assert torch.equal(out["fav"], torch.tensor([1, 0]))
    assert torch.equal(out["x"], torch.tensor([11.0, 10.0]))
    assert torch.equal(out["weights"], torch.tensor([[1.0, 1.0], [3.0, 3.0]]))


def test_downsample_negatives_union_of_engagements_and_existing_weights():
    stage = pp.DownsampleNegatives(
        data_config.DownsampleNegatives(batch_multiplier=3, engagements_list=["a", "b"], num_engagements=2)
    )
    inputs = {
        "a": torch.tensor([0, 0, 1, 0, 0, 0]),
        "b": torch.tensor([0, 0, 0, 0, 1, 0]),
        "weights": torch.tensor([[1.0, 2.0]] * 6),
        "row": torch.arange(6),
    }
    out = stage(inputs)  # 2 positives of 6 rows, batch 2: negatives weigh (6 - 2) / (2 - 2) -> 0 (no negatives kept)
    assert torch.equal(out["row"], torch.tensor([2, 4]))
    assert torch.equal(out["weights"], torch.tensor([[1.0, 2.0], [1.0, 2.0]]))
    stage_one = pp.DownsampleNegatives(
        data_config.DownsampleNegatives(batch_multiplier=3, engagements_list=["a"], num_engagements=2)
    )
    out = stage_one(inputs)  # 1 positive, batch 2: negatives weigh (6 - 1) / (2 - 1) = 5
    assert torch.equal(out["row"], torch.tensor([2, 0]))
    assert torch.equal(out["weights"], torch.tensor([[1.0, 2.0], [5.0, 10.0]]))


def test_truncate_then_slice_with_npy_masks(tmp_path):
    mask_path = tmp_path / "mask.npy"
    np.save(mask_path, np.array([0, 1, 0, 1]))
    stage = pp.TruncateAndSlice(
        data_config.TruncateAndSlice(
            continuous_feature_truncation=4, binary_feature_truncation=3, continuous_feature_mask_path=str(mask_path)
        )
    )
    inputs = {"continuous": torch.arange(12.0).reshape(2, 6), "binary": torch.arange(10).reshape(2, 5)}
    out = stage(inputs)
    assert torch.equal(out["continuous"], torch.tensor([[1.0, 3.0], [7.0, 9.0]]))
    assert torch.equal(out["binary"], torch.tensor([[0, 1, 2], [5, 6, 7]]))
    assert stage.kept_columns("continuous", 6).tolist() == [1, 3]


def test_mask_longer_than_truncated_width_is_an_error(tmp_path):
    mask_path = tmp_path / "mask.npy"
    np.save(mask_path, np.array([0, 0, 0, 0, 1]))
    stage = pp.TruncateAndSlice(
        data_config.TruncateAndSlice(continuous_feature_truncation=3, continuous_feature_mask_path=str(mask_path))
    )
    with pytest.raises(ValueError, match="selects column 4 but the feature has only 3 columns after truncation"):
        stage({"continuous": torch.zeros(1, 6)})


@pytest.mark.parametrize(
    "dtype, expected",
    [
        ("bfloat16", torch.bfloat16),
        ("bool", torch.bool),
        ("float32", torch.float32),
        ("float16", torch.float16),
        ("uint8", torch.uint8),
    ],
)
def test_downcast_every_data_type(dtype, expected):
    stage = pp.DownCast(data_config.DownCast(features={"binary": dtype}))
    out = stage({"binary": torch.tensor([[0, 1, 2]]), "other": torch.tensor([1])})
    assert out["binary"].dtype == expected
    assert out["binary"].tolist() == torch.tensor([[0, 1, 2]]).to(expected).tolist()
    assert out["other"].dtype == torch.int64


def test_downcast_of_unknown_feature_names_it():
    stage = pp.DownCast(data_config.DownCast(features={"nope": "bool"}))
    with pytest.raises(KeyError, match="downcast needs feature 'nope'"):
        stage({"binary": torch.zeros(1)})


def test_rectify_labels_window():
    config = data_config.RectifyLabels(
        label_rectification_window_in_hours=1.0,
        served_timestamp_field="served",
        impressed_timestamp_field="impressed",
        label_to_engaged_timestamp_field={"fav": "fav_time"},
    )
    inputs = {
        "served": torch.tensor([0, 0, 0, 0, 100]),
        "impressed": torch.tensor([1000, 3_600_000, 1000, 1000, 3_600_099]),
        "fav_time": torch.tensor([1000, 1000, 3_600_000, 100, 200]),
        "fav": torch.tensor([1, 1, 1, 0, 1]),
    }
    # kept: in window; impression at the window edge; engagement at the edge; negative stays 0; just inside.
    assert pp.RectifyLabels(config)(inputs)["fav"].tolist() == [1, 0, 0, 0, 1]


def test_extract_features():
    config = data_config.ExtractFeatures(
        extract_feature_table=[
            {"name": "third", "source_tensor": "continuous", "index": 2},
            {"name": "last_discrete", "source_tensor": "discrete", "index": -1},
        ]
    )
    stage = pp.ExtractFeatures(config)
    out = stage({"continuous": torch.arange(8.0).reshape(2, 4), "discrete": torch.tensor([[5, 6], [7, 8]])})
    assert out["third"].tolist() == [2.0, 6.0] and out["last_discrete"].tolist() == [6, 8]
    bad = pp.ExtractFeatures(data_config.ExtractFeatures(extract_feature_table=[{"name": "x", "source_tensor": "continuous", "index": 4}]))
    with pytest.raises(IndexError, match="index 4 is outside 'continuous' of shape \\(2, 4\\)"):
        bad({"continuous": torch.zeros(2, 4)})


def test_mask_mantissa_zeroes_low_bits():
    value = 1.0 + 2.0**-23 + 2.0**-10
    out = mask_mantissa_(torch.tensor([value, -value], dtype=torch.float32), 13)
    assert out.tolist() == [1.0 + 2.0**-10, -(1.0 + 2.0**-10)]


def test_build_preprocess_fixed_order_inference_and_empty():
    config = data_config.Preprocess(
        extract_features={"extract_feature_table": []},
        downcast={"features": {}},
        truncate_and_slice={"continuous_feature_truncation": 2},
        downsample_negatives={"num_engagements": 1},
        rectify_labels={"served_timestamp_field": "s", "impressed_timestamp_field": "i", "label_to_engaged_timestamp_field": {}},
    )
    pipeline = pp.build_preprocess(config, mode="train")
    assert [type(stage).__name__ for stage in pipeline.stages] == [
        "DownsampleNegatives", "TruncateAndSlice", "DownCast", "RectifyLabels", "ExtractFeatures"
    ]
    # Inference keeps the stages that shape the model's inputs, in the same order.
    inference = pp.build_preprocess(config, mode="inference")
    assert [type(stage).__name__ for stage in inference.stages] == ["TruncateAndSlice", "DownCast"]
    assert pp.build_preprocess(data_config.Preprocess(rectify_labels=config.rectify_labels), mode="inference") is None
    with pytest.raises(ValueError, match="configures no preprocessor"):
        pp.build_preprocess(data_config.Preprocess())
