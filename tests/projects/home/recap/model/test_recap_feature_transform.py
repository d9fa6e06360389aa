import json
import math

import numpy as np
import pytest
import torch

from tml.projects.home.recap.model.config import FeaturizationConfig
from tml.projects.home.recap.model.feature_statistics import (
    compute_feature_statistics,
    load_feature_statistics,
)
from tml.projects.home.recap.model.feature_transform import BatchRenorm1d, build_features_preprocessor

E = math.e
SHAPES = {"continuous": [-1, 4], "binary": [-1, 2], "discrete": [-1, 3]}
CONTINUOUS = torch.tensor(
    [
        [-(E - 1.0), float("nan"), E**2 - 1.0, 0.0],
        [float("inf"), float("-inf"), 10.0, -10.0],
    ]
)
BINARY = torch.tensor([[1, 0], [0, 1]])
DISCRETE = torch.tensor([[7, 8, 9], [1, 2, 3]])


def featurize(config: dict, continuous=CONTINUOUS) -> torch.Tensor:
    preprocessor = build_features_preprocessor(FeaturizationConfig.model_validate(config), SHAPES).eval()
    return preprocessor(continuous, BINARY, DISCRETE)


def test_log1p_abs_zeroes_non_finite_and_appends_binary():
    out = featurize({"log1p_abs_config": {}})
    expected = torch.tensor(
        [[-1.0, 0.0, 2.0, 0.0, 1.0, 0.0], [0.0, 0.0, math.log(11.0), -math.log(11.0), 0.0, 1.0]]
    )
    torch.testing.assert_close(out, expected)


def test_clip_log1p_abs_clips_before_the_log():
    out = featurize({"clip_log1p_abs_config": {"clip_magnitude": 3.0}, "feature_names_to_concat": []})
    expected = torch.tensor([[-1.0, 0.0, math.log(4.0), 0.0], [0.0, 0.0, math.log(4.0), -math.log(4.0)]])
    torch.testing.assert_close(out, expected)


def test_double_norm_log_clamps_after_log_and_layer_norms_the_whole_row():
    config = {"double_norm_log_config": {"clip_magnitude": 1.5}, "feature_names_to_concat": ["binary"]}
    out = featurize(config)
    assert out[0, :4].tolist() == pytest.approx([-1.0, 0.0, 1.5, 0.0])
    assert out[1, 2:4].tolist() == pytest.approx([1.5, -1.5])

    with_norm = featurize(
        {**config, "double_norm_log_config": {"clip_magnitude": 1.5, "layer_norm_config": {"epsilon": 0.0}}}
    )
    row = torch.tensor([-1.0, 0.0, 1.5, 0.0, 1.0, 0.0])
    torch.testing.assert_close(with_norm[0], (row - row.mean()) / row.std(unbiased=False))


def test_double_norm_log_batch_norm_uses_running_statistics_in_eval():
    config = {
        "double_norm_log_config": {
            "batch_norm_config": {"affine": True, "momentum": 0.5},
            "clip_magnitude": 100.0,
        }
    }
    preprocessor = build_features_preprocessor(FeaturizationConfig.model_validate(config), SHAPES)
    batch_norm = preprocessor.continuous_transform[2]
    batch_norm.running_mean.fill_(1.0)
    batch_norm.running_var.fill_(4.0)
    out = preprocessor.eval()(CONTINUOUS, BINARY)
    torch.testing.assert_close(out[0, 0], torch.tensor((-1.0 - 1.0) / math.sqrt(4.0 + 1e-5)))


def test_feature_names_to_concat_is_honoured():
    assert featurize({"log1p_abs_config": {}, "feature_names_to_concat": []}).shape == (2, 4)
    both = featurize({"log1p_abs_config": {}, "feature_names_to_concat": ["discrete", "binary"]})
    assert both[:, 4:].tolist() == [[7.0, 8.0, 9.0, 1.0, 0.0], [1.0, 2.0, 3.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match=r"feature_names_to_concat has \['sparse'\]"):
        featurize({"log1p_abs_config": {}, "feature_names_to_concat": ["sparse"]})


def test_no_featurization_keeps_values_but_zeroes_non_finite():
    preprocessor = build_features_preprocessor(None, SHAPES)
    out = preprocessor(CONTINUOUS, BINARY)
    assert out.shape == (2, 6)
    assert out[1].tolist() == [0.0, 0.0, 10.0, -10.0, 0.0, 1.0]


def test_layer_norm_axis_must_be_the_feature_axis():
    with pytest.raises(ValueError, match="axis must be -1"):
        featurize({"double_norm_log_config": {"layer_norm_config": {"axis": 0}}})


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isfinite(values), values, 0.0)
    return np.sign(values) * np.log1p(np.abs(values))


def test_feature_statistics_stream_equals_whole_data(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(n, 4)) * 50 for n in (3, 7, 1)]
    chunks[1][0, 1] = np.nan
    chunks[2][:, 3] = 5.0
    path = compute_feature_statistics(
        [chunks[0], torch.from_numpy(chunks[1]), chunks[2]], str(tmp_path / "stats.json")
    )
    document = json.loads((tmp_path / "stats.json").read_text())
    assert document["num_examples"] == 11 and document["num_features"] == 4
    everything = _signed_log1p(np.concatenate(chunks))
    statistics = load_feature_statistics(path)
    np.testing.assert_allclose(statistics.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(statistics.std, everything.std(axis=0), rtol=1e-10)


def test_z_score_log_standardises_with_the_analysis_file(tmp_path):
    data = np.array([[1.0, 0.0, 3.0, 7.0], [3.0, 0.0, 15.0, 7.0], [7.0, 0.0, 63.0, 7.0]])
    path = compute_feature_statistics([data], str(tmp_path / "stats.json"))
    config = {
        "z_score_log_config": {"analysis_path": path, "clip_magnitude": 1.0},
        "feature_names_to_concat": [],
    }
    out = featurize(config, continuous=torch.tensor([[1.0, 5.0, 15.0, 7.0]]))
    # log2-spaced data: column 0 has log values log 2, log 4, log 8.
    mean0 = math.log(4.0)
    std0 = math.sqrt(2.0 / 3.0) * math.log(2.0)
    assert out[0, 0].item() == pytest.approx(max(-1.0, (math.log(2.0) - mean0) / std0))
    assert out[0, 1].item() == 1.0  # zero std is treated as 1: log(6) = 1.79 clipped to 1
    assert out[0, 2].item() == pytest.approx(0.0, abs=1e-6)  # log(16) is column 2's mean
    assert out[0, 3].item() == 0.0  # constant column


def test_z_score_log_rejects_a_file_of_another_width(tmp_path):
    path = compute_feature_statistics([np.ones((2, 3))], str(tmp_path / "stats.json"))
    with pytest.raises(ValueError, match="statistics for 3 features but the model gets 4"):
        featurize({"z_score_log_config": {"analysis_path": path}})
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not a feature statistics file"):
        featurize({"z_score_log_config": {"analysis_path": str(tmp_path / "bad.json")}})


@pytest.mark.parametrize("normalisation", ["use_batch_norm", "use_renorm"])
def test_z_score_log_with_batch_normalisation_trains(tmp_path, normalisation):
    path = compute_feature_statistics(
        [np.random.default_rng(1).normal(size=(16, 4))], str(tmp_path / "s.json")
    )
    config = {"z_score_log_config": {"analysis_path": path, normalisation: True}}
    preprocessor = build_features_preprocessor(FeaturizationConfig.model_validate(config), SHAPES).train()
    out = preprocessor(torch.randn(32, 4) * 3 + 2, torch.zeros(32, 2, dtype=torch.long))
    out.sum().backward()
    assert out.shape == (32, 6) and torch.isfinite(out).all()


def test_batch_renorm_matches_hand_computation():
    renorm = BatchRenorm1d(2, momentum=0.5, r_max=100.0, d_max=100.0, affine=False)
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    running_std = math.sqrt(1.0 + 1e-5)
    # With unclipped r and d the training output is x / running_std (running mean 0, var 1).
    torch.testing.assert_close(renorm.train()(x), x / running_std)
    torch.testing.assert_close(renorm.running_mean, torch.tensor([1.0, 2.0]))  # 0.5 * batch mean
    torch.testing.assert_close(renorm.running_var, torch.tensor([1.0, 2.5]))  # 0.5 * 1 + 0.5 * var
    torch.testing.assert_close(renorm.eval()(x)[:, 0], (x[:, 0] - 1.0) / math.sqrt(1.0 + 1e-5))
