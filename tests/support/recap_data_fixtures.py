"""A tiny segdense schema and Parquet files whose rows carry their own id, for recap data tests."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np

from tml.projects.home.recap.data.arrow_columns import JaggedColumn
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
from tml.projects.home.recap.data.segdense import load_segdense_schema

TASKS = ("task.a", "task.b")
SCHEMA = [
    {"feature_name": "cont_vals", "dtype": "float_list", "length": 6},
    {"feature_name": "bin_vals", "dtype": "int64_list", "length": 4},
    {"feature_name": "disc_vals", "dtype": "int64_list", "length": 3},
    {"feature_name": "user_emb", "dtype": "float_list", "length": 2},
    {"feature_name": "meta.row_id", "dtype": "int64_list", "length": 1},
    {"feature_name": "ids.varlen", "dtype": "int64_list", "length": -1},
    {"feature_name": "task.a", "dtype": "int64_list", "length": 1},
    {"feature_name": "task.b", "dtype": "int64_list", "length": 1},
    {"feature_name": "unused.text", "dtype": "bytes_list", "length": 1},
]
RENAMES = {
    "continuous": "cont_vals",
    "binary": "bin_vals",
    "discrete": "disc_vals",
    "user_embedding": "user_emb",
    "row_id": "meta.row_id",
}


def write_schema(folder: str) -> str:
    path = os.path.join(folder, "segdense.json")
    with open(path, "w") as stream:
        json.dump({"schema": SCHEMA}, stream)
    return path


def make_config(schema_path: str, inputs: Optional[str] = None, **fields: Any) -> RecapDataConfig:
    values: dict[str, Any] = {
        "global_batch_size": 4,
        "seg_dense_schema": {"schema_path": schema_path, "renamed_features": RENAMES},
        "tasks": {task: {} for task in TASKS},
        "examples_shuffle_buffer_size": 0,
    }
    if inputs is not None:
        values["inputs"] = inputs
    values.update(fields)
    return RecapDataConfig.model_validate(values)


def row_columns(row_ids: np.ndarray) -> dict[str, object]:
    """Columns keyed by segdense name; every value is derived from the row id, so rows can be recognised."""
    ids = row_ids.astype(np.int64)
    lengths = ids % 3
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return {
        "cont_vals": (ids[:, None] * 10 + np.arange(6)).astype(np.float32),
        "bin_vals": ((ids[:, None] + np.arange(4)) % 2).astype(np.int64),
        "disc_vals": ids[:, None] + np.arange(3) * 1000,
        "user_emb": np.stack([ids, -ids], axis=1).astype(np.float32),
        "meta.row_id": ids,
        "ids.varlen": JaggedColumn(np.repeat(ids, lengths), offsets),
        "task.a": ids % 2,
        "task.b": (ids % 3 == 0).astype(np.int64),
        "unused.text": np.array([b"r%d" % i for i in ids], dtype=object),
    }


def write_rows(path: str, schema_path: str, row_ids: np.ndarray, rows_per_row_group: int = 1000) -> str:
    features = list(load_segdense_schema(schema_path).values())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with SegDenseParquetWriter(path, features) as writer:
        for start in range(0, len(row_ids), rows_per_row_group):
            writer.write(row_columns(row_ids[start: start + rows_per_row_group]))
    return path


def write_files(folder: str, schema_path: str, rows_per_file: list[int], rows_per_row_group: int = 1000) -> list[str]:
    """Files part-i.parquet with consecutive row ids across files."""
    paths, start = [], 0
    for index, rows in enumerate(rows_per_file):
        path = os.path.join(folder, f"part-{index}.parquet")
        write_rows(path, schema_path, np.arange(start, start + rows), rows_per_row_group)
        paths.append(path)
        start += rows
    return paths
