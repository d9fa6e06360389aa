"""numpy columns to Parquet files in the segdense layout (see parquet_schema.py)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.common.filesystem import util as fs_util
from tml.projects.home.recap.data.arrow_columns import JaggedColumn
from tml.projects.home.recap.data.parquet_schema import arrow_schema, arrow_type
from tml.projects.home.recap.data.segdense import VARIABLE_LENGTH, SegDenseFeature


def to_arrow(feature: SegDenseFeature, value: object) -> pa.Array:
    value_type = arrow_type(SegDenseFeature(feature.name, feature.dtype, 1))
    if feature.length == VARIABLE_LENGTH:
        if not isinstance(value, JaggedColumn):
            raise TypeError(f"variable-length feature '{feature.name}' needs a JaggedColumn")
        flat = pa.array(value.values, type=value_type)
        return pa.ListArray.from_arrays(pa.array(value.offsets.astype(np.int32)), flat)
    array = np.asarray(value)
    expected = (len(array),) if feature.length == 1 else (len(array), feature.length)
    if array.shape != expected:
        raise ValueError(f"feature '{feature.name}' has shape {array.shape}; expected {expected}")
    flat = pa.array(array.reshape(-1), type=value_type)
    return flat if feature.length == 1 else pa.FixedSizeListArray.from_arrays(flat, feature.length)


def to_table(features: Sequence[SegDenseFeature], columns: Mapping[str, object]) -> pa.Table:
    """A table with one column per feature, in the given order; `columns` is keyed by segdense name."""
    missing = [feature.name for feature in features if feature.name not in columns]
    if missing:
        raise KeyError(f"no values for features {missing}")
    return pa.Table.from_arrays([to_arrow(f, columns[f.name]) for f in features], schema=arrow_schema(features))


class SegDenseParquetWriter:
    """Appends row groups to one Parquet file; dictionary encoding is off (dense numeric data)."""

    def __init__(self, path: str, features: Sequence[SegDenseFeature], compression: str = "snappy") -> None:
        self._features = list(features)
        self._stream = fs_util.infer_fs(path).open(path, "wb")
        self._writer = pq.ParquetWriter(
            self._stream, arrow_schema(self._features), compression=compression, use_dictionary=False,
            write_page_checksum=True,  # readers verify them: a flipped byte fails instead of training on it
        )
        self.rows = 0

    def write(self, columns: Mapping[str, object]) -> None:
        table = to_table(self._features, columns)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._stream.close()

    def __enter__(self) -> "SegDenseParquetWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
