"""Writing prepared rows as the Heavy Ranker's Parquet files: width checks, splits, part files.

Shared by the converters (`from_table`, `scripts/prepare_movielens.py`): columns are numpy arrays
keyed by segdense feature name, one row per example.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
from tml.projects.home.recap.data.segdense import SegDenseFeature

ROWS_PER_ROW_GROUP = 8192
PART_PATTERN = "part-*.parquet"


def check_widths(columns: Mapping[str, np.ndarray], schema: Mapping[str, SegDenseFeature], hint: str = "") -> None:
    """Every schema feature has a column with `length` values per row (1 for a [N] column)."""
    for name, feature in schema.items():
        if name not in columns:
            raise ValueError(f"no column for schema feature '{name}'{hint}")
        width = 1 if columns[name].ndim == 1 else columns[name].shape[1]
        if width != feature.length:
            raise ValueError(f"'{name}' has {width} values per row but the schema says {feature.length}{hint}")


def split_rows(num_rows: int, validation_fraction: float, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): the last `validation_fraction` of `order` (default: row order)
    validates. Give a random permutation for a random split, a sort for a split by time."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    order = np.arange(num_rows) if order is None else order
    num_train = int(round(num_rows * (1.0 - validation_fraction)))
    if not 0 < num_train < num_rows:
        raise ValueError(f"validation_fraction {validation_fraction} of {num_rows} rows leaves no training or no validation rows")
    return order[:num_train], order[num_train:]


def split_count(num_files: int, num_rows: int) -> int:
    """Files a split of `num_rows` rows is written as: `num_files`, but no empty ones."""
    return max(1, min(num_files, num_rows))


def part_file_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_split(
    folder: str,
    columns: Mapping[str, np.ndarray],
    rows: np.ndarray,
    num_files: int,
    schema: Mapping[str, SegDenseFeature],
    remove_stale: bool = True,
) -> list[str]:
    """`rows` of `columns`, in that order, as `num_files` files folder/part-00000.parquet, ...

    With `remove_stale`, part files left in `folder` by an earlier run (more files than now) are
    removed, so the folder's glob reads exactly this split; nothing else in it is touched. (Callers
    that claim the folder with `claim_output_dir` pass False: the claim already cleared it.)"""
    os.makedirs(folder, exist_ok=True)
    if remove_stale:
        for stale in Path(folder).glob(PART_PATTERN):
            stale.unlink()
    paths = []
    for index, file_rows in enumerate(np.array_split(rows, split_count(num_files, len(rows)))):
        path = os.path.join(folder, part_file_name(index))
        with SegDenseParquetWriter(path, list(schema.values())) as writer:
            for start in range(0, len(file_rows), ROWS_PER_ROW_GROUP):
                picked = file_rows[start: start + ROWS_PER_ROW_GROUP]
                writer.write({name: columns[name][picked] for name in schema})
        paths.append(path)
    return paths
