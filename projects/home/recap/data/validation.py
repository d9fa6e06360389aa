"""Checks of the rows a recap dataset reads, before anything is trained on them.

Labels must be 0 or 1 (or probabilities in [0, 1] with `soft_labels`): a null label would silently
train as 0, a 7 or -3 as a strong positive or negative, a string would be parsed as a number. Sparse
ids must be row indices of their table: FBGEMM clamps an id out of range to row 0 and training goes
on. A bad row fails with the file, column, row and value; with `ignore_data_errors` it is dropped
and counted (`DataStats.dropped_rows`) instead, with one warning per file.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tml.core.errors import DataError
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.data.arrow_columns import Column, ColumnError, JaggedColumn

ArrowData = Union[pa.RecordBatch, pa.Table]


class BadRowError(ColumnError, DataError):
    """A row whose label or sparse id cannot be trained on; the message names file, column, row, value."""


def _label_values(column: Union[pa.ChunkedArray, pa.Array], name: str, source: str, soft: bool) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64, null mask) of a label column stored as numbers or lists of one number."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        if (lengths > 1).any():
            row = int(np.flatnonzero(lengths > 1)[0])
            raise BadRowError(f"{source}: label column '{name}' has {int(lengths[row])} values at row {row}; expected one")
        present = ~nulls & (lengths == 1)
        flat = array.flatten()  # the values of the non-empty lists, in order (maybe null)
        if flat.null_count:
            present[np.flatnonzero(present)[flat.is_null().to_numpy(zero_copy_only=False)]] = False
    else:
        present, flat = ~nulls, array
    if not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type) or pa.types.is_boolean(flat.type)):
        raise BadRowError(
            f"{source}: label column '{name}' has type {array.type}; labels must be numbers "
            f"(0/1{', or probabilities in [0, 1]' if soft else ''})"
        )
    flat = flat.drop_null() if flat.null_count else flat
    values = np.zeros(len(array), dtype=np.float64)
    values[present] = flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values, ~present


def _label_problems(column: Union[pa.ChunkedArray, pa.Array], name: str, source: str, soft: bool) -> tuple[np.ndarray, list[str]]:
    """(bad-row mask, a description of the first bad row with a `{row}` placeholder)."""
    values, missing = _label_values(column, name, source, soft)
    in_range = (values >= 0) & (values <= 1) if soft else (values == 0) | (values == 1)
    bad = missing | ~in_range
    rows = np.flatnonzero(bad)
    what = "probabilities in [0, 1] (soft_labels)" if soft else "0 or 1 (soft_labels: true allows [0, 1])"
    descriptions = [
        f"label column '{name}' is null at row {{row}} (a missing label would train as 0)" if missing[r]
        else f"label column '{name}' has value {values[r]:g} at row {{row}}; labels must be {what}"
        for r in rows[:1]
    ]
    return bad, descriptions


def _ids(column: Column) -> tuple[np.ndarray, np.ndarray]:
    """(ids, row of each id) of a sparse id column."""
    if isinstance(column, JaggedColumn):
        start, stop = int(column.offsets[0]), int(column.offsets[-1])
        return column.values[start:stop], np.repeat(np.arange(len(column)), column.lengths)
    array = np.asarray(column)
    if array.ndim == 1:
        return array, np.arange(len(array))
    return array.reshape(-1), np.repeat(np.arange(array.shape[0]), array.shape[1])


def _take(column: Column, rows: np.ndarray) -> Column:
    return column.take(rows) if isinstance(column, JaggedColumn) else np.asarray(column)[rows]


@dataclasses.dataclass
class RowChecks:
    """What to check in each chunk read: label columns (by file column name) and id table sizes
    (by feature name as the batch knows it)."""

    label_columns: Sequence[str]
    table_sizes: Mapping[str, int]
    soft_labels: bool = False
    ignore_data_errors: bool = False
    on_drop: Optional[Callable[[int], None]] = None  # told how many rows were dropped

    def bad_rows(self, data: ArrowData, columns: Mapping[str, Column], source: str, first_row: int) -> Optional[np.ndarray]:
        """Mask of rows to drop (None when all are good); raises BadRowError on the first bad row
        unless `ignore_data_errors`."""
        bad = np.zeros(data.num_rows, dtype=bool)
        first: list[tuple[int, str]] = []
        for name in self.label_columns:
            label_bad, descriptions = _label_problems(data.column(name), name, source, self.soft_labels)
            if label_bad.any():
                first.append((int(np.flatnonzero(label_bad)[0]), descriptions[0]))
                bad |= label_bad
        for name, size in self.table_sizes.items():
            if name not in columns:
                continue
            ids, rows = _ids(columns[name])
            out = (ids < 0) | (ids >= size)
            if out.any():
                position = int(np.flatnonzero(out)[0])
                first.append((int(rows[position]), f"sparse feature '{name}' has id {int(ids[position])} at row {{row}}, "
                              f"outside its table of {size} rows (valid ids 0..{size - 1})"))
                bad[rows[out]] = True
        if not first:
            return None
        row, description = min(first)
        located = description.format(row=first_row + row)
        if not self.ignore_data_errors:
            raise BadRowError(
                f"{source}: {located} ({int(bad.sum())} bad row(s) in this chunk). "
                f"Fix the data, or set ignore_data_errors: true to drop and count such rows."
            )
        logging.warning(f"{source}: dropping {int(bad.sum())} row(s) (ignore_data_errors); first: {located}", rank=-1)
        if self.on_drop is not None:
            self.on_drop(int(bad.sum()))
        return bad

    @staticmethod
    def drop(columns: Mapping[str, Column], bad: np.ndarray) -> dict[str, Column]:
        keep = np.flatnonzero(~bad)
        return {name: _take(column, keep) for name, column in columns.items()}
