"""Arrow columns to numpy arrays shaped by the segdense schema, zero-copy where Arrow allows.

A fixed-length feature of length n becomes [rows, n] (a view of Arrow's buffer when the column has
no nulls and already has the schema's value type); a length-1 feature becomes [rows]; a
variable-length feature becomes a `JaggedColumn`. Missing values take the tf.Example defaults
(0, 0.0, b""), as the original's FixedLenFeature parsing did.
"""
from __future__ import annotations

import dataclasses
from typing import Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tml.projects.home.recap.data.parquet_schema import arrow_type
from tml.projects.home.recap.data.segdense import VARIABLE_LENGTH, SegDenseFeature


@dataclasses.dataclass
class JaggedColumn:
    """Rows of variable length: row i is values[offsets[i]:offsets[i + 1]]."""

    values: np.ndarray
    offsets: np.ndarray  # int64, rows + 1 entries

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> "JaggedColumn":
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_offsets[1:])
        # Position j of the output reads starts[row of j] + (j - new_offsets[row of j]).
        positions = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
        return JaggedColumn(self.values[positions], new_offsets)

    @staticmethod
    def concatenate(parts: list["JaggedColumn"]) -> "JaggedColumn":
        offsets = [np.zeros(1, dtype=np.int64)]
        total = 0
        for part in parts:
            offsets.append(part.offsets[1:] - part.offsets[0] + total)
            total += int(part.offsets[-1] - part.offsets[0])
        values = [part.values[part.offsets[0]: part.offsets[-1]] for part in parts]
        return JaggedColumn(np.concatenate(values), np.concatenate(offsets))


Column = Union[np.ndarray, JaggedColumn]


class ColumnError(ValueError):
    """A column that does not match the segdense schema; the message names file, column and mismatch."""


def _default(feature: SegDenseFeature) -> object:
    return b"" if feature.dtype == "bytes_list" else 0


def _values_to_numpy(values: pa.Array, feature: SegDenseFeature, where: str) -> np.ndarray:
    value_type = arrow_type(SegDenseFeature(feature.name, feature.dtype, 1))
    if values.type != value_type:
        try:
            values = pc.cast(values, value_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ColumnError(f"{where}: values of type {values.type} cannot be read as {value_type}: {error}") from None
    if values.null_count:
        values = values.fill_null(_default(feature))
    if feature.dtype == "bytes_list":
        return np.asarray(values.to_pylist(), dtype=object)
    return values.to_numpy(zero_copy_only=False)


def _list_lengths(array: pa.Array) -> np.ndarray:
    return pc.list_value_length(array).to_numpy(zero_copy_only=False)


def _fixed_length(array: pa.Array, feature: SegDenseFeature, where: str) -> np.ndarray:
    n = feature.length
    rows = len(array)
    if pa.types.is_fixed_size_list(array.type):
        if array.type.list_size != n:
            raise ColumnError(f"{where}: lists have length {array.type.list_size}; expected length {n}")
        values = array.values.slice(array.offset * n, rows * n)  # includes the slots of null rows
        null_rows = array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None
    elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        if array.null_count:
            raise ColumnError(f"{where}: {array.null_count} rows are null; expected lists of length {n}")
        lengths = _list_lengths(array)
        wrong = np.flatnonzero(lengths != n)
        if len(wrong):
            raise ColumnError(
                f"{where}: row {int(wrong[0])} has a list of length {int(lengths[wrong[0]])}; expected length {n}"
            )
        values, null_rows = array.flatten(), None
    elif n == 1:
        values, null_rows = array, None
    else:
        raise ColumnError(f"{where}: type {array.type} is not a list; expected lists of length {n}")
    matrix = _values_to_numpy(values, feature, where)
    matrix = matrix.reshape(rows) if n == 1 else matrix.reshape(rows, n)
    if null_rows is not None and null_rows.any():
        matrix = matrix.copy()
        matrix[null_rows] = _default(feature)
    return matrix


def _variable_length(array: pa.Array, feature: SegDenseFeature, where: str) -> JaggedColumn:
    if pa.types.is_fixed_size_list(array.type):
        array = array.cast(pa.list_(array.type.value_type))
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise ColumnError(f"{where}: type {array.type} is not a list; expected variable-length lists")
    if array.null_count:
        array = array.fill_null(pa.scalar([], array.type))
    lengths = _list_lengths(array).astype(np.int64)
    offsets = np.zeros(len(array) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return JaggedColumn(_values_to_numpy(array.flatten(), feature, where), offsets)


def column_to_numpy(column: Union[pa.ChunkedArray, pa.Array], feature: SegDenseFeature, source: str) -> Column:
    """`column` as numpy, checked against `feature`; errors name `source`, the column and the mismatch."""
    where = f"column '{feature.name}' in {source}"
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    convert = _variable_length if feature.length == VARIABLE_LENGTH else _fixed_length
    parts = [convert(chunk, feature, where) for chunk in chunks]
    if not parts:
        if feature.length == VARIABLE_LENGTH:
            return JaggedColumn(np.zeros(0, dtype=feature.numpy_dtype), np.zeros(1, dtype=np.int64))
        shape = (0,) if feature.length == 1 else (0, feature.length)
        return np.zeros(shape, dtype=feature.numpy_dtype)
    if len(parts) == 1:
        return parts[0]
    if feature.length == VARIABLE_LENGTH:
        return JaggedColumn.concatenate(parts)  # type: ignore[arg-type]
    return np.concatenate(parts)
