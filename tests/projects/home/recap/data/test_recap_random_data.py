"""Random data: N examples in M files, binary labels near their base rates that the features predict."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from recap_data_fixtures import make_config, write_schema

from tml.projects.home.recap.data.generate_random_data import generate_random_data, main
from tml.projects.home.recap.data.random_features import solve_bias


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fit_auc(features: np.ndarray, labels: np.ndarray) -> float:
    design = np.column_stack([features, np.ones(len(features))])
    coefficients, *_ = np.linalg.lstsq(design, labels.astype(np.float64), rcond=None)
    return _auc(design @ coefficients, labels)


def test_solve_bias_hits_the_rate():
    scores = np.random.default_rng(0).standard_normal(10_000) * 2
    bias = solve_bias(scores, 0.05)
    assert (1 / (1 + np.exp(-(scores + bias)))).mean() == pytest.approx(0.05, abs=1e-6)


def test_files_rates_and_learnable_labels(tmp_path):
    schema = write_schema(str(tmp_path))
    config = make_config(
        schema, f"{tmp_path}/data/*.parquet",
        preprocess={"truncate_and_slice": {"continuous_feature_truncation": 2, "binary_feature_truncation": 3}},
    )
    paths = generate_random_data(
        config, str(tmp_path / "data"), n_examples=6000, num_files=3, base_rate=0.2,
        task_base_rates={"task.b": 0.05}, seed=1, rows_per_row_group=1000,
    )
    assert len(paths) == 3 and all(pq.ParquetFile(p).metadata.num_row_groups == 2 for p in paths)
    table = pq.read_table(paths)
    assert table.num_rows == 6000
    labels_a = table.column("task.a").to_numpy()
    labels_b = table.column("task.b").to_numpy()
    assert set(np.unique(labels_a)) == {0, 1} and set(np.unique(labels_b)) == {0, 1}
    assert labels_a.mean() == pytest.approx(0.2, abs=0.03)
    assert labels_b.mean() == pytest.approx(0.05, abs=0.015)
    continuous = np.stack(table.column("cont_vals").to_numpy(zero_copy_only=False))
    binary = np.stack(table.column("bin_vals").to_numpy(zero_copy_only=False))
    assert set(np.unique(binary)) == {0, 1}
    kept = np.column_stack([continuous[:, :2], binary[:, :3]])
    dropped = np.column_stack([continuous[:, 2:], binary[:, 3:]])
    assert _fit_auc(kept, labels_a) > 0.75  # the signal lives in the columns the model keeps
    assert _fit_auc(kept, labels_b) > 0.75
    assert _fit_auc(dropped, labels_a) < 0.56


def test_cli_writes_next_to_the_inputs_glob(tmp_path):
    schema = write_schema(str(tmp_path))
    config_path = tmp_path / "config.yaml"
    config = make_config(schema, f"{tmp_path}/generated/*.parquet").model_dump(mode="json")
    config_path.write_text(yaml.safe_dump({"train_data": config, "model": {"ignored": True}}))
    main(["--config_path", str(config_path), "--n_examples", "50", "--num_files", "2", "--seed", "3"])
    files = sorted((tmp_path / "generated").glob("*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [25, 25]


def test_bad_arguments(tmp_path):
    config = make_config(write_schema(str(tmp_path)), f"{tmp_path}/d/*.parquet")
    with pytest.raises(ValueError, match="--task_base_rate names 'nope', which is not a task"):
        generate_random_data(config, str(tmp_path / "d"), 10, task_base_rates={"nope": 0.1})
    with pytest.raises(ValueError, match="base rates must be in \\(0, 1\\)"):
        generate_random_data(config, str(tmp_path / "d"), 10, base_rate=1.0)
