"""A tiny trainable Heavy Ranker setup for the scoring and export tests: schema, YAML config and
Parquet files whose candidates come in requests (several rows per user id).

The config exercises what scoring must get right: a large embedding table over tweet ids (sparse
input), TwHIN-style embedding input, truncate_and_slice (the model sees fewer continuous columns
than the files hold) and two tasks that have April 2023 engagement weights.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import yaml

from tml.core.config import load_config_from_yaml
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
from tml.projects.home.recap.data.segdense import load_segdense_schema

TASKS = ("recap.engagement.is_favorited", "recap.engagement.is_replied")
NUM_CONTINUOUS, KEPT_CONTINUOUS, NUM_BINARY, NUM_DISCRETE, EMBEDDING_WIDTH = 5, 4, 3, 2, 4
NUM_TWEETS = 40
SCHEMA = [
    {"feature_name": "cont_vals", "dtype": "float_list", "length": NUM_CONTINUOUS},
    {"feature_name": "bin_vals", "dtype": "int64_list", "length": NUM_BINARY},
    {"feature_name": "disc_vals", "dtype": "int64_list", "length": NUM_DISCRETE},
    {"feature_name": "user_emb", "dtype": "float_list", "length": EMBEDDING_WIDTH},
    {"feature_name": "meta.user_id", "dtype": "int64_list", "length": 1},
    {"feature_name": "meta.tweet_id", "dtype": "int64_list", "length": 1},
    *({"feature_name": task, "dtype": "int64_list", "length": 1} for task in TASKS),
]


def config_document(schema_path: str, train_glob: str, save_dir: str, steps: int = 12) -> dict[str, Any]:
    return {
        "training": {
            "num_train_steps": steps,
            "checkpoint_every_n": steps,
            "train_log_every_n": steps,
            "eval_log_every_n": steps,
            "save_dir": save_dir,
        },
        "model": {
            "multi_task_type": "share_all",
            "featurization_config": {
                # No BatchNorm: under DDP each rank's running statistics follow its own last batch,
                # so ranks would disagree and the checkpoint holds one rank's.
                "double_norm_log_config": {"layer_norm_config": {"epsilon": 0.001}}
            },
            "large_embeddings": {
                "tables": [{"name": "tweet_ids", "num_embeddings": NUM_TWEETS, "embedding_dim": 4}],
                "optimizer": {"init_learning_rate": 0.5},
            },
            "backbone": {
                "mask_net_config": {
                    "use_parallel": True,
                    "mask_blocks": [{"aggregation_size": 8, "output_size": 6, "input_layer_norm": True}],
                    "mlp": {"layer_sizes": [6], "final_layer_activation": True},
                }
            },
            "tasks": {
                task: {"mlp_config": {"layer_sizes": [4, 1]}} for task in TASKS
            },
        },
        "train_data": {
            "global_batch_size": 16,
            "inputs": train_glob,
            "examples_shuffle_buffer_size": 64,
            # No read-ahead thread: one still running at interpreter exit made a spawned rank abort
            # ("terminate called without an active exception") after it had finished its work.
            "prefetch": 0,
            "seg_dense_schema": {
                "schema_path": schema_path,
                "renamed_features": {
                    "continuous": "cont_vals",
                    "binary": "bin_vals",
                    "discrete": "disc_vals",
                    "user_embedding": "user_emb",
                    "tweet_ids": "meta.tweet_id",
                },
            },
            # The second task's data is down-sampled, so calibration differs from the raw probability.
            "tasks": {TASKS[0]: {}, TASKS[1]: {"pos_downsampling_rate": 1.0, "neg_downsampling_rate": 0.5}},
            "preprocess": {"truncate_and_slice": {"continuous_feature_truncation": KEPT_CONTINUOUS}},
        },
        "optimizer": {"single_task_learning_rate": {"constant": 0.02}, "adam": {}},
    }


def candidate_columns(rows: int, seed: int, num_users: int = 7) -> dict[str, np.ndarray]:
    """Random candidates; labels depend on the features so a few training steps learn something."""
    rng = np.random.default_rng(seed)
    continuous = rng.normal(size=(rows, NUM_CONTINUOUS)).astype(np.float32) * 3
    tweets = rng.integers(0, NUM_TWEETS, rows)
    favorited = (continuous[:, 0] + (tweets % 2) > 0.5).astype(np.int64)
    replied = (continuous[:, 1] > 1.0).astype(np.int64)
    return {
        "cont_vals": continuous,
        "bin_vals": rng.integers(0, 2, (rows, NUM_BINARY)),
        "disc_vals": rng.integers(0, 5, (rows, NUM_DISCRETE)),
        "user_emb": rng.normal(size=(rows, EMBEDDING_WIDTH)).astype(np.float32),
        "meta.user_id": 1000 + rng.integers(0, num_users, rows),
        "meta.tweet_id": tweets,
        TASKS[0]: favorited,
        TASKS[1]: replied,
    }


def write_candidates(path: str, schema_path: str, rows: int, seed: int, row_group_rows: int = 1000) -> dict[str, np.ndarray]:
    columns = candidate_columns(rows, seed)
    features = list(load_segdense_schema(schema_path).values())
    with SegDenseParquetWriter(path, features) as writer:
        for start in range(0, rows, row_group_rows):
            writer.write({name: values[start: start + row_group_rows] for name, values in columns.items()})
    return columns


def make_setup(folder: str, train_rows: int = 256, candidate_rows: int = 45, steps: int = 12) -> dict[str, str]:
    """Writes schema, config, training files and candidate files (two files, small row groups)."""
    os.makedirs(folder, exist_ok=True)
    schema_path = os.path.join(folder, "segdense.json")
    with open(schema_path, "w") as stream:
        json.dump({"schema": SCHEMA}, stream)
    for index in range(2):
        write_candidates(os.path.join(folder, f"train-{index}.parquet"), schema_path, train_rows // 2, seed=index)
    write_candidates(os.path.join(folder, "candidates-0.parquet"), schema_path, candidate_rows - 20, seed=10, row_group_rows=10)
    write_candidates(os.path.join(folder, "candidates-1.parquet"), schema_path, 20, seed=11, row_group_rows=7)
    config_path = os.path.join(folder, "config.yaml")
    document = config_document(schema_path, os.path.join(folder, "train-*.parquet"), os.path.join(folder, "run"), steps)
    with open(config_path, "w") as stream:
        yaml.safe_dump(document, stream)
    return {
        "folder": folder,
        "config_path": config_path,
        "schema_path": schema_path,
        "candidates": os.path.join(folder, "candidates-*.parquet"),
        "save_dir": os.path.join(folder, "run"),
    }


def load_setup_config(config_path: str) -> RecapConfig:
    return load_config_from_yaml(RecapConfig, config_path)
