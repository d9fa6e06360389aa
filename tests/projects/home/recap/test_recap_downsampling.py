"""Down-sampled training data, declared as a user declares it (train_data.tasks rates), gives
calibrated probabilities that match the true rate on un-sampled held-out data, in both modes of
`model.downsampling_correction`. The original corrected twice and under-predicted (spec B18)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tml.common import device as device_lib
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
from tml.projects.home.recap.data.segdense import load_segdense_schema
from tml.projects.home.recap.job import run

TASK = "clicked"
NEG_RATE = 0.1
WEIGHTS = np.array([0.8, -0.5, 0.3, 0.0])
BIAS = -3.2  # about a 6% positive rate
HELD_OUT_ROWS = 8000


def _probability(features: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(features @ WEIGHTS + BIAS)))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, float]:
    """Down-sampled training rows and un-sampled held-out rows; returns (folder, true held-out mean p)."""
    folder = tmp_path_factory.mktemp("downsampled")
    schema = {"schema": [
        {"feature_name": "dense", "dtype": "float_list", "length": 4},
        {"feature_name": "flags", "dtype": "int64_list", "length": 2},
        {"feature_name": "codes", "dtype": "int64_list", "length": 2},
        {"feature_name": TASK, "dtype": "int64_list", "length": 1},
    ]}
    (folder / "segdense.json").write_text(json.dumps(schema))
    features = list(load_segdense_schema(str(folder / "segdense.json")).values())
    rng = np.random.default_rng(0)

    def rows(count: int, down_sample: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = rng.normal(size=(count, 4)).astype(np.float32)
        p = _probability(x.astype(np.float64))
        y = (rng.random(count) < p).astype(np.int64)
        keep = (y == 1) | (rng.random(count) < NEG_RATE) if down_sample else np.ones(count, bool)
        zeros = np.zeros((int(keep.sum()), 2), np.int64)
        return {"dense": x[keep], "flags": zeros, "codes": zeros, TASK: y[keep]}, p[keep]

    train, _ = rows(40_000, down_sample=True)
    held_out, p = rows(HELD_OUT_ROWS, down_sample=False)
    for name, columns in (("train", train), ("held_out", held_out)):
        with SegDenseParquetWriter(str(folder / f"{name}.parquet"), features) as writer:
            writer.write(columns)
    return folder, float(p.mean())


def _config(folder: Path, correction: str) -> RecapConfig:
    data = {
        "seg_dense_schema": {
            "schema_path": str(folder / "segdense.json"),
            "renamed_features": {"continuous": "dense", "binary": "flags", "discrete": "codes"},
        },
    }
    lr = {"linear_ramp_to_cosine": {"learning_rate": 0.02, "final_learning_rate": 0.001,
                                    "num_ramp_steps": 20, "final_num_steps": 500}}
    return RecapConfig.model_validate({
        "training": {"num_train_steps": 500, "checkpoint_every_n": 500, "eval_log_every_n": 500,
                     "train_log_every_n": 500, "num_eval_steps": -1, "save_dir": str(folder / correction)},
        "model": {"downsampling_correction": correction,
                  "tasks": {TASK: {"mlp_config": {"layer_sizes": [8, 1]}}}},
        "train_data": {**data, "inputs": str(folder / "train.parquet"), "global_batch_size": 128,
                       "examples_shuffle_buffer_size": 4096,
                       "tasks": {TASK: {"pos_downsampling_rate": 1.0, "neg_downsampling_rate": NEG_RATE}}},
        "validation_data": {"held_out": {**data, "inputs": str(folder / "held_out.parquet"),
                                         "global_batch_size": 1000, "tasks": {TASK: {}}}},
        "optimizer": {"adam": {}, "single_task_learning_rate": lr},
    })


@pytest.mark.parametrize("correction", ["calibration", "loss_weights"])
def test_calibrated_mean_matches_the_true_rate_on_unsampled_held_out_rows(data, correction):
    folder, true_mean = data
    try:
        results = run(_config(folder, correction))["held_out"]
    finally:
        device_lib.teardown()
    # pctr: the mean calibrated probability over all held-out rows (weight 1: not down-sampled)
    assert results[f"pctr/{TASK}"] == pytest.approx(true_mean, rel=0.05)
    assert results[f"auroc/{TASK}"] > 0.7
